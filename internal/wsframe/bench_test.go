package wsframe

import (
	"bytes"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{{"16B", 16}, {"1KiB", 1024}, {"64KiB", 64 << 10}}

func BenchmarkDecode(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			frame := masked(true, 0, OpText, bytes.Repeat([]byte("a"), sz.n))
			buf := make([]byte, len(frame))
			var d Decoder
			b.ReportAllocs()
			b.SetBytes(int64(sz.n))
			for b.Loop() {
				copy(buf, frame)
				_, _, ok, err := d.Decode(buf, lim)
				if !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			payload := bytes.Repeat([]byte("a"), sz.n)
			dst := make([]byte, 0, sz.n+MaxHeaderLen)
			b.ReportAllocs()
			b.SetBytes(int64(sz.n))
			for b.Loop() {
				dst = AppendFrame(dst[:0], OpText, 0, payload)
			}
		})
	}
}

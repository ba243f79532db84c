package wsframe

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzDecoder feeds arbitrary bytes whole and in pieces: the decoder must
// never panic, must fail only with a *CloseError, and must reach the same
// messages and verdict however the stream is cut.
func FuzzDecoder(f *testing.F) {
	f.Add(masked(true, 0, OpText, []byte("hello")), uint8(1))
	f.Add(cat(masked(false, 0, OpText, []byte{0xe2}), masked(true, 0, OpPing, nil), masked(true, 0, OpContinuation, []byte{0x82, 0xac})), uint8(2))
	f.Add(masked(true, 0, OpClose, []byte{0x03, 0xe8}), uint8(3))
	f.Add(masked(true, Rsv1, OpBinary, Deflate(nil, []byte("zip"))), uint8(5))
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, uint8(4))
	f.Add(cat(masked(false, 0, OpBinary, []byte("x")), hugeContinuation(), make([]byte, 8192)), uint8(6))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		lim := &Limits{MaxMessage: 4096, Deflate: step&1 == 1}
		whole := decodeAll(t, in, lim, 0)
		split := decodeAll(t, in, lim, int(step%16)+1)
		if whole.code != split.code || len(whole.msgs) != len(split.msgs) {
			t.Fatalf("whole: code %d %d msgs; split: code %d %d msgs", whole.code, len(whole.msgs), split.code, len(split.msgs))
		}
		for i := range whole.msgs {
			a, b := whole.msgs[i], split.msgs[i]
			if a.Op != b.Op || !bytes.Equal(a.Payload, b.Payload) {
				t.Fatalf("message %d differs", i)
			}
			if a.Op == OpText && !a.Compressed && !utf8.Valid(a.Payload) {
				t.Fatalf("invalid UTF-8 text passed")
			}
			if a.Compressed {
				_, _ = Inflate(nil, a.Payload, lim.MaxMessage)
			}
		}
	})
}

// FuzzUTF8 checks the streaming automaton against the standard library on
// every cut of the input.
func FuzzUTF8(f *testing.F) {
	f.Add([]byte("κόσμε"), uint8(3))
	f.Add([]byte("\xed\xa0\x80"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, cut uint8) {
		at := int(cut) % (len(in) + 1)
		s, ok := UTF8State(0).Valid(in[:at])
		if ok {
			s, ok = s.Valid(in[at:])
		}
		if got, want := ok && s.Complete(), utf8.Valid(in); got != want {
			t.Fatalf("%q cut at %d: %v, stdlib %v", in, at, got, want)
		}
	})
}

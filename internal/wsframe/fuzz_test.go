package wsframe

import (
	"bytes"
	"compress/flate"
	"io"
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

// FuzzInflate feeds arbitrary payloads, as a client's compressed messages
// are, to Inflate with a pooled reader and a bounded buffer: it must never
// return more than the cap, must keep what dst held, and must agree with
// compress/flate reading the same stream at once.
func FuzzInflate(f *testing.F) {
	f.Add(Deflate(nil, []byte("hello hello hello")), uint16(64))
	f.Add(Deflate(nil, make([]byte, 5000)), uint16(4096))
	f.Add(Deflate(nil, []byte("exactly")), uint16(7))
	f.Add([]byte{0x00, 0x00, 0xff, 0xff}, uint16(0))
	f.Add([]byte{0x03, 0x00}, uint16(1)) // a final empty block
	f.Add([]byte{0xff, 0xff, 0xff}, uint16(16))
	f.Fuzz(func(t *testing.T, payload []byte, maxLen uint16) {
		lim := int64(maxLen)
		kept := []byte("kept")
		out, err := Inflate(bytes.Clone(kept), payload, lim)
		if !bytes.HasPrefix(out, kept) {
			t.Fatalf("dst's bytes lost: %q", out)
		}
		got := out[len(kept):]
		if int64(len(got)) > lim {
			t.Fatalf("%d bytes out, over the cap of %d", len(got), lim)
		}
		if len(payload) == 0 {
			// Not DEFLATE (an empty message compresses to 0x00), but
			// taken as an empty message, which is what its sender meant.
			if err != nil || len(got) != 0 {
				t.Fatalf("empty payload: %q, %v", got, err)
			}
			return
		}
		src := io.MultiReader(bytes.NewReader(payload), bytes.NewReader(inflateTail))
		want, wantErr := io.ReadAll(io.LimitReader(flate.NewReader(src), lim+1))
		switch {
		case err == nil:
			if wantErr != nil || !bytes.Equal(got, want) {
				t.Fatalf("Inflate %q; flate %q, %v", got, want, wantErr)
			}
		case err == ErrInflatedTooBig:
			if len(got) != 0 || int64(len(want)) <= lim {
				t.Fatalf("too big at %d bytes out; flate made %d, %v", len(got), len(want), wantErr)
			}
		case err == ErrInflate:
			if len(got) != 0 || wantErr == nil {
				t.Fatalf("corrupt with %d bytes out; flate made %d without error", len(got), len(want))
			}
		default:
			t.Fatalf("error %v is not one of Inflate's", err)
		}
	})
}

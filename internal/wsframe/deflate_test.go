package wsframe

import (
	"bytes"
	"errors"
	"testing"
)

func TestDeflateRoundTrip(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte("den rooms "), 10000)} {
		c := Deflate(nil, in)
		out, err := Inflate(nil, c, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip changed %d bytes into %d", len(in), len(out))
		}
	}
}

func TestInflateCapsOutput(t *testing.T) {
	bomb := Deflate(nil, make([]byte, 10<<20))
	_, err := Inflate(nil, bomb, 1<<20)
	if !errors.Is(err, ErrInflatedTooBig) {
		t.Fatalf("err = %v, want ErrInflatedTooBig", err)
	}
	// Exactly at the cap is fine.
	out, err := Inflate(nil, Deflate(nil, make([]byte, 1000)), 1000)
	if err != nil || len(out) != 1000 {
		t.Fatalf("at cap: len %d err %v", len(out), err)
	}
}

func TestInflateCorrupt(t *testing.T) {
	_, err := Inflate(nil, []byte{0xff, 0xff, 0xff, 0xff, 0xff}, 1<<20)
	if !errors.Is(err, ErrInflate) {
		t.Fatalf("err = %v, want ErrInflate", err)
	}
}

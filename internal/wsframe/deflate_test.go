package wsframe

import (
	"bytes"
	"compress/flate"
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

func TestInflateEmpty(t *testing.T) {
	for _, p := range [][]byte{nil, Deflate(nil, nil)} {
		if out, err := Inflate(nil, p, 10); err != nil || len(out) != 0 {
			t.Fatalf("empty message %x: %q %v", p, out, err)
		}
	}
}

func TestInflateCorrupt(t *testing.T) {
	_, err := Inflate(nil, []byte{0xff, 0xff, 0xff, 0xff, 0xff}, 1<<20)
	if !errors.Is(err, ErrInflate) {
		t.Fatalf("err = %v, want ErrInflate", err)
	}
}

// TestInflateTruncated: a message cut short is corrupt (1007), not a
// shorter message.
func TestInflateTruncated(t *testing.T) {
	full := Deflate(nil, bytes.Repeat([]byte("hello world "), 200))
	if _, err := Inflate(nil, full[:len(full)/2], 1<<20); !errors.Is(err, ErrInflate) {
		t.Fatalf("half a message: err %v, want ErrInflate", err)
	}
	// A stored block that claims 100 bytes and carries 5.
	stored := []byte{0x00, 100, 0, ^byte(100), 0xff, 'a', 'b', 'c', 'd', 'e'}
	if _, err := Inflate(nil, stored, 1<<20); !errors.Is(err, ErrInflate) {
		t.Fatalf("short stored block: err %v, want ErrInflate", err)
	}
	// A message whose sender ended it with a final block of its own is
	// whole.
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestSpeed)
	w.Write([]byte("final"))
	w.Close()
	if out, err := Inflate(nil, b.Bytes(), 1<<20); err != nil || string(out) != "final" {
		t.Fatalf("final-block message: %q %v", out, err)
	}
}

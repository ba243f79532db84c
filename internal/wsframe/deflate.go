package wsframe

import (
	"bytes"
	"compress/flate"
	"io"
	"slices"
	"sync"
)

// deflateTail is what a sender strips from each compressed message and a
// receiver appends before inflating (RFC 7692 section 7.2.1).
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff}

// inflateTail is deflateTail followed by an empty final stored block. A
// sync-flushed stream gives Go's flate no end of its own, so a whole
// message and a truncated one would both end in io.ErrUnexpectedEOF; with
// a final block behind the tail, only a whole message reaches io.EOF.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// Errors from Inflate.
var (
	ErrInflatedTooBig = &CloseError{CloseMessageTooBig, "inflated message too big"}
	ErrInflate        = &CloseError{CloseInvalidPayload, "corrupt compressed message"}
)

// inflater is a pooled flate reader over payload + deflateTail.
type inflater struct {
	src tailReader
	fr  io.ReadCloser
}

type tailReader struct {
	p    []byte
	tail []byte
}

func (t *tailReader) Read(b []byte) (int, error) {
	if len(t.p) > 0 {
		n := copy(b, t.p)
		t.p = t.p[n:]
		return n, nil
	}
	if len(t.tail) > 0 {
		n := copy(b, t.tail)
		t.tail = t.tail[n:]
		return n, nil
	}
	return 0, io.EOF
}

// ReadByte lets flate read straight from the input instead of wrapping it
// in a bufio.Reader of its own.
func (t *tailReader) ReadByte() (byte, error) {
	var b [1]byte
	if _, err := t.Read(b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

// Inflate appends the decompressed form of a permessage-deflate payload to
// dst. It stops with ErrInflatedTooBig as soon as the output would pass
// maxLen bytes, so a small bomb costs no more than maxLen. Messages are inflated
// without context takeover: no state outlives the call.
func Inflate(dst, payload []byte, maxLen int64) ([]byte, error) {
	if len(payload) == 0 {
		return dst, nil // an empty message sent with RSV1: nothing to inflate
	}
	f := inflaters.Get().(*inflater)
	defer inflaters.Put(f)
	f.src = tailReader{p: payload, tail: inflateTail}
	if f.fr == nil {
		f.fr = flate.NewReader(&f.src)
	} else if err := f.fr.(flate.Resetter).Reset(&f.src, nil); err != nil {
		return dst, ErrInflate
	}
	start := len(dst)
	for {
		// Never grow past maxLen+1 bytes of output: one byte over is proof.
		limit := maxLen + 1 - int64(len(dst)-start)
		if cap(dst) == len(dst) {
			dst = slices.Grow(dst, int(min(limit, int64(max(len(dst)-start, 512)))))
		}
		room := dst[len(dst):cap(dst)]
		if int64(len(room)) > limit {
			room = room[:limit]
		}
		n, err := f.fr.Read(room)
		dst = dst[:len(dst)+n]
		if int64(len(dst)-start) > maxLen {
			return dst[:start], ErrInflatedTooBig
		}
		switch {
		case err == nil:
		case err == io.EOF:
			return dst, nil
		default:
			// Corrupt, or truncated: the stream ended inside a block.
			return dst[:start], ErrInflate
		}
	}
}

type deflater struct {
	buf bytes.Buffer
	fw  *flate.Writer
}

var deflaters = sync.Pool{New: func() any {
	d := new(deflater)
	d.fw, _ = flate.NewWriter(&d.buf, flate.BestSpeed)
	return d
}}

// Deflate appends the permessage-deflate payload for p to dst: DEFLATE
// data sync-flushed with the tail stripped, compressed without context
// takeover so every message stands alone and one compressed frame serves
// every recipient.
func Deflate(dst, p []byte) []byte {
	d := deflaters.Get().(*deflater)
	defer deflaters.Put(d)
	d.buf.Reset()
	d.fw.Reset(&d.buf)
	_, _ = d.fw.Write(p)
	_ = d.fw.Flush()
	out := d.buf.Bytes()
	out = bytes.TrimSuffix(out, deflateTail)
	return append(dst, out...)
}

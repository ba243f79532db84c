package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
)

func TestParseHead(t *testing.T) {
	type want struct {
		method, target, host string
		minor                int
		length               int64
		keepAlive, upgrade   bool
	}
	cases := []struct {
		in      string
		want    *want
		err     error
		partial bool
	}{
		{in: "GET /a?b=c HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
			want: &want{method: "GET", target: "/a?b=c", minor: 1, host: "x", length: -1, keepAlive: true, upgrade: true}},
		{in: "\r\nPOST / HTTP/1.0\nContent-Length: 3\nConnection: keep-alive\n\nabc",
			want: &want{method: "POST", target: "/", minor: 0, length: 3, keepAlive: true}},
		{in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", want: &want{method: "GET", target: "/", minor: 1, host: "x", length: -1}},
		{in: "GET / HTTP/1.1\r\nHost: x\r\n", partial: true},
		{in: "GET / HTTP/1.1\r\nHost: x\r\n\r", partial: true},
		{in: "GET / HTTP/1.1\r\n\r\n", err: errNoHost},
		{in: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", err: errNoHost},
		{in: "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", err: errBadRequest},
		{in: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", err: errBadRequest},
		{in: "GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n", err: errBadRequest},
		{in: "GET / HTTP/3.0\r\nHost: x\r\n\r\n", err: errBadVersion},
		{in: "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", err: errBadLength},
		{in: "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n", err: errBadLength},
		{in: "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -0\r\n\r\n", err: errBadLength},
		{in: "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", err: errTEAndLength},
		{in: "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", err: errBadTE},
		{in: "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 300), err: errHeadTooLarge},
	}
	for _, tc := range cases {
		h, ok, err := parseHead([]byte(tc.in), 256)
		switch {
		case tc.err != nil:
			if err != tc.err {
				t.Errorf("%q: err %v, want %v", tc.in, err, tc.err)
			}
		case tc.partial:
			if ok || err != nil {
				t.Errorf("%q: ok %v %v, want incomplete", tc.in, ok, err)
			}
		default:
			if err != nil || !ok {
				t.Errorf("%q: %v", tc.in, err)
				continue
			}
			got := want{string(h.method), string(h.target), string(h.host), h.minor, h.length, h.keepAlive, h.upgrade}
			if got != *tc.want {
				t.Errorf("%q: got %+v, want %+v", tc.in, got, *tc.want)
			}
		}
	}
}

// readChunked feeds in to a chunkReader step bytes at a time (0: all at
// once), as reads arrive, and returns the body, the bytes consumed and
// whether it ended.
func readChunked(in []byte, maxBody int64, step int) (body []byte, n int, done bool, err error) {
	c := &chunkReader{maxBody: maxBody}
	for !done && err == nil && n < len(in) {
		end := len(in)
		if step > 0 {
			end = min(len(in), n+step)
		}
		var k int
		k, done, err = c.feed(in[n:end], &body)
		n += k
		if k == 0 && !done && end == len(in) {
			break
		}
	}
	return body, n, done, err
}

func TestChunkReader(t *testing.T) {
	in := "3\r\nabc\r\n1;x=y\r\nd\r\n0\r\nT: v\r\n\r\nNEXT"
	for _, step := range []int{0, 1, 2, 5} {
		body, n, done, err := readChunked([]byte(in), 100, step)
		if err != nil || !done || string(body) != "abcd" || n != len(in)-len("NEXT") {
			t.Fatalf("step %d: body %q n %d done %v err %v", step, body, n, done, err)
		}
	}
	if _, _, done, err := readChunked([]byte("3\r\nab"), 100, 0); done || err != nil {
		t.Fatalf("partial: done %v err %v", done, err)
	}
	if _, _, _, err := readChunked([]byte("zz\r\n"), 100, 0); err != errBadChunk {
		t.Fatalf("bad size: %v", err)
	}
	if _, _, _, err := readChunked([]byte("ff\r\n"), 100, 0); err != errBodyTooLarge {
		t.Fatalf("over limit: %v", err)
	}
}

// TestChunkedLimits: sizes that would overflow, framing that grows without
// data, and bare LF framing are all refused, not buffered or misread.
func TestChunkedLimits(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want error
	}{
		{"size overflowing int64", "1\r\nA\r\n7fffffffffffffff\r\n" + strings.Repeat("B", 64), errBodyTooLarge},
		{"17 hex digits", "10000000000000000\r\n", errBadChunk},
		{"bare LF after data", "1\r\nA\n0\r\n\r\n", errBadChunk},
		{"bare LF size line", "1\nA\r\n0\r\n\r\n", errBadChunk},
		{"control byte in extension", "1;a\x01\r\nA\r\n0\r\n\r\n", errBadChunk},
		{"endless trailers", "0\r\n" + strings.Repeat("X-T: v\r\n", 40000), errBodyTooLarge},
		{"endless tiny chunks", strings.Repeat("1;"+strings.Repeat("e", 900)+"\r\nA\r\n", 400), errBodyTooLarge},
	}
	for _, tc := range cases {
		if _, _, _, err := readChunked([]byte(tc.in), 64<<10, 0); err != tc.want {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
}

// FuzzParseHead checks the request parser against net/http's: whatever
// den accepts as a complete request, net/http must parse to the same
// method, target and Host; and den never panics.
func FuzzParseHead(f *testing.F) {
	f.Add([]byte("GET /rooms/echo/a HTTP/1.1\r\nHost: den\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
	f.Add([]byte("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\n\n"))
	f.Add([]byte("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: \t y \r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, ok, err := parseHead(in, 8192)
		if err != nil || !ok {
			return
		}
		if h.size() > len(in) {
			t.Fatalf("head length %d past input %d", h.size(), len(in))
		}
		if h.chunked {
			_, _, _, _ = readChunked(in[h.size():], 1<<20, 0)
		}
		hdr := h.header()
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in[:h.size()])))
		if err != nil {
			return // net/http is stricter in places (e.g. bare LF); den may accept more
		}
		if r.Method != string(h.method) || r.RequestURI != string(h.target) || (h.minor == 1 && r.Host != string(h.host)) {
			t.Fatalf("den %q %q %q, net/http %q %q %q", h.method, h.target, h.host, r.Method, r.RequestURI, r.Host)
		}
		for k, vs := range r.Header {
			if k != "Host" && len(hdr[k]) != len(vs) {
				t.Fatalf("field %s: den %q, net/http %q", k, hdr[k], vs)
			}
		}
	})
}

// FuzzParseChunked compares den's chunked decoder with net/http's, and
// checks that feeding it as bytes arrive gives what feeding them at once
// gives.
func FuzzParseChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), uint8(3))
	f.Add([]byte("3;ext\r\nabc\r\n0\r\nTrailer: x\r\n\r\n"), uint8(1))
	f.Add([]byte("A\r\n0123456789\r\n0\r\n\r\n"), uint8(7))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		body, n, done, err := readChunked(in, 1<<16, 0)
		pbody, pn, pdone, perr := readChunked(in, 1<<16, int(step%8)+1)
		if err != perr || done != pdone || (err == nil && (n != pn || !bytes.Equal(body, pbody))) {
			t.Fatalf("at once: %q %d %v %v; piecewise: %q %d %v %v", body, n, done, err, pbody, pn, pdone, perr)
		}
		if err != nil || !done {
			return
		}
		ref, rerr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(in[:n])))
		if rerr == nil && !bytes.Equal(ref, body) {
			t.Fatalf("den %q, net/http %q", body, ref)
		}
	})
}

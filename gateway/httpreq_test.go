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

func TestParseChunked(t *testing.T) {
	body, n, err := parseChunked([]byte("3\r\nabc\r\n1;x=y\r\nd\r\n0\r\nT: v\r\n\r\nNEXT"), 100, new(chunkState))
	if err != nil || string(body) != "abcd" || n != len("3\r\nabc\r\n1;x=y\r\nd\r\n0\r\nT: v\r\n\r\n") {
		t.Fatalf("body %q n %d err %v", body, n, err)
	}
	if _, n, err := parseChunked([]byte("3\r\nab"), 100, new(chunkState)); n != 0 || err != nil {
		t.Fatalf("partial: n %d err %v", n, err)
	}
	if _, _, err := parseChunked([]byte("zz\r\n"), 100, new(chunkState)); err != errBadChunk {
		t.Fatalf("bad size: %v", err)
	}
	if _, _, err := parseChunked([]byte("ff\r\n"), 100, new(chunkState)); err != errBodyTooLarge {
		t.Fatalf("over limit: %v", err)
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
			_, _, _ = parseChunked(in[h.size():], 1<<20, new(chunkState))
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
// checks that parsing as the bytes arrive gives what parsing them at once
// gives.
func FuzzParseChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), uint8(3))
	f.Add([]byte("3;ext\r\nabc\r\n0\r\nTrailer: x\r\n\r\n"), uint8(1))
	f.Add([]byte("A\r\n0123456789\r\n0\r\n\r\n"), uint8(7))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		body, n, err := parseChunked(in, 1<<16, new(chunkState))
		var st chunkState
		var pbody []byte
		var pn int
		var perr error
		for end := 0; end < len(in) && pn == 0 && perr == nil; {
			end = min(len(in), end+int(step%8)+1)
			pbody, pn, perr = parseChunked(in[:end], 1<<16, &st)
		}
		if (err == nil) != (perr == nil) || n != pn || !bytes.Equal(body, pbody) {
			t.Fatalf("at once: %q %d %v; piecewise: %q %d %v", body, n, err, pbody, pn, perr)
		}
		if err != nil || n == 0 {
			return
		}
		if n > len(in) {
			t.Fatalf("consumed %d of %d", n, len(in))
		}
		ref, rerr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(in[:n])))
		if rerr == nil && !bytes.Equal(ref, body) {
			t.Fatalf("den %q, net/http %q", body, ref)
		}
	})
}

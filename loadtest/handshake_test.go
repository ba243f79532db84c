package loadtest

import (
	"strings"
	"testing"
)

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

func response(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n\r\n")
}

func TestParseResponse(t *testing.T) {
	accept := acceptFor(testKey)
	if accept != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("acceptFor(RFC 6455 sample) = %q", accept)
	}
	good := response("HTTP/1.1 101 Switching Protocols", "Upgrade: WebSocket", "Connection: keep-alive, Upgrade",
		"Sec-WebSocket-Accept: "+accept)
	cases := []struct {
		name  string
		in    []byte
		proto string
		n     int
		kind  string // "" for no error
	}{
		{"101", good, "", len(good), ""},
		{"101 then a frame", append(append([]byte{}, good...), 0x81, 0x00), "", len(good), ""},
		{"incomplete", good[:len(good)-1], "", 0, ""},
		{"503", response("HTTP/1.1 503 Service Unavailable", "Retry-After: 1"), "", 0, "http_503"},
		{"403", response("HTTP/1.0 403 Forbidden"), "", 0, "http_403"},
		{"wrong accept", response("HTTP/1.1 101 OK", "Upgrade: websocket", "Connection: upgrade", "Sec-WebSocket-Accept: xyz"), "", 0, kindBadHandshake},
		{"no upgrade", response("HTTP/1.1 101 OK", "Connection: upgrade", "Sec-WebSocket-Accept: "+accept), "", 0, kindBadHandshake},
		{"no connection", response("HTTP/1.1 101 OK", "Upgrade: websocket", "Sec-WebSocket-Accept: "+accept), "", 0, kindBadHandshake},
		{"subprotocol not offered", response("HTTP/1.1 101 OK", "Upgrade: websocket", "Connection: upgrade",
			"Sec-WebSocket-Accept: "+accept, "Sec-WebSocket-Protocol: v3"), "v2", 0, kindBadHandshake},
		{"subprotocol chosen", response("HTTP/1.1 101 OK", "Upgrade: websocket", "Connection: upgrade",
			"Sec-WebSocket-Accept: "+accept, "Sec-WebSocket-Protocol: v2"), "v2", -1, ""},
		{"extension not offered", response("HTTP/1.1 101 OK", "Upgrade: websocket", "Connection: upgrade",
			"Sec-WebSocket-Accept: "+accept, "Sec-WebSocket-Extensions: permessage-deflate"), "", 0, kindBadHandshake},
		{"not HTTP", []byte("SSH-2.0-OpenSSH\r\n"), "", 0, kindBadHandshake},
		{"bad status", response("HTTP/1.1 1x1 OK"), "", 0, kindBadHandshake},
		{"header without colon", response("HTTP/1.1 101 OK", "Upgrade websocket"), "", 0, kindBadHandshake},
		{"endless head", []byte("HTTP/1.1 101 OK\r\n" + strings.Repeat("X-A: b\r\n", maxResponseHead/8+1)), "", 0, kindBadHandshake},
	}
	for _, tc := range cases {
		n, err := parseResponse(tc.in, accept, tc.proto)
		kind := ""
		if he, ok := err.(*handshakeError); ok {
			kind = he.kind()
		} else if err != nil {
			t.Fatalf("%s: error %T %v is not a handshakeError", tc.name, err, err)
		}
		want := tc.n
		if want < 0 {
			want = len(tc.in)
		}
		if n != want || kind != tc.kind {
			t.Errorf("%s: n %d kind %q, want %d %q (err %v)", tc.name, n, kind, want, tc.kind, err)
		}
	}
}

func TestParseStamp(t *testing.T) {
	cases := []struct {
		in       string
		ts, from int64
		ok       bool
	}{
		{"den:123:7:xxxx", 123, 7, true},
		{`{"text":"den:5:0:"}`, 5, 0, true},
		{"den:123:7", 0, 0, false},
		{"den::7:", 0, 0, false},
		{"den:1x:7:", 0, 0, false},
		{"ping", 0, 0, false},
		{"den:99999999999999999999:1:", 0, 0, false},
	}
	for _, tc := range cases {
		ts, from, ok := parseStamp([]byte(tc.in))
		if ts != tc.ts || from != tc.from || ok != tc.ok {
			t.Errorf("%q: %d %d %v, want %d %d %v", tc.in, ts, from, ok, tc.ts, tc.from, tc.ok)
		}
	}
}

// FuzzParseResponse feeds servers' handshake answers and messages to the
// parsers that read them: neither may panic, and a head that parses must
// end inside the input.
func FuzzParseResponse(f *testing.F) {
	accept := acceptFor(testKey)
	f.Add(response("HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Accept: "+accept))
	f.Add(response("HTTP/1.1 503 Service Unavailable"))
	f.Add([]byte("HTTP/1.1 101\r\n:\r\n\r\n"))
	f.Add([]byte("den:1:2:x"))
	f.Fuzz(func(t *testing.T, p []byte) {
		n, err := parseResponse(p, accept, "v2")
		if n < 0 || n > len(p) || err != nil && n != 0 {
			t.Fatalf("n %d err %v for %d bytes", n, err, len(p))
		}
		parseStamp(p)
	})
}

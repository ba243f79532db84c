package loadtest

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
)

// maxResponseHead bounds a handshake response's head; a server that sends
// more is broken, and the connection fails as bad_handshake.
const maxResponseHead = 16 << 10

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptFor is the Sec-WebSocket-Accept a server must answer to key.
func acceptFor(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// requestHead holds the parts of a handshake request that do not change
// from one connection to the next.
type requestHead struct {
	tail []byte // header lines after the key, through the blank line
}

func newRequestHead(headers map[string]string, subprotocol string) requestHead {
	var b []byte
	b = append(b, "Sec-WebSocket-Version: 13\r\n"...)
	if subprotocol != "" {
		b = append(b, "Sec-WebSocket-Protocol: "...)
		b = append(b, subprotocol...)
		b = append(b, "\r\n"...)
	}
	for k, v := range headers {
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return requestHead{tail: b}
}

// appendRequest appends a client handshake for path on host with key.
func (r *requestHead) appendRequest(dst []byte, path []byte, host, key string) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	dst = append(dst, key...)
	dst = append(dst, "\r\n"...)
	return append(dst, r.tail...)
}

// handshakeError is why a server's answer to the handshake was not a
// WebSocket: an HTTP status other than 101, or a broken 101.
type handshakeError struct {
	status int    // 0 when the head was not HTTP at all
	detail string // for a broken 101: what was wrong
}

func (e *handshakeError) Error() string {
	if e.status != 0 && e.status != 101 {
		return "HTTP " + strconv.Itoa(e.status)
	}
	return "bad handshake: " + e.detail
}

// kind is the error kind a failed handshake is counted under.
func (e *handshakeError) kind() string {
	if e.status != 0 && e.status != 101 {
		return "http_" + strconv.Itoa(e.status)
	}
	return kindBadHandshake
}

// parseResponse reads a handshake response from p. It returns the length
// of the head once the blank line has arrived, 0 while it has not, or an
// error: a non-101 status, or a 101 without the right Upgrade,
// Connection and Sec-WebSocket-Accept, or with a subprotocol that was not
// offered. Bytes after the head are frames.
func parseResponse(p []byte, accept, subprotocol string) (int, error) {
	end := bytes.Index(p, []byte("\r\n\r\n"))
	if end < 0 {
		if len(p) > maxResponseHead {
			return 0, &handshakeError{detail: "response head too long"}
		}
		if len(p) >= 5 && !bytes.HasPrefix(p, []byte("HTTP/")) {
			return 0, &handshakeError{detail: "not HTTP"}
		}
		return 0, nil
	}
	head := p[:end+2]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	status, err := statusCode(line)
	if err != nil {
		return 0, err
	}
	if status != 101 {
		return 0, &handshakeError{status: status}
	}
	var upgrade, connection, gotAccept bool
	var proto []byte
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, &handshakeError{status: 101, detail: "header line without a colon"}
		}
		value = bytes.TrimSpace(value)
		switch {
		case equalFold(name, "upgrade"):
			upgrade = equalFold(value, "websocket")
		case equalFold(name, "connection"):
			connection = hasToken(value, "upgrade")
		case equalFold(name, "sec-websocket-accept"):
			gotAccept = string(value) == accept
			if !gotAccept {
				return 0, &handshakeError{status: 101, detail: "wrong Sec-WebSocket-Accept"}
			}
		case equalFold(name, "sec-websocket-protocol"):
			proto = value
		case equalFold(name, "sec-websocket-extensions"):
			// Nothing was offered, so nothing may be accepted.
			if len(value) > 0 {
				return 0, &handshakeError{status: 101, detail: "extension not offered"}
			}
		}
	}
	switch {
	case !upgrade:
		return 0, &handshakeError{status: 101, detail: "no Upgrade: websocket"}
	case !connection:
		return 0, &handshakeError{status: 101, detail: "no Connection: upgrade"}
	case !gotAccept:
		return 0, &handshakeError{status: 101, detail: "no Sec-WebSocket-Accept"}
	case proto != nil && string(proto) != subprotocol:
		return 0, &handshakeError{status: 101, detail: "subprotocol not offered"}
	}
	return end + 4, nil
}

// statusCode parses "HTTP/1.x NNN reason".
func statusCode(line []byte) (int, error) {
	if !bytes.HasPrefix(line, []byte("HTTP/1.")) || len(line) < 12 || line[8] != ' ' {
		return 0, &handshakeError{detail: "bad status line"}
	}
	code := line[9:12]
	n := 0
	for _, b := range code {
		if b < '0' || b > '9' {
			return 0, &handshakeError{detail: "bad status code"}
		}
		n = n*10 + int(b-'0')
	}
	if n < 100 {
		return 0, &handshakeError{detail: "bad status code"}
	}
	return n, nil
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(s) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// hasToken reports whether a comma-separated header value lists tok.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if equalFold(bytes.TrimSpace(t), tok) {
			return true
		}
	}
	return false
}

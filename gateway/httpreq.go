package gateway

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// httpError is a request den answers with an error status and then closes
// the connection.
type httpError struct {
	status int
	reason string
}

func (e *httpError) Error() string { return strconv.Itoa(e.status) + " " + e.reason }

var (
	errHeadTooLarge  = &httpError{http.StatusRequestHeaderFieldsTooLarge, "request head too large"}
	errBadRequest    = &httpError{http.StatusBadRequest, "malformed request"}
	errBadVersion    = &httpError{http.StatusHTTPVersionNotSupported, "unsupported HTTP version"}
	errNoHost        = &httpError{http.StatusBadRequest, "missing or repeated Host"}
	errBadLength     = &httpError{http.StatusBadRequest, "bad Content-Length"}
	errBadTE         = &httpError{http.StatusNotImplemented, "unsupported Transfer-Encoding"}
	errTEAndLength   = &httpError{http.StatusBadRequest, "both Transfer-Encoding and Content-Length"}
	errBodyTooLarge  = &httpError{http.StatusRequestEntityTooLarge, "request body too large"}
	errBadChunk      = &httpError{http.StatusBadRequest, "malformed chunked body"}
	errTooManyFields = &httpError{http.StatusRequestHeaderFieldsTooLarge, "too many header fields"}
)

// maxHeaderFields bounds the fields of one request head.
const maxHeaderFields = 100

// requestHead is a parsed HTTP/1.x request line and header block.
type requestHead struct {
	method     string
	target     string
	minor      int // HTTP/1.minor
	header     http.Header
	host       string
	length     int64 // Content-Length, or -1
	chunked    bool
	keepAlive  bool
	upgrade    bool // Upgrade names websocket: a WebSocket handshake
	expect100  bool
	headLength int // bytes of p the head took, blank line included
}

// parseHead parses the request head at the start of p. It returns nil and
// no error while p holds only part of a head, and errHeadTooLarge once
// maxBytes pass without its end. Lines may end in CRLF or a bare LF, and
// empty lines before the request line are skipped, as RFC 9112 allows.
func parseHead(p []byte, maxBytes int) (*requestHead, error) {
	start := 0
	for start < len(p) && (p[start] == '\r' || p[start] == '\n') {
		start++
	}
	end := headEnd(p[start:])
	if end < 0 {
		if len(p) >= maxBytes {
			return nil, errHeadTooLarge
		}
		return nil, nil
	}
	if start+end > maxBytes {
		return nil, errHeadTooLarge
	}
	h := &requestHead{length: -1, headLength: start + end}
	rest := p[start : start+end]

	line, rest := nextLine(rest)
	if err := h.parseRequestLine(line); err != nil {
		return nil, err
	}
	h.header = make(http.Header, 8)
	fields := 0
	var sawLength, sawTE bool
	for {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		if fields++; fields > maxHeaderFields {
			return nil, errTooManyFields
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			// Also rejects obsolete line folding: a line starting with
			// whitespace has no token before its colon.
			return nil, errBadRequest
		}
		value := bytes.Trim(line[colon+1:], " \t")
		if !isFieldValue(value) {
			return nil, errBadRequest
		}
		key := textproto.CanonicalMIMEHeaderKey(string(line[:colon]))
		v := string(value)
		h.header[key] = append(h.header[key], v)
		switch key {
		case "Content-Length":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || v[0] == '+' || (sawLength && n != h.length) {
				return nil, errBadLength
			}
			sawLength, h.length = true, n
		case "Transfer-Encoding":
			sawTE = true
		}
	}
	if hosts := h.header["Host"]; len(hosts) == 1 {
		h.host = hosts[0]
	} else if len(hosts) > 1 || h.minor == 1 {
		return nil, errNoHost
	}
	if sawTE {
		if sawLength {
			return nil, errTEAndLength
		}
		// Only "chunked", once and alone, is understood; anything else
		// would leave the body's end unknown.
		te := strings.Join(h.header["Transfer-Encoding"], ",")
		if !strings.EqualFold(strings.TrimSpace(te), "chunked") {
			return nil, errBadTE
		}
		h.chunked = true
	}
	conn := h.header["Connection"]
	if h.minor == 1 {
		h.keepAlive = !hasToken(conn, "close")
	} else {
		h.keepAlive = hasToken(conn, "keep-alive")
	}
	h.upgrade = hasToken(h.header["Upgrade"], "websocket")
	h.expect100 = h.minor == 1 && hasToken(h.header["Expect"], "100-continue")
	return h, nil
}

func (h *requestHead) parseRequestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errBadRequest
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return errBadRequest
	}
	method, target, proto := line[:sp1], line[sp1+1:sp1+1+sp2], line[sp1+2+sp2:]
	if !isToken(method) || !isTarget(target) {
		return errBadRequest
	}
	switch string(proto) {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		if len(proto) == 8 && bytes.HasPrefix(proto, []byte("HTTP/")) && proto[6] == '.' {
			return errBadVersion
		}
		return errBadRequest
	}
	h.method, h.target = string(method), string(target)
	return nil
}

// headEnd returns the length of the head in p including its blank line, or
// -1 if the blank line has not arrived.
func headEnd(p []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(p) && p[i] == '\n':
			return i + 1
		case i+1 < len(p) && p[i] == '\r' && p[i+1] == '\n':
			return i + 2
		case i >= len(p)-1:
			return -1
		}
	}
}

func nextLine(p []byte) (line, rest []byte) {
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		return p, nil
	}
	line, rest = p[:i], p[i+1:]
	return bytes.TrimSuffix(line, []byte{'\r'}), rest
}

// isToken reports whether b is an RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tokenChars[c] {
			return false
		}
	}
	return true
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-32] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// isFieldValue rejects control characters other than tab; obs-text
// (bytes >= 0x80) is allowed as RFC 9110 does.
func isFieldValue(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func isTarget(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// hasToken reports whether a comma-separated header names token,
// case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for len(v) > 0 {
			var item string
			item, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(item), token) {
				return true
			}
		}
	}
	return false
}

// maxChunkLine bounds a chunk-size line, extensions included.
const maxChunkLine = 1024

// parseChunked decodes a chunked body at the start of p. It returns the
// body and the bytes it took, or n == 0 while the body is incomplete.
// Trailer fields are read and dropped. The body may not pass maxBody.
func parseChunked(p []byte, maxBody int64) (body []byte, n int, err error) {
	var size int64
	i := 0
	// First pass: find the end and the size, so the body is copied once.
	for {
		line, next, ok := chunkLine(p, i)
		if !ok {
			if len(p)-i > maxChunkLine {
				return nil, 0, errBadChunk
			}
			return nil, 0, nil
		}
		if semi := bytes.IndexByte(line, ';'); semi >= 0 {
			line = line[:semi]
		}
		line = bytes.TrimRight(line, " \t")
		cs, perr := strconv.ParseInt(string(line), 16, 64)
		if perr != nil || cs < 0 || len(line) == 0 || line[0] == '+' || line[0] == '-' {
			return nil, 0, errBadChunk
		}
		i = next
		if cs == 0 {
			break
		}
		if size += cs; size > maxBody {
			return nil, 0, errBodyTooLarge
		}
		if int64(len(p)-i) < cs+2 {
			return nil, 0, nil
		}
		i += int(cs)
		if p[i] == '\r' {
			i++
		}
		if p[i] != '\n' {
			return nil, 0, errBadChunk
		}
		i++
	}
	// Trailer section: fields until a blank line.
	for {
		line, next, ok := chunkLine(p, i)
		if !ok {
			if len(p)-i > maxChunkLine {
				return nil, 0, errBadChunk
			}
			return nil, 0, nil
		}
		i = next
		if len(line) == 0 {
			break
		}
	}
	body = make([]byte, 0, size)
	for j := 0; ; {
		line, next, _ := chunkLine(p, j)
		if semi := bytes.IndexByte(line, ';'); semi >= 0 {
			line = line[:semi]
		}
		cs, _ := strconv.ParseInt(string(bytes.TrimRight(line, " \t")), 16, 64)
		if cs == 0 {
			break
		}
		body = append(body, p[next:next+int(cs)]...)
		j = next + int(cs)
		if p[j] == '\r' {
			j++
		}
		j++
	}
	return body, i, nil
}

func chunkLine(p []byte, i int) (line []byte, next int, ok bool) {
	j := bytes.IndexByte(p[i:], '\n')
	if j < 0 || j > maxChunkLine {
		return nil, 0, false
	}
	return bytes.TrimSuffix(p[i:i+j], []byte{'\r'}), i + j + 1, true
}

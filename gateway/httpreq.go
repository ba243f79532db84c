package gateway

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strconv"
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
	errWSRepeated    = &httpError{http.StatusBadRequest, "repeated Sec-WebSocket-Key or Sec-WebSocket-Version"}
	errUpgradeBody   = &httpError{http.StatusBadRequest, "a WebSocket handshake with a body"}
)

// maxHeaderFields bounds the fields of one request head.
const maxHeaderFields = 100

// requestHead is a parsed HTTP/1.x request head. Its byte slices alias
// the parsed input; header builds the field map only when a request needs
// one, so a WebSocket handshake costs no map.
type requestHead struct {
	raw       []byte // request line to blank line
	skip      int    // empty lines before the request line
	method    []byte
	target    []byte
	minor     int // HTTP/1.minor
	host      []byte
	length    int64 // Content-Length, or -1
	chunked   bool
	keepAlive bool
	upgrade   bool   // Upgrade names websocket: a WebSocket handshake
	wsKey     []byte // Sec-WebSocket-Key
	// wsRepeated is set when Sec-WebSocket-Key or Sec-WebSocket-Version
	// comes more than once, which RFC 6455 forbids: gobwas would check
	// one and answer for another.
	wsRepeated bool
	expect100  bool
}

// size is the number of input bytes the head took.
func (h *requestHead) size() int { return h.skip + len(h.raw) }

// parseHead parses and checks the request head at the start of p. ok is
// false while p holds only part of a head; errHeadTooLarge comes once
// maxBytes pass without its end. Lines may end in CRLF or a bare LF, and
// empty lines before the request line are skipped, as RFC 9112 allows.
func parseHead(p []byte, maxBytes int) (h requestHead, ok bool, err error) {
	for h.skip < len(p) && (p[h.skip] == '\r' || p[h.skip] == '\n') {
		h.skip++
	}
	end := headEnd(p[h.skip:])
	if end < 0 {
		if len(p) >= maxBytes {
			return h, false, errHeadTooLarge
		}
		return h, false, nil
	}
	if h.skip+end > maxBytes {
		return h, false, errHeadTooLarge
	}
	h.raw = p[h.skip : h.skip+end]
	h.length = -1
	line, rest := nextLine(h.raw)
	if err := h.parseRequestLine(line); err != nil {
		return h, false, err
	}
	var hosts, tes, fields, wsKeys, wsVersions int
	var sawLength, close, keepAlive bool
	var te []byte
	for {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		if fields++; fields > maxHeaderFields {
			return h, false, errTooManyFields
		}
		name, value, ok := splitField(line)
		if !ok {
			return h, false, errBadRequest
		}
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			hosts++
			h.host = value
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, ok := parseLength(value)
			if !ok || (sawLength && n != h.length) {
				return h, false, errBadLength
			}
			sawLength, h.length = true, n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			tes++
			te = value
		case bytes.EqualFold(name, []byte("Connection")):
			close = close || hasToken(value, "close")
			keepAlive = keepAlive || hasToken(value, "keep-alive")
		case bytes.EqualFold(name, []byte("Upgrade")):
			h.upgrade = h.upgrade || hasToken(value, "websocket")
		case bytes.EqualFold(name, []byte("Expect")):
			h.expect100 = h.expect100 || hasToken(value, "100-continue")
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Key")):
			wsKeys++
			h.wsKey = value
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Version")):
			wsVersions++
		}
	}
	h.wsRepeated = wsKeys > 1 || wsVersions > 1
	if hosts > 1 || (hosts == 0 && h.minor == 1) {
		return h, false, errNoHost
	}
	if tes > 0 {
		if sawLength {
			return h, false, errTEAndLength
		}
		// Only "chunked", once and alone, is understood; anything else
		// would leave the body's end unknown.
		if tes > 1 || !bytes.EqualFold(te, []byte("chunked")) {
			return h, false, errBadTE
		}
		h.chunked = true
	}
	if h.minor == 1 {
		h.keepAlive = !close
	} else {
		// RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding
		// may have been framed wrongly by an intermediary; do not reuse
		// the connection.
		h.keepAlive = keepAlive && !close && !h.chunked
	}
	h.expect100 = h.expect100 && h.minor == 1
	return h, true, nil
}

// parseLength reads a Content-Length value, which RFC 9112 allows only
// as digits: strconv also takes a sign, and "-0" passed as an empty body
// where a proxy in front may frame the request otherwise.
func parseLength(value []byte) (int64, bool) {
	if len(value) == 0 {
		return 0, false
	}
	for _, c := range value {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(value), 10, 64)
	return n, err == nil
}

// splitField splits a header line into name and trimmed value. Obsolete
// line folding fails here: a line starting with whitespace has no token
// before its colon.
func splitField(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return nil, nil, false
	}
	value = bytes.Trim(line[colon+1:], " \t")
	return line[:colon], value, isFieldValue(value)
}

// fields calls f for each header field of a parsed head, in order, until
// f returns false.
func (h *requestHead) fields(f func(name, value []byte) bool) {
	_, rest := nextLine(h.raw)
	for {
		var line []byte
		line, rest = nextLine(rest)
		if len(line) == 0 {
			return
		}
		if name, value, _ := splitField(line); !f(name, value) {
			return
		}
	}
}

// header builds the field map of a parsed head.
func (h *requestHead) header() http.Header {
	hdr := make(http.Header, 8)
	h.fields(func(name, value []byte) bool {
		key := textproto.CanonicalMIMEHeaderKey(string(name))
		hdr[key] = append(hdr[key], string(value))
		return true
	})
	return hdr
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
	h.method, h.target = method, target
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

// hasToken reports whether a comma-separated field value names token,
// case-insensitively.
func hasToken(value []byte, token string) bool {
	for len(value) > 0 {
		var item []byte
		item, value, _ = bytes.Cut(value, []byte{','})
		if bytes.EqualFold(bytes.TrimSpace(item), []byte(token)) {
			return true
		}
	}
	return false
}

// maxChunkLine bounds a chunk-size line, extensions included.
const maxChunkLine = 1024

// chunkOverhead bounds the framing a chunked body may spend beyond its
// data (sizes, extensions, line ends, trailers), so a body of many tiny
// chunks cannot make den read far more than MaxBodyBytes.
func chunkOverhead(maxBody int64) int64 { return maxBody/4 + 16<<10 }

// chunkReader decodes a chunked body as its bytes arrive, consuming
// exactly the body and no more, so a pipelined request behind it stays
// unread and no byte is looked at twice. Framing must use CRLF: a proxy in
// front of den that accepted bare LF here would frame the body
// differently, which is how requests are smuggled. Trailer fields are
// read and dropped. The data may not pass maxBody, nor the framing
// chunkOverhead(maxBody).
type chunkReader struct {
	maxBody int64
	state   chunkStep
	line    []byte // the size or trailer line so far
	remain  int64  // data bytes left in the current chunk
	size    int64  // data bytes so far
	wire    int64  // bytes consumed in all
}

type chunkStep uint8

const (
	chunkSizeLine chunkStep = iota
	chunkData
	chunkDataCR
	chunkDataLF
	chunkTrailer
	chunkDone
)

// feed consumes from p, appending data to *body, and reports how many
// bytes it took and whether the body ended.
func (c *chunkReader) feed(p []byte, body *[]byte) (n int, done bool, err error) {
	maxWire := c.maxBody + chunkOverhead(c.maxBody)
	for n < len(p) && c.state != chunkDone {
		switch c.state {
		case chunkSizeLine, chunkTrailer:
			i := bytes.IndexByte(p[n:], '\n')
			end := len(p)
			if i >= 0 {
				end = n + i + 1
			}
			if len(c.line)+end-n > maxChunkLine+2 {
				return n, false, errBadChunk
			}
			c.line = append(c.line, p[n:end]...)
			c.wire += int64(end - n)
			n = end
			if i < 0 {
				break
			}
			line, ok := bytes.CutSuffix(c.line, []byte("\r\n"))
			if !ok {
				return n, false, errBadChunk
			}
			if err := c.endLine(line); err != nil {
				return n, false, err
			}
			c.line = c.line[:0]
		case chunkData:
			k := int(min(c.remain, int64(len(p)-n)))
			*body = append(*body, p[n:n+k]...)
			n += k
			c.size += int64(k)
			c.wire += int64(k)
			if c.remain -= int64(k); c.remain == 0 {
				c.state = chunkDataCR
			}
		case chunkDataCR, chunkDataLF:
			want := byte('\r')
			if c.state == chunkDataLF {
				want = '\n'
			}
			if p[n] != want {
				return n, false, errBadChunk
			}
			n++
			c.wire++
			c.state++
			if c.state > chunkDataLF {
				c.state = chunkSizeLine
			}
		}
		if c.wire > maxWire {
			return n, false, errBodyTooLarge
		}
	}
	return n, c.state == chunkDone, nil
}

// endLine acts on a complete size or trailer line.
func (c *chunkReader) endLine(line []byte) error {
	if c.state == chunkTrailer {
		if len(line) == 0 {
			c.state = chunkDone
			return nil
		}
		if _, _, ok := splitField(line); !ok {
			return errBadChunk
		}
		return nil
	}
	size, ext, _ := bytes.Cut(line, []byte{';'})
	size = bytes.TrimRight(size, " \t")
	if len(size) == 0 || len(size) > 16 || !isFieldValue(ext) {
		return errBadChunk
	}
	var cs int64
	room := c.maxBody - c.size
	for _, ch := range size {
		var d byte
		switch {
		case ch >= '0' && ch <= '9':
			d = ch - '0'
		case ch >= 'a' && ch <= 'f':
			d = ch - 'a' + 10
		case ch >= 'A' && ch <= 'F':
			d = ch - 'A' + 10
		default:
			return errBadChunk
		}
		if cs > room>>4 {
			return errBodyTooLarge
		}
		cs = cs<<4 | int64(d)
	}
	if cs > room {
		return errBodyTooLarge
	}
	if cs == 0 {
		c.state = chunkTrailer
		return nil
	}
	c.state, c.remain = chunkData, cs
	return nil
}

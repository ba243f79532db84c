package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
)

// readHTTP parses requests on a connection that speaks HTTP: a WebSocket
// handshake goes to the room, any other request to the handler. One
// request at a time; pipelined ones wait in the buffer.
func (l *loop) readHTTP(s *Socket) gnet.Action {
	cfg := &l.srv.cfg
	if s.flags.has(flagPaused) {
		if int64(s.conn.InboundBuffered()) > int64(cfg.MaxHeaderBytes)+cfg.MaxBodyBytes {
			return gnet.Close // piling up requests while not reading answers
		}
		return gnet.None
	}
	if b := l.bodies[s]; b != nil {
		return l.readBody(s, b)
	}
	buf, _ := s.conn.Peek(-1)
	if len(buf) == 0 {
		return gnet.None
	}
	if !s.flags.has(flagReading) {
		s.flags |= flagReading
		s.since = l.wheel.now
	}
	h, ok, err := parseHead(buf, cfg.MaxHeaderBytes)
	if err != nil {
		return l.reject(s, err)
	}
	if !ok {
		return gnet.None
	}
	if h.upgrade {
		switch {
		case h.wsRepeated:
			return l.reject(s, errWSRepeated)
		case h.chunked || h.length > 0:
			// Its body would be read as the first WebSocket frames.
			return l.reject(s, errUpgradeBody)
		}
		return l.hs.upgrade(s, &h)
	}
	if !h.chunked && h.length <= 0 {
		req, err := l.newRequest(s, &h, nil)
		if err != nil {
			return l.reject(s, err)
		}
		_, _ = s.conn.Discard(h.size())
		return l.dispatch(s, req, h.keepAlive)
	}
	if h.length > cfg.MaxBodyBytes {
		return l.reject(s, errBodyTooLarge)
	}
	// A body follows. Den takes it out of gnet's buffer as it arrives, so
	// each byte is copied once however slowly it comes; the head is kept.
	b := &pendingBody{head: bytes.Clone(h.raw), need: h.length}
	b.h, _, _ = parseHead(b.head, len(b.head)+1)
	if h.chunked {
		b.chunks = &chunkReader{maxBody: cfg.MaxBodyBytes}
	} else {
		b.body = make([]byte, 0, min(h.length, 64<<10))
	}
	_, _ = s.conn.Discard(h.size())
	l.bodies[s] = b
	return l.readBody(s, b)
}

// pendingBody is a request whose body is still arriving.
type pendingBody struct {
	head   []byte // a copy of the request head, which h points into
	h      requestHead
	body   []byte
	need   int64        // Content-Length bytes still to come
	chunks *chunkReader // for a chunked body
}

// readBody takes what has arrived of a request's body, and dispatches the
// request once it is whole.
func (l *loop) readBody(s *Socket, b *pendingBody) gnet.Action {
	buf, _ := s.conn.Peek(-1)
	var n int
	var done bool
	if b.chunks != nil {
		var err error
		if n, done, err = b.chunks.feed(buf, &b.body); err != nil {
			delete(l.bodies, s)
			return l.reject(s, err)
		}
	} else {
		n = int(min(b.need, int64(len(buf))))
		b.body = append(b.body, buf[:n]...)
		b.need -= int64(n)
		done = b.need == 0
	}
	if n > 0 { // gnet's Discard(0) would drop the whole buffer
		_, _ = s.conn.Discard(n)
	}
	if !done {
		return l.continue100(s, &b.h)
	}
	delete(l.bodies, s)
	req, err := l.newRequest(s, &b.h, b.body)
	if err != nil {
		return l.reject(s, err)
	}
	return l.dispatch(s, req, b.h.keepAlive)
}

// newRequest builds a request with a context that ends with the
// connection.
func (l *loop) newRequest(s *Socket, h *requestHead, body []byte) (*http.Request, error) {
	ctx, cancel := context.WithCancel(l.srv.baseCtx)
	req := buildRequest(h, body, s.conn.RemoteAddr(), ctx)
	if req == nil {
		cancel()
		return nil, errBadRequest
	}
	l.requests[s] = cancel
	return req, nil
}

// dispatch hands a whole request to the handler's goroutine.
func (l *loop) dispatch(s *Socket, req *http.Request, keepAlive bool) gnet.Action {
	s.state = stateHTTPBusy
	l.wheel.remove(s)
	go l.srv.serveHTTP(s, req, keepAlive)
	return gnet.None
}

// continue100 answers "Expect: 100-continue" once while a body is awaited.
func (l *loop) continue100(s *Socket, h *requestHead) gnet.Action {
	if h.expect100 && !s.flags.has(flagSent100) {
		s.flags |= flagSent100
		l.writeNow(s, []byte("HTTP/1.1 100 Continue\r\n\r\n"))
	}
	return gnet.None
}

// reject answers a request den cannot serve and closes the connection.
func (l *loop) reject(s *Socket, err error) gnet.Action {
	delete(l.bodies, s)
	he, ok := err.(*httpError)
	if !ok {
		he = errBadRequest
	}
	if ce := l.srv.log.Check(debugLevel, "bad request"); ce != nil {
		ce.Write(socketField(s), zap.Int(logStatus, he.status), zap.String(logReason, he.reason))
	}
	if l.writeNow(s, errorResponse(he.status, he.reason, nil)) {
		l.linger(s, false)
	}
	return gnet.None
}

// buildRequest makes an *http.Request of a parsed head, or nil if its
// target is not a valid request URI.
func buildRequest(h *requestHead, body []byte, remote net.Addr, ctx context.Context) *http.Request {
	target := string(h.target)
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	r := &http.Request{
		Method:     string(h.method),
		URL:        u,
		Proto:      "HTTP/1." + strconv.Itoa(h.minor),
		ProtoMajor: 1,
		ProtoMinor: h.minor,
		Header:     h.header(),
		Host:       string(h.host),
		RemoteAddr: remote.String(),
		RequestURI: target,
		Close:      !h.keepAlive,
		Body:       http.NoBody,
	}
	if u.Host != "" {
		r.Host = u.Host
	}
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	return r.WithContext(ctx)
}

// serveHTTP runs the handler on its own goroutine, then gives the
// response to the loop.
func (srv *Server) serveHTTP(s *Socket, r *http.Request, keepAlive bool) {
	w := &responseWriter{header: make(http.Header), req: r}
	func() {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					w.abort = true
					return
				}
				srv.log.Error("HTTP handler panicked", zap.Any(logPanic, v), zap.String(logPath, r.URL.Path), zap.ByteString(logStack, debug.Stack()))
				w.reset(http.StatusInternalServerError)
			}
		}()
		srv.handler.ServeHTTP(w, r)
	}()
	keepAlive = keepAlive && !srv.draining.Load() && !hasToken([]byte(w.header.Get("Connection")), "close")
	var resp []byte
	if !w.abort {
		resp = w.bytes(keepAlive)
	}
	l := s.loop
	err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		l.finishHTTP(s, resp, keepAlive)
		return nil
	}))
	if err != nil {
		srv.log.Debug("response dropped: event loop stopped", zap.Error(err))
		srv.answerHalfClosed(s, resp)
	}
}

// finishHTTP writes a response and reads the next request, if any. A nil
// response aborts the connection: the handler gave up mid-answer, and a
// truncated body must not look complete.
func (l *loop) finishHTTP(s *Socket, resp []byte, keepAlive bool) {
	if cancel := l.requests[s]; cancel != nil {
		cancel()
		delete(l.requests, s)
	}
	if s.state != stateHTTPBusy {
		// The client went away, or only closed its side (halfclose.go).
		l.srv.answerHalfClosed(s, resp)
		return
	}
	l.holdFlush()
	defer l.flush()
	if resp == nil {
		l.closeConn(s)
		return
	}
	s.flags = s.flags&^(flagReading|flagSent100) | flagServed
	if !l.writeNow(s, resp) {
		return
	}
	if !keepAlive {
		// Even with nothing buffered, more may be on its way (a pipelined
		// request, the rest of an upload): see linger.go.
		l.linger(s, false)
		return
	}
	s.state = stateHTTP
	s.since = l.wheel.now
	l.wheel.file(s, s.since+l.srv.ticks.idle)
	l.resumeHTTP(s)
}

// resumeHTTP reads the next pipelined request, unless the client has not
// read the answers so far: then requests wait, checked again each tick,
// until it does, or until it has read nothing for the handshake timeout.
func (l *loop) resumeHTTP(s *Socket) {
	if l.overLimit(s) {
		if !s.flags.has(flagPaused) {
			s.flags |= flagPaused
			s.since = l.wheel.now
		}
		if !l.progress(s, l.srv.ticks.handshake) || l.wheel.now-s.since >= l.srv.ticks.handshake {
			l.closeConn(s)
			return
		}
		l.wheel.file(s, l.wheel.now+1)
		return
	}
	if s.flags.has(flagPaused) {
		s.flags &^= flagPaused
		delete(l.draining, s)
		s.since = l.wheel.now
		l.wheel.file(s, s.since+l.srv.ticks.idle)
	}
	if s.conn.InboundBuffered() > 0 && l.guard(s, l.readHTTP) == gnet.Close {
		l.closeConn(s)
	}
}

// handshaker is a loop's WebSocket upgrade machinery: gobwas's Upgrader
// with its hooks bound once and buffers reused, so a handshake allocates
// only what outlives it (the response, the join).
type handshaker struct {
	l    *loop
	up   ws.Upgrader
	ext  wsflate.Extension
	rd   bytes.Reader
	resp bytes.Buffer
	rw   io.ReadWriter

	// The handshake in progress.
	head       requestHead
	kind, name string
}

var (
	errRejectNotFound = ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound), ws.RejectionReason("not found"))
	errRejectOrigin   = ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden), ws.RejectionReason("origin not allowed"))
	errRejectKey      = ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest), ws.RejectionReason("bad Sec-WebSocket-Key"))
	errRejectDraining = ws.RejectConnectionError(ws.RejectionStatus(http.StatusServiceUnavailable), ws.RejectionReason("server shutting down"))
	errRejectDeflate  = ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest), ws.RejectionReason("bad permessage-deflate parameters"))
)

// refusalOf is why gobwas refused a handshake.
func refusalOf(err error) Refusal {
	switch err {
	case errRejectNotFound:
		return refusedNotFound
	case errRejectOrigin:
		return refusedOrigin
	case errRejectDraining:
		return refusedShutdown
	}
	return refusedBadHandshake
}

func newHandshaker(l *loop) *handshaker {
	hs := &handshaker{l: l}
	hs.ext.Parameters = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
	hs.rw = struct {
		io.Reader
		io.Writer
	}{&hs.rd, &hs.resp}
	hs.up = ws.Upgrader{
		OnRequest:       hs.onRequest,
		OnHeader:        hs.onHeader,
		OnBeforeUpgrade: hs.onBeforeUpgrade,
	}
	if l.srv.cfg.Subprotocol != nil {
		hs.up.ProtocolCustom = hs.onProtocol
	}
	if !l.srv.cfg.DisableCompression {
		hs.up.Negotiate = hs.negotiate
	}
	return hs
}

// upgrade runs the handshake through gobwas/ws and hands a valid one to
// its room. The 101 response waits for the room's answer.
func (hs *handshaker) upgrade(s *Socket, h *requestHead) gnet.Action {
	l := hs.l
	hs.head, hs.kind, hs.name = *h, "", ""
	hs.ext.Reset()
	hs.rd.Reset(h.raw)
	hs.resp.Reset()
	result, err := hs.up.Upgrade(hs.rw)
	hs.head = requestHead{}
	if err != nil {
		l.srv.stats.refused(refusalOf(err))
		if ce := l.srv.log.Check(debugLevel, "bad handshake"); ce != nil {
			ce.Write(socketField(s), zap.Error(err))
		}
		if l.writeNow(s, bytes.Clone(hs.resp.Bytes())) {
			l.linger(s, false)
		}
		return gnet.None
	}
	response := responses.Get().(*[]byte)
	*response = append((*response)[:0], hs.resp.Bytes()...)
	_, s.deflate = hs.ext.Accepted()
	s.deflate = s.deflate && !l.srv.cfg.DisableCompression
	s.state = stateJoining
	j := &Join{Kind: hs.kind, Name: hs.name, Subprotocol: result.Protocol, s: s, response: response, head: h.raw}
	s.join = j
	l.join(j)
	// The head lives in gnet's buffer: it is gone once discarded.
	j.endHead()
	_, _ = s.conn.Discard(h.size())
	return gnet.None
}

func (hs *handshaker) onRequest(uri []byte) error {
	kind, name, rest, err := roomPath(string(uri))
	if err != nil || rest != "" {
		return errRejectNotFound
	}
	hs.kind, hs.name = kind, name
	return nil
}

func (hs *handshaker) onHeader(key, value []byte) error {
	if bytes.EqualFold(key, []byte("Origin")) && !originAllowed(hs.l.srv.cfg.AllowedOrigins, string(value)) {
		return errRejectOrigin
	}
	return nil
}

func (hs *handshaker) onProtocol(value []byte) (string, bool) {
	offered := splitTokens(string(value))
	if len(offered) == 0 {
		return "", true
	}
	return hs.l.srv.cfg.Subprotocol(hs.kind, offered), true
}

// negotiate answers a permessage-deflate offer. An offer with bad
// parameters is the client's mistake: a 400, where gobwas would take the
// extension's plain error for its own and answer 500.
func (hs *handshaker) negotiate(opt httphead.Option) (httphead.Option, error) {
	accepted, err := hs.ext.Negotiate(opt)
	if err != nil {
		return accepted, errRejectDeflate
	}
	return accepted, nil
}

// onBeforeUpgrade runs once gobwas has checked the request: it adds what
// gobwas does not check.
func (hs *handshaker) onBeforeUpgrade() (ws.HandshakeHeader, error) {
	if !validKey(hs.head.wsKey) {
		return nil, errRejectKey
	}
	if hs.l.srv.draining.Load() {
		return nil, errRejectDraining
	}
	return nil, nil
}

// validKey checks what gobwas only measures: a Sec-WebSocket-Key that is
// base64 of 16 bytes.
func validKey(key []byte) bool {
	var b [18]byte
	n, err := base64.StdEncoding.Decode(b[:], key)
	return err == nil && n == 16 && len(key) == 24
}

func splitTokens(value string) []string {
	var out []string
	for _, t := range strings.Split(value, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// responseWriter buffers a handler's response; den writes it whole.
type responseWriter struct {
	req    *http.Request
	header http.Header
	status int
	body   bytes.Buffer
	abort  bool
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	return w.body.Write(p)
}

// reset replaces whatever a panicking handler wrote with a bare status.
func (w *responseWriter) reset(status int) {
	w.header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
	w.status = status
	w.body.Reset()
	w.body.WriteString(http.StatusText(status) + "\n")
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// headerNewlines keeps a handler's header value on its line.
var headerNewlines = strings.NewReplacer("\r", " ", "\n", " ")

// bytes serializes the response as HTTP/1.1.
func (w *responseWriter) bytes(keepAlive bool) []byte {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	h := w.header
	if bodyAllowed(w.status) {
		h.Set("Content-Length", strconv.Itoa(w.body.Len()))
		if _, ok := h["Content-Type"]; !ok && w.body.Len() > 0 {
			h.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
		}
	} else {
		h.Del("Content-Length")
	}
	h.Del("Transfer-Encoding")
	if !keepAlive {
		h.Set("Connection", "close")
	} else if w.req.ProtoMinor == 0 {
		h.Set("Connection", "keep-alive")
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			v = headerNewlines.Replace(v)
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	if w.req.Method != http.MethodHead && bodyAllowed(w.status) {
		b.Write(w.body.Bytes())
	}
	return b.Bytes()
}

// errorResponse is a complete plain-text error response that closes the
// connection.
func errorResponse(status int, reason string, extra http.Header) []byte {
	var b bytes.Buffer
	body := reason + "\n"
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n", status, http.StatusText(status), len(body))
	for k, vs := range extra {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n" + body)
	return b.Bytes()
}

package gateway

import (
	"net/http"
	"sync"
	"sync/atomic"
)

// Rooms is where the gateway sends what arrives for /rooms/{kind}/{name}.
// The rooms runtime implements it; until then the built-in Echo does.
type Rooms interface {
	// Join asks whether a WebSocket handshake for j.Kind and j.Name may
	// join. It runs on an event loop and must not block: it answers
	// through j, now or later and from any goroutine, with Accept or
	// Refuse. Unanswered joins are refused with 503 after the handshake
	// timeout.
	Join(j *Join)
	// Message delivers one complete data message from s, on s's event
	// loop; it must not block. payload is valid only until Message
	// returns.
	Message(s *Socket, text bool, payload []byte)
	// Closed reports, exactly once per accepted socket and on its event
	// loop, that s is gone. If Accept was called on another goroutine and
	// the client left at that moment, Closed may come before Accept has
	// returned: a room must not record a socket it was already told is
	// closed. code is the peer's close code (1005 if its
	// close frame had none), else the code den closed with, else 1006 for
	// a connection that dropped. reason is the peer's, or "". clean
	// reports that close frames went both ways.
	Closed(s *Socket, code int, reason string, clean bool)
	// ServeHTTP serves a request to /rooms/{kind}/{name}[/...] that is not
	// a WebSocket handshake. It runs on a goroutine of its own.
	ServeHTTP(w http.ResponseWriter, r *http.Request, kind, name string)
}

// Join is a WebSocket handshake that passed the protocol checks and waits
// for its room's answer.
type Join struct {
	// Kind and Name address the room.
	Kind, Name string
	// Subprotocol is the one Config.Subprotocol chose, or "".
	Subprotocol string

	s        *Socket
	response *[]byte // the 101 response, from responses; written on Accept
	state    atomic.Int32
	identity any // set by whoever authenticated the client, before Rooms sees it

	mu   sync.Mutex    // guards head and req
	head []byte        // the request head in the connection's buffer, during Join only
	req  *http.Request // parsed on demand
}

// A join's state moves once from pending to one of the others.
const (
	joinOpen      int32 = iota // waiting for the room
	joinTaken                  // Accept won
	joinTurned                 // Refuse won
	joinAbandoned              // den gave up: timeout, shutdown, or the client left
	// The client closed its side while waiting: a refusal still reaches
	// it on the kept connection (halfclose.go), an Accept finds it gone.
	joinHalfClosed
)

// abandon ends a join from den's side; it reports false when the room
// answered first.
func (j *Join) abandon() bool { return j.state.CompareAndSwap(joinOpen, joinAbandoned) }

// halfClose marks a join whose client closed its side; false when the room
// answered first.
func (j *Join) halfClose() bool { return j.state.CompareAndSwap(joinOpen, joinHalfClosed) }

// abandonHalfClosed ends a half-closed join from den's side; false when the
// room answered first.
func (j *Join) abandonHalfClosed() bool {
	return j.state.CompareAndSwap(joinHalfClosed, joinAbandoned)
}

// endHead makes the request head unreachable: the connection's buffer it
// lives in is about to be reused.
func (j *Join) endHead() {
	j.mu.Lock()
	j.head = nil
	j.mu.Unlock()
}

// responses recycles 101 responses: a handshake's response is written once
// and dropped, and a storm of handshakes should not be a storm of garbage.
var responses = sync.Pool{New: func() any {
	b := make([]byte, 0, 256)
	return &b
}}

// Request returns the handshake request: URL with query, Header, Host and
// RemoteAddr, with an empty Body. It is parsed from the connection's
// buffer on first use, so a room that does not look pays nothing; that
// buffer is only valid during Rooms.Join, so a room that needs the request
// must call Request there. Later calls return what was parsed then, or
// nil. It is safe from any goroutine.
func (j *Join) Request() *http.Request {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.req == nil && j.head != nil {
		h, _, _ := parseHead(j.head, len(j.head)+1)
		// While head is set the loop is inside Join, so the connection
		// is alive and its address stable.
		j.req = buildRequest(&h, nil, j.s.conn.RemoteAddr(), j.s.loop.srv.baseCtx)
	}
	return j.req
}

// SetIdentity records who the client is, for the room to see (see
// Identity). Set it before the join reaches Rooms' next stage.
func (j *Join) SetIdentity(v any) { j.identity = v }

// Identity is what SetIdentity recorded, or nil.
func (j *Join) Identity() any { return j.identity }

// Accept lets the client in and returns its socket. Frames sent on the
// socket right away go out after the handshake response. Accept and
// Refuse may be called once between them; later calls return nil and do
// nothing, as does Accept once the client has gone or closed its side of
// the connection (it could never send a frame).
func (j *Join) Accept() *Socket { return j.AcceptValue(nil) }

// AcceptValue is Accept with the room's handle for the socket set first
// (see SetValue), so Message never sees the socket without it.
func (j *Join) AcceptValue(v any) *Socket {
	// Set before the state changes: once it does, the loop may report the
	// socket closed, and the room must find its handle then. A join that
	// is not taken is never reported, so setting it early is harmless.
	j.s.value = v
	if !j.state.CompareAndSwap(joinOpen, joinTaken) {
		if j.abandonHalfClosed() {
			j.s.loop.srv.answerHalfClosed(j.s, nil)
		}
		return nil
	}
	j.s.answer(*j.response, joinAccepted)
	return j.s
}

// Refuse turns the client away with an HTTP status (4xx or 5xx) and a
// short plain-text reason.
func (j *Join) Refuse(status int, reason string) { j.RefuseFor(RefusedByRoom, status, reason, nil) }

// RefuseFor is Refuse, counted under why in the refusal metrics, with
// extra response headers (a 401's WWW-Authenticate, say).
func (j *Join) RefuseFor(why Refusal, status int, reason string, header http.Header) {
	// A refusal of a half-closed join goes through the loop too: the
	// socket's queue orders it after OnClose kept the connection.
	if !j.state.CompareAndSwap(joinOpen, joinTurned) && !j.state.CompareAndSwap(joinHalfClosed, joinTurned) {
		return
	}
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	j.s.loop.srv.stats.refused(why)
	j.s.answer(errorResponse(status, reason, header), joinRefused)
}

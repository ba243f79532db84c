package gateway

import (
	"errors"
	"net"

	"github.com/panjf2000/gnet/v2"

	"github.com/den-rooms/den/internal/wsframe"
)

// ErrClosed is returned when sending on a socket that is closing or gone.
var ErrClosed = errors.New("gateway: socket closed")

// connState is where a connection is in its life. Transitions happen on
// the connection's event loop only.
type connState uint8

const (
	stateHTTP     connState = iota // reading an HTTP request
	stateHTTPBusy                  // an HTTP handler is running; input waits
	stateJoining                   // a valid handshake waits for its room's answer
	stateOpen                      // WebSocket open
	stateClosing                   // den sent a close frame and waits for the peer's
	stateClosed                    // done; the TCP connection is closing
)

// joinAnswer is a room's answer to a join, passed to the loop.
type joinAnswer uint8

const (
	joinPending joinAnswer = iota
	joinAccepted
	joinRefused
)

// Socket is one client connection: an HTTP connection until it upgrades,
// then a WebSocket. While idle it holds no goroutine, timer or buffer.
//
// Send, SendFrame and Close are safe from any goroutine. The tags,
// attachment and value belong to the room that accepted the socket and
// are not synchronized: only that room's goroutine may use them.
type Socket struct {
	id   uint64
	conn gnet.Conn
	loop *loop

	// The room's record; see the type comment.
	kind, name  string
	subprotocol string
	tags        []string
	attachment  []byte
	value       any

	// Owned by the loop goroutine.
	state      connState
	deflate    bool   // permessage-deflate negotiated
	pinged     bool   // a keepalive ping is unanswered
	inWheel    bool   //
	peerClosed bool   // the peer's close frame arrived
	sentClose  bool   // den's close frame went out
	closeCode  uint16 // the code reported to Closed
	lastRead   uint32 // wheel tick of the last bytes read
	since      uint32 // wheel tick the current state began
	wslot      uint32
	wnext      *Socket
	wprev      *Socket
	dec        *wsframe.Decoder // only while a frame or message is incomplete
	http       *httpConn        // only while speaking HTTP or joining
	closeWhy   string

	// Guarded by loop.mu.
	out       [][]byte // frames waiting for the loop to write them
	outBytes  int
	dirty     bool       // on loop.dirty
	joinAns   joinAnswer // a join's answer not yet acted on
	closeReq  uint16     // a close asked for from another goroutine
	closeText string
	slow      bool // over the write queue limit
}

// ID returns the socket's id, unique within the process.
func (s *Socket) ID() uint64 { return s.id }

// Kind returns the room kind the socket joined.
func (s *Socket) Kind() string { return s.kind }

// Name returns the room name the socket joined.
func (s *Socket) Name() string { return s.name }

// Subprotocol returns the negotiated subprotocol, or "".
func (s *Socket) Subprotocol() string { return s.subprotocol }

// RemoteAddr returns the client's address.
func (s *Socket) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Tags returns the socket's tags.
func (s *Socket) Tags() []string { return s.tags }

// SetTags replaces the socket's tags.
func (s *Socket) SetTags(tags []string) { s.tags = tags }

// Attachment returns the socket's attachment.
func (s *Socket) Attachment() []byte { return s.attachment }

// SetAttachment replaces the socket's attachment.
func (s *Socket) SetAttachment(b []byte) { s.attachment = b }

// Value returns what the room stored with SetValue.
func (s *Socket) Value() any { return s.value }

// SetValue stores the room's own handle for the socket.
func (s *Socket) SetValue(v any) { s.value = v }

// Send queues one message for the socket. It copies payload.
func (s *Socket) Send(text bool, payload []byte) error {
	return s.SendFrame(NewFrame(text, payload))
}

// SendFrame queues a prepared frame; one Frame may go to many sockets.
func (s *Socket) SendFrame(f *Frame) error {
	return s.enqueue(f.bytes(s.deflate, s.loop.srv.cfg.CompressThreshold))
}

// Close starts the closing handshake with code (1000, 3000-4999 or another
// valid code) and a reason of at most 123 bytes. Frames queued before it
// go out first.
func (s *Socket) Close(code int, reason string) {
	if !wsframe.ValidCloseCode(wsframe.StatusCode(code)) {
		code = int(wsframe.CloseNormal)
	}
	l := s.loop
	l.mu.Lock()
	if s.closeReq == 0 {
		s.closeReq, s.closeText = uint16(code), reason
	}
	wake := l.markDirty(s)
	l.mu.Unlock()
	l.wakeIf(wake)
}

// enqueue adds a frame to the socket's write queue and makes sure the loop
// will flush it.
func (s *Socket) enqueue(frame []byte) error {
	l := s.loop
	l.mu.Lock()
	queued := s.queueLocked(frame)
	wake := queued && l.markDirty(s)
	l.mu.Unlock()
	l.wakeIf(wake)
	if !queued {
		return ErrClosed
	}
	return nil
}

// queueLocked appends frame to the write queue, or marks the socket a slow
// consumer when the queue would pass its limit. It reports whether the
// loop has work: false when the socket was already closing. l.mu is held.
func (s *Socket) queueLocked(frame []byte) bool {
	if s.closeReq != 0 || s.slow {
		return false
	}
	// One frame always fits an empty queue, so a message as large as the
	// largest allowed can be sent whatever the queue limit.
	if s.outBytes > 0 && s.outBytes+len(frame) > s.loop.srv.cfg.WriteQueueBytes {
		s.slow = true
		s.loop.putIOV(s.out)
		s.out, s.outBytes = nil, 0
		return true
	}
	if s.out == nil {
		s.out = s.loop.newIOV()
	}
	s.out = append(s.out, frame)
	s.outBytes += len(frame)
	return true
}

// answer records a room's answer to a join; the loop acts on it.
func (s *Socket) answer(response []byte, a joinAnswer) {
	l := s.loop
	l.mu.Lock()
	s.joinAns = a
	if s.out == nil {
		s.out = l.newIOV()
	}
	// The response goes before anything queued; nothing can be, since the
	// socket is unknown to the room until Accept returns, but the order
	// must not rest on that.
	s.out = append(s.out, nil)
	copy(s.out[1:], s.out)
	s.out[0] = response
	s.outBytes += len(response)
	wake := l.markDirty(s)
	l.mu.Unlock()
	l.wakeIf(wake)
}

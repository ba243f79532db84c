package gateway

import (
	"errors"

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
	stateLinger                    // den is done: its output drains, then FIN, then the peer's FIN
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
// then a WebSocket. While idle it holds no goroutine, timer or buffer:
// its record is 128 bytes beside gnet's own, and what it needs only for a
// while (a pending join, a partial frame, queued frames, tags) hangs off
// pointers that are nil otherwise.
//
// Send, SendFrame and Close are safe from any goroutine. Tags, attachment
// and value belong to the room that accepted the socket and are not
// synchronized: only that room's goroutine may use them.
type Socket struct {
	id    uint64
	conn  gnet.Conn
	loop  *loop
	value any     // the room's handle
	rec   *record // the room's tags and attachment

	// Owned by the loop goroutine.
	wnext    *Socket
	wprev    *Socket
	dec      *wsframe.Decoder // only while a frame or message is incomplete
	join     *Join            // only while joining
	lastRead uint32           // wheel tick of the last bytes read
	since    uint32           // wheel tick the current state (or the ping) began
	wslot    uint32

	// Guarded by loop.mu.
	q        *outQueue // frames waiting for the loop; nil when none
	closeReq uint16    // a close asked for from another goroutine

	closeCode uint16 // loop: the code reported to Closed
	state     connState
	flags     socketFlags // loop
	deflate   bool        // set before the socket is shared, then read-only
	mflags    lockedFlags // loop.mu
	joinAns   joinAnswer  // loop.mu: a join's answer not yet acted on
	// rateTAT is the message rate limit's theoretical arrival time, in
	// rateUnits since the server started (loop).
	rateTAT uint32
}

type socketFlags uint16

const (
	flagPinged     socketFlags = 1 << iota // a keepalive ping is unanswered
	flagInWheel                            //
	flagPeerClosed                         // the peer's close frame arrived
	flagSentClose                          // den's close frame went out
	flagOpened                             // the socket was accepted: Closed is owed
	flagServed                             // an HTTP response went out on this connection
	flagReading                            // bytes of the next HTTP request have arrived
	flagSent100                            // "100 Continue" went out for the current request
	flagGone                               // gnet closed the connection (OnClose ran)
	flagShut                               // den shut its side down (FIN sent)
	flagPaused                             // pipelined requests wait: the client is not reading answers
	flagPeerDone                           // lingering, the peer has nothing more to send: close once drained
)

type lockedFlags uint8

const (
	mDirty  lockedFlags = 1 << iota // on loop.dirty
	mRefuse                         // frames are refused: over the write queue limit, or closing
)

func (f socketFlags) has(x socketFlags) bool { return f&x != 0 }
func (f lockedFlags) has(x lockedFlags) bool { return f&x != 0 }

// record is the room's part of a socket, allocated when first set.
type record struct {
	tags       []string
	attachment []byte
}

// outQueue is a socket's write queue, taken whole by the loop.
type outQueue struct {
	response  []byte // the handshake's answer, written before frames; not counted
	frames    [][]byte
	bytes     int
	closeText string
}

// ID returns the socket's id, unique within the process.
func (s *Socket) ID() uint64 { return s.id }

// Tags returns the socket's tags.
func (s *Socket) Tags() []string {
	if s.rec == nil {
		return nil
	}
	return s.rec.tags
}

// SetTags replaces the socket's tags.
func (s *Socket) SetTags(tags []string) { s.record().tags = tags }

// Attachment returns the socket's attachment.
func (s *Socket) Attachment() []byte {
	if s.rec == nil {
		return nil
	}
	return s.rec.attachment
}

// SetAttachment replaces the socket's attachment.
func (s *Socket) SetAttachment(b []byte) { s.record().attachment = b }

func (s *Socket) record() *record {
	if s.rec == nil {
		s.rec = new(record)
	}
	return s.rec
}

// Value returns what the room stored with SetValue.
func (s *Socket) Value() any { return s.value }

// SetValue stores the room's own handle for the socket.
func (s *Socket) SetValue(v any) { s.value = v }

// Send queues one message for the socket. It copies payload.
func (s *Socket) Send(text bool, payload []byte) error {
	// One recipient: no shared Frame, the encoding is the queued buffer.
	if s.deflate && len(payload) >= s.loop.srv.cfg.CompressThreshold {
		if b := deflatedFrame(opcode(text), payload); b != nil {
			return s.enqueue(b)
		}
	}
	b, _ := encode(text, payload)
	return s.enqueue(b)
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
		s.closeReq = uint16(code)
		l.queue(s).closeText = reason
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
	if s.closeReq != 0 || s.mflags.has(mRefuse) {
		return false
	}
	q := s.loop.queue(s)
	// One frame always fits an empty queue, so a message as large as the
	// largest allowed can be sent whatever the queue limit.
	if q.bytes > 0 && q.bytes+len(frame) > s.loop.srv.cfg.WriteQueueBytes {
		s.mflags |= mRefuse
		clear(q.frames)
		q.frames, q.bytes = q.frames[:0], 0
		return true
	}
	q.frames = append(q.frames, frame)
	q.bytes += len(frame)
	return true
}

// answer records a room's answer to a join; the loop acts on it.
func (s *Socket) answer(response []byte, a joinAnswer) {
	l := s.loop
	l.mu.Lock()
	s.joinAns = a
	// The response goes before any frame and does not count against the
	// queue limit: a room may send a message of the largest size right
	// after Accept.
	l.queue(s).response = response
	wake := l.markDirty(s)
	l.mu.Unlock()
	l.wakeIf(wake)
}

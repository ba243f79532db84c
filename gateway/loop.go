package gateway

import (
	"context"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/panjf2000/gnet/v2"

	"github.com/den-rooms/den/internal/wsframe"
)

// loop is den's state for one gnet event loop: the sockets' deadlines and
// the frames other goroutines queued for them.
//
// Other goroutines queue frames under mu and mark the socket dirty; the
// loop writes every dirty socket's queue with one writev in flush. A
// flush runs at the end of each read event, or through one Execute task
// when frames arrive while the loop is idle, so frames queued together go
// out in one system call per socket.
type loop struct {
	srv *Server
	el  gnet.EventLoop

	// pacedUntil is the monotonic time before which a new flush waits (see
	// Config.FlushPace); atomic, so a writer waking the loop reads it
	// without the lock.
	pacedUntil atomic.Int64

	mu          sync.Mutex
	dirty       []*Socket
	flushQueued bool        // a flush is on its way; no need to wake the loop
	taskPending bool        // a flush task is scheduled
	pacer       *time.Timer // schedules a paced flush
	qFree       []*outQueue // spare write queues

	// Owned by the loop goroutine.
	hs       *handshaker
	requests map[*Socket]context.CancelFunc // HTTP requests being handled
	bodies   map[*Socket]*pendingBody       // request bodies still arriving
	wheel    wheel
	dec      wsframe.Decoder // for sockets without a partial frame of their own
	work     []work
	drained  []*outQueue // queues written out, back to qFree at the next flush
	spare    []*Socket   // the other half of the dirty list's double buffer
	drain    []*Socket   // sockets a shutdown batch closes
	inflate  []byte
	// Peers' close reasons, from the close frame until OnClose reports
	// them: rare and short-lived, so not a field of every socket.
	reasons map[*Socket]string
	// Output still draining for lingering or paused sockets; see progress.
	draining map[*Socket]drainState
	// Input read and dropped by lingering sockets that sent any; see drop.
	dropped map[*Socket]int64

	// Written only by the loop goroutine; atomic so that Stats can read
	// them. Each loop has its own, so counting costs no shared cache line.
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
}

// drainState follows a socket whose buffered output den waits on.
type drainState struct {
	backlog int    // bytes gnet held at the last look
	started uint32 // tick the wait began
}

// maxDrainWaits caps how many timeouts' worth of ticks den waits on a
// client that keeps reading, however slowly.
const maxDrainWaits = 12

// progress records how much output s still has, and restarts s.since when
// the client has read some since the last look: a client that reads
// slowly but steadily is not cut off. It reports false once the whole
// wait passed maxDrainWaits timeouts of limit ticks.
func (l *loop) progress(s *Socket, limit uint32) bool {
	now := l.wheel.now
	b := s.conn.OutboundBuffered()
	d, ok := l.draining[s]
	if !ok {
		d.started = now
	} else if b < d.backlog {
		s.since = now
	}
	d.backlog = b
	l.draining[s] = d
	return now-d.started < maxDrainWaits*limit
}

// paceSockets is the size of flush, in sockets written, after which the
// next flush waits out Config.FlushPace.
const paceSockets = 64

// work is one dirty socket's share of a flush, taken under mu.
type work struct {
	s        *Socket
	q        *outQueue // nil if nothing was queued
	join     joinAnswer
	slow     bool
	closeReq uint16
}

type flushTask loop

func (t *flushTask) Run(context.Context) error {
	(*loop)(t).flush()
	return nil
}

type tickTask loop

func (t *tickTask) Run(context.Context) error {
	l := (*loop)(t)
	l.wheel.advance(l.srv.nowTick(), l.due)
	return nil
}

// markDirty puts s on the dirty list and reports whether the loop must be
// woken to flush it. l.mu is held.
func (l *loop) markDirty(s *Socket) bool {
	if !s.mflags.has(mDirty) {
		s.mflags |= mDirty
		l.dirty = append(l.dirty, s)
	}
	if l.flushQueued {
		return false
	}
	l.flushQueued, l.taskPending = true, true
	return true
}

// wakeIf schedules a flush task when markDirty asked for one. After a
// large flush the task waits out the flush pace, so a stream of
// broadcasts is written in batches rather than a writev per frame.
func (l *loop) wakeIf(wake bool) {
	if !wake {
		return
	}
	if wait := l.pacedUntil.Load() - l.srv.monotonic(); wait > 0 {
		l.pacer.Reset(time.Duration(wait))
		return
	}
	l.execFlush()
}

func (l *loop) execFlush() {
	if err := l.el.Execute(context.Background(), (*flushTask)(l)); err != nil {
		// The engine is stopping; its connections close with it.
		l.srv.log.Debug("flush not scheduled", zap.Error(err))
	}
}

// queue returns s's write queue, giving it one if it has none. l.mu is
// held.
func (l *loop) queue(s *Socket) *outQueue {
	if s.q == nil {
		if n := len(l.qFree); n > 0 {
			s.q = l.qFree[n-1]
			l.qFree = l.qFree[:n-1]
		} else {
			s.q = &outQueue{frames: make([][]byte, 0, 4)}
		}
	}
	return s.q
}

// putQueue keeps a drained queue for reuse. l.mu is held.
func (l *loop) putQueue(q *outQueue) {
	if resetQueue(q) && len(l.qFree) < 1024 {
		l.qFree = append(l.qFree, q)
	}
}

// resetQueue empties q for reuse; false if it is not worth keeping. It
// needs no lock for a queue no socket holds any more.
func resetQueue(q *outQueue) bool {
	if q == nil || cap(q.frames) > 256 {
		return false
	}
	clear(q.frames)
	q.response, q.frames, q.bytes, q.closeText = nil, q.frames[:0], 0, ""
	return true
}

// holdFlush tells writers that a flush will follow, so they do not wake the
// loop while it is already running an event.
func (l *loop) holdFlush() {
	l.mu.Lock()
	l.flushQueued = true
	l.mu.Unlock()
}

// deferFlush ends an event that held the flush: what it queued is written
// by a task that runs after the other events of this poll round, so frames
// for one socket from several events leave in one writev.
func (l *loop) deferFlush() {
	l.mu.Lock()
	schedule := len(l.dirty) > 0 && !l.taskPending
	if schedule {
		l.taskPending = true
	} else if !l.taskPending {
		l.flushQueued = false
	}
	l.mu.Unlock()
	if schedule {
		l.wakeIf(true)
	}
}

// flush writes what other goroutines queued and acts on joins' answers and
// close requests. It runs on the loop.
func (l *loop) flush() {
	l.mu.Lock()
	// The last flush's queues go back under the lock this flush takes
	// anyway: one lock per flush, not one per socket written.
	for _, q := range l.drained {
		if len(l.qFree) < 1024 {
			l.qFree = append(l.qFree, q) // reset when drained
		}
	}
	clear(l.drained)
	l.drained = l.drained[:0]
	batch := l.dirty
	l.dirty = l.spare[:0]
	l.flushQueued, l.taskPending = false, false
	for _, s := range batch {
		s.mflags &^= mDirty
		l.work = append(l.work, work{s: s, q: s.q, join: s.joinAns, slow: s.mflags.has(mRefuse), closeReq: s.closeReq})
		s.q, s.joinAns = nil, joinPending
	}
	l.spare = batch
	l.mu.Unlock()

	if pace := l.srv.cfg.FlushPace; pace > 0 && len(l.work) >= paceSockets {
		l.pacedUntil.Store(l.srv.monotonic() + int64(pace))
	}
	for i := range l.work {
		w := &l.work[i]
		l.act(w)
		if resetQueue(w.q) {
			l.drained = append(l.drained, w.q)
		}
		*w = work{}
	}
	l.work = l.work[:0]
	clear(l.spare)
}

func (l *loop) act(w *work) {
	s := w.s
	var response []byte
	var frames [][]byte
	var queued int
	var closeText string
	if w.q != nil {
		response, frames, queued, closeText = w.q.response, w.q.frames, w.q.bytes, w.q.closeText
	}
	if s.flags.has(flagGone) {
		if w.join == joinRefused {
			l.srv.answerHalfClosed(s, response) // if the client only closed its side
		}
		return
	}
	if s.state == stateJoining {
		switch w.join {
		case joinAccepted:
			_, _ = s.conn.Write(response)
			alive := !s.flags.has(flagGone) && l.writeOut(s, frames)
			// Written (gnet copies what the kernel does not take): the
			// response can serve the next handshake.
			if r := s.join.response; r != nil {
				s.join.response = nil
				responses.Put(r)
			}
			if !alive {
				return
			}
			l.open(s)
			switch {
			case w.slow:
				// The room queued more than the queue holds before the
				// socket was even open; what was dropped cannot be sent.
				l.slowConsumer(s)
			case w.closeReq != 0:
				l.startClose(s, wsframe.StatusCode(w.closeReq), closeText)
			}
			return
		case joinRefused:
			_, _ = s.conn.Write(response)
			l.linger(s, false)
			return
		default:
			return
		}
	}
	if s.state != stateOpen {
		return // closing or gone: nothing more is written
	}
	// Over the limit only with more to add: a close asked for behind a
	// large message goes out as the room asked, after it.
	if backlog := s.conn.OutboundBuffered(); w.slow || (queued > 0 && backlog > 0 && backlog+queued > l.srv.cfg.WriteQueueBytes) {
		l.slowConsumer(s)
		return
	}
	if l.writeOut(s, frames) && w.closeReq != 0 {
		l.startClose(s, wsframe.StatusCode(w.closeReq), closeText)
	}
}

// slowConsumer closes a socket that does not read what it is sent.
func (l *loop) slowConsumer(s *Socket) {
	l.srv.stats.slowConsumers.Add(1)
	l.srv.log.Debug("slow consumer", socketField(s))
	l.startClose(s, wsframe.ClosePolicyViolation, "slow consumer")
}

// overLimit reports whether gnet holds more for s than its write queue
// allows: the client is not reading. Den's own replies (pongs, HTTP
// answers) may go a message beyond the queue limit, so a client busy
// reading a large message is not cut off for pinging meanwhile.
func (l *loop) overLimit(s *Socket) bool {
	return int64(s.conn.OutboundBuffered()) > int64(l.srv.cfg.WriteQueueBytes)+l.srv.cfg.MaxMessageBytes
}

// writeOut writes frames with as few system calls as writev allows. It
// reports whether the socket is still there: gnet closes a connection
// whose write fails, and OnClose runs before the write returns.
func (l *loop) writeOut(s *Socket, frames [][]byte) bool {
	const iovMax = 1024
	for len(frames) > 0 && !s.flags.has(flagGone) {
		n := min(len(frames), iovMax)
		if written, err := s.conn.Writev(frames[:n]); err == nil {
			l.msgsOut.Add(uint64(n))
			l.bytesOut.Add(uint64(written))
		}
		frames = frames[n:]
	}
	return !s.flags.has(flagGone)
}

// writeNow writes b from the loop at once, after the frames queued for s,
// which it writes first so the order holds. It reports whether the socket
// is still there (see writeOut).
func (l *loop) writeNow(s *Socket, b []byte) bool {
	var frames [][]byte
	l.mu.Lock()
	if s.q != nil && len(s.q.frames) > 0 {
		frames = s.q.frames
		s.q.frames, s.q.bytes = nil, 0
	}
	l.mu.Unlock()
	if !l.writeOut(s, frames) {
		return false
	}
	if len(b) > 0 {
		written, _ := s.conn.Write(b)
		if s.flags.has(flagOpened) {
			l.bytesOut.Add(uint64(written))
		}
	}
	return !s.flags.has(flagGone)
}

// open moves an accepted socket to the open state and reads what the client
// sent while its room was deciding.
func (l *loop) open(s *Socket) {
	s.state = stateOpen
	s.flags |= flagOpened
	s.join = nil
	s.lastRead = l.wheel.now
	l.srv.stats.open.Add(1)
	l.srv.stats.upgrades.Add(1)
	s.rateTAT = l.srv.rateNow()
	l.wheel.file(s, l.wheel.now+l.srv.ticks.ping)
	if l.srv.draining.Load() {
		// Shutdown began while the room was deciding, and its sweep has
		// passed this socket by.
		l.startClose(s, wsframe.CloseServiceRestart, "server shutting down")
		return
	}
	if s.conn.InboundBuffered() > 0 && l.guard(s, l.readFrames) == gnet.Close {
		l.closeConn(s)
	}
}

// refuseFrames makes Send and Broadcast refuse the socket: after den's
// close frame, data must not follow.
func (l *loop) refuseFrames(s *Socket) {
	l.mu.Lock()
	s.mflags |= mRefuse
	l.mu.Unlock()
}

// guard runs input handling for s. A bug reachable from client bytes must
// cost that connection, not the process: gnet recovers neither its
// callbacks nor its tasks. The loop's scratch state may be half-written,
// so it starts afresh.
func (l *loop) guard(s *Socket, read func(*Socket) gnet.Action) (action gnet.Action) {
	defer func() {
		if v := recover(); v != nil {
			l.srv.log.Error("panic handling a connection's input", socketField(s), zap.Any(logPanic, v), zap.ByteString(logStack, debug.Stack()))
			l.dec, l.inflate, l.hs.head = wsframe.Decoder{}, nil, requestHead{}
			action = gnet.Close
		}
	}()
	return read(s)
}

// closeConn closes the TCP connection from a task on the loop; OnClose
// follows at once.
func (l *loop) closeConn(s *Socket) {
	if s.flags.has(flagGone) {
		return
	}
	s.state = stateClosed
	_ = l.el.Close(s.conn)
}

// startClose sends den's close frame and waits, up to the close timeout,
// for the peer's.
func (l *loop) startClose(s *Socket, code wsframe.StatusCode, reason string) {
	if s.state != stateOpen {
		return
	}
	if !l.sendClose(s, code, reason) {
		return
	}
	l.refuseFrames(s)
	s.state = stateClosing
	s.since = l.wheel.now
	// Looked at each tick while the client reads what is ahead of the
	// close frame (see due).
	if !l.outputGone(s, l.srv.ticks.close) {
		return
	}
	l.wheel.file(s, l.wheel.now+l.srv.ticks.close)
}

// sendClose writes den's close frame once, after whatever was queued, and
// records the code that Closed reports if the peer never answers. It
// reports whether the socket is still there.
func (l *loop) sendClose(s *Socket, code wsframe.StatusCode, reason string) bool {
	if s.flags.has(flagSentClose) {
		return !s.flags.has(flagGone)
	}
	s.flags |= flagSentClose
	l.srv.stats.closesSent[closeLabel(uint16(code))].Add(1)
	if s.closeCode == 0 {
		s.closeCode = uint16(code)
	}
	return l.writeNow(s, wsframe.AppendClose(nil, code, reason))
}

// fail ends the connection after a protocol error: the close frame
// carries the code, and nothing more the client sends is read.
func (l *loop) fail(s *Socket, ce *wsframe.CloseError) gnet.Action {
	l.srv.stats.protocolErrors.Add(1)
	if ce := l.srv.log.Check(debugLevel, "protocol error"); ce != nil {
		ce.Write(socketField(s))
	}
	if l.sendClose(s, ce.Code, ce.Reason) {
		l.linger(s, false)
	}
	return gnet.None
}

// readFrames decodes what the client sent on an open or closing socket.
func (l *loop) readFrames(s *Socket) gnet.Action {
	buf, _ := s.conn.Peek(-1)
	own := s.dec != nil
	dec := s.dec
	if !own {
		dec = &l.dec
	}
	lim := &l.srv.limits
	if s.deflate {
		lim = &l.srv.limitsDeflate
	}
	action := gnet.None
	off := 0
	for off < len(buf) && action == gnet.None {
		n, m, ok, err := dec.Decode(buf[off:], lim)
		off += n
		// Counted before the message is handled: handling a close ends
		// the connection, and the count must be in before it does.
		l.bytesIn.Add(uint64(n))
		if err != nil {
			action = l.fail(s, err.(*wsframe.CloseError))
			break
		}
		if !ok {
			break
		}
		action = l.handle(s, m)
		if s.flags.has(flagGone) || s.state == stateLinger {
			break
		}
	}
	if s.flags.has(flagGone) {
		// gnet closed the connection inside a write, and OnClose took the
		// socket's decoder back; neither it nor the buffer may be touched.
		if !own {
			l.dec = wsframe.Decoder{}
		}
		return gnet.None
	}
	switch {
	case s.state == stateLinger:
		_, _ = s.conn.Discard(-1) // nothing after the end is read
	case off > 0: // gnet's Discard(0) would drop the whole buffer
		_, _ = s.conn.Discard(off)
	}
	switch {
	case action != gnet.None || s.state == stateLinger:
		*dec = wsframe.Decoder{}
		if own {
			decoders.Put(s.dec)
			s.dec = nil
		}
	case !own && !dec.Idle():
		// A frame is incomplete: the socket needs a decoder of its own
		// until it ends.
		s.dec = decoders.Get().(*wsframe.Decoder)
		*s.dec, l.dec = l.dec, wsframe.Decoder{}
	case own && dec.Idle():
		decoders.Put(s.dec)
		s.dec = nil
	}
	return action
}

var decoders = sync.Pool{New: func() any { return new(wsframe.Decoder) }}

// handle acts on one message from the client.
func (l *loop) handle(s *Socket, m wsframe.Message) gnet.Action {
	switch m.Op {
	case wsframe.OpText, wsframe.OpBinary:
		if s.state != stateOpen {
			return gnet.None // after den's close frame, data is dropped
		}
		l.msgsIn.Add(1)
		if l.overRate(s) {
			return gnet.None
		}
		payload := m.Payload
		if m.Compressed {
			var err error
			l.inflate, err = wsframe.Inflate(l.inflate[:0], payload, l.srv.cfg.MaxMessageBytes)
			if cap(l.inflate) > 64<<10 {
				// Not pinned, a bomb's failed inflate included.
				defer func() { l.inflate = nil }()
			}
			if err != nil {
				return l.fail(s, err.(*wsframe.CloseError))
			}
			if m.Op == wsframe.OpText && !utf8.Valid(l.inflate) {
				return l.fail(s, wsframe.ErrUTF8)
			}
			payload = l.inflate
		}
		return l.message(s, m.Op == wsframe.OpText, payload)
	case wsframe.OpPing:
		// Each ping costs a write of its pong: pings count against the
		// message rate, so that a flood of them cannot hold the loop.
		switch {
		case s.state != stateOpen:
		case l.overRate(s):
		case l.overLimit(s):
			// Pings from a client that does not read its pongs.
			l.slowConsumer(s)
		default:
			l.writeNow(s, wsframe.AppendFrame(nil, wsframe.OpPong, 0, m.Payload))
		}
	case wsframe.OpClose:
		code, reason := wsframe.ParseClose(m.Payload)
		s.flags |= flagPeerClosed
		s.closeCode = uint16(code)
		l.srv.stats.closesReceived[closeLabel(uint16(code))].Add(1)
		if len(reason) > 0 {
			l.reasons[s] = string(reason)
		}
		reply := code
		if code == wsframe.CloseNoStatus {
			reply = wsframe.CloseNormal
		}
		if l.sendClose(s, reply, "") {
			l.linger(s, true) // the close handshake is complete
		}
	}
	return gnet.None
}

// overRate applies the message rate limit to one message or ping from s,
// and closes s with 1008 if it is over.
func (l *loop) overRate(s *Socket) bool {
	if l.srv.msgInterval == 0 || l.srv.allowMessage(s) {
		return false
	}
	l.srv.stats.hit(limitMessageRate)
	if ce := l.srv.log.Check(debugLevel, "message rate exceeded"); ce != nil {
		ce.Write(socketField(s))
	}
	l.startClose(s, wsframe.ClosePolicyViolation, "message rate exceeded")
	return true
}

// due handles a socket whose wheel slot came round: it acts on a deadline
// that passed, or files the socket again for the next one.
func (l *loop) due(s *Socket) {
	now := l.wheel.now
	t := &l.srv.ticks
	switch s.state {
	case stateHTTP:
		if s.flags.has(flagPaused) {
			l.resumeHTTP(s)
			return
		}
		// Part of a request has come: its head, unparsed, in gnet's
		// buffer, or a body readBody has been taking out of it.
		started := s.conn.InboundBuffered() > 0 || l.bodies[s] != nil
		limit := t.handshake
		if s.flags.has(flagServed) && !started {
			limit = t.idle
		}
		if now-s.since < limit {
			l.wheel.file(s, s.since+limit)
			return
		}
		if !started {
			l.closeConn(s)
			return
		}
		l.srv.stats.handshakeTimeouts.Add(1)
		if l.writeNow(s, errorResponse(408, "request timeout", nil)) {
			l.linger(s, false)
		}
	case stateJoining:
		if now-s.since < t.handshake {
			l.wheel.file(s, s.since+t.handshake)
			return
		}
		if s.join.abandon() {
			l.srv.stats.handshakeTimeouts.Add(1)
			l.srv.stats.refused(refusedTimeout)
			if l.writeNow(s, errorResponse(503, "room did not answer", nil)) {
				l.linger(s, false)
			}
		} else {
			// The answer is on its way to this loop; wait for it.
			l.wheel.file(s, now+1)
		}
	case stateOpen:
		if s.flags.has(flagPinged) {
			if now-s.since < t.pong {
				l.wheel.file(s, s.since+t.pong)
				return
			}
			l.srv.stats.keepaliveTimeouts.Add(1)
			l.sendClose(s, wsframe.CloseGoingAway, "ping timeout")
			l.closeConn(s) // the peer is gone: nothing to wait for
			return
		}
		if now-s.lastRead < t.ping {
			l.wheel.file(s, s.lastRead+t.ping)
			return
		}
		s.flags |= flagPinged
		s.since = now
		if now := l.srv.rateNow(); int32(s.rateTAT-now) < 0 {
			// A quiet socket's schedule is brought up to date at each
			// ping, long before the rate clock wraps past it.
			s.rateTAT = now
		}
		if l.writeNow(s, pingFrame) {
			l.wheel.file(s, now+t.pong)
		}
	case stateClosing:
		// Den's close frame may still be behind output the client is
		// reading: the timeout counts from its last read, as a lingering
		// socket's does, so a steady reader gets it all.
		if !l.outputGone(s, t.close) {
			return
		}
		if now-s.since < t.close {
			l.wheel.file(s, s.since+t.close)
			return
		}
		l.closeConn(s)
	case stateLinger:
		if s.flags.has(flagShut) && now-s.since >= t.close {
			l.closeConn(s) // no FIN from the peer
			return
		}
		l.shutWhenDrained(s)
	}
}

// errRoomPanic fails a socket whose room code panicked on the loop.
var errRoomPanic = &wsframe.CloseError{Code: wsframe.CloseInternalError, Reason: "internal error"}

// message hands a message to Rooms. Rooms code runs on the loop; a panic
// in it fails that socket with 1011, not the loop and its other sockets.
func (l *loop) message(s *Socket, text bool, payload []byte) (action gnet.Action) {
	defer func() {
		if v := recover(); v != nil {
			l.srv.log.Error("Rooms.Message panicked", socketField(s), zap.Any(logPanic, v), zap.ByteString(logStack, debug.Stack()))
			action = l.fail(s, errRoomPanic)
		}
	}()
	l.srv.rooms.Message(s, text, payload)
	return gnet.None
}

// join hands a handshake to Rooms; a panic refuses it with 500.
func (l *loop) join(j *Join) {
	defer func() {
		if v := recover(); v != nil {
			l.srv.log.Error("Rooms.Join panicked", zap.String(logKind, j.Kind), zap.Any(logPanic, v), zap.ByteString(logStack, debug.Stack()))
			j.Refuse(http.StatusInternalServerError, "internal error")
		}
	}()
	l.srv.rooms.Join(j)
}

// closed reports a socket's end to Rooms; a panic there is logged.
func (l *loop) closed(s *Socket, code int, reason string, clean bool) {
	defer func() {
		if v := recover(); v != nil {
			l.srv.log.Error("Rooms.Closed panicked", socketField(s), zap.Any(logPanic, v), zap.ByteString(logStack, debug.Stack()))
		}
	}()
	l.srv.rooms.Closed(s, code, reason, clean)
}

var pingFrame = wsframe.AppendFrame(nil, wsframe.OpPing, 0, nil)

// rateUnitsPerSecond is the resolution of the message rate limit: 10 µs,
// so a socket's schedule fits the four bytes left in its record. It wraps
// after about 12 hours; see allowMessage.
const rateUnitsPerSecond = 100_000

// rateNow is the time in rateUnits since the server started, wrapping.
func (srv *Server) rateNow() uint32 {
	return uint32(srv.monotonic() / (1e9 / rateUnitsPerSecond))
}

// allowMessage applies the message rate limit to one message from s: the
// generic cell rate algorithm, one timestamp per socket, set when it
// opens and kept from falling a wrap behind by the keepalive (see due).
func (srv *Server) allowMessage(s *Socket) bool {
	now := srv.rateNow()
	ahead := int32(s.rateTAT - now)
	if ahead < 0 || ahead > int32(srv.msgSlack+srv.msgInterval) {
		// In the past: the socket kept under the rate. Further ahead than
		// any schedule can run: a schedule left from before a wrap, which
		// the keepalive should have prevented. Either way it starts afresh.
		s.rateTAT, ahead = now, 0
	}
	if uint32(ahead) > srv.msgSlack {
		return false
	}
	s.rateTAT += srv.msgInterval
	return true
}

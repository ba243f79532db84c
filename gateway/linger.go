package gateway

import "golang.org/x/sys/unix"

// A connection den is done with lingers: closing a TCP socket that holds
// unread input makes the kernel reset the connection, and a reset drops
// whatever of den's answer the client has not received yet (a close frame,
// an HTTP answer larger than the client's window). A client may well have
// sent more than den read: a request pipelined behind a Connection: close
// one, the rest of a body refused with 413, frames behind a close. So,
// as net/http's closeWriteAndWait does, den sends FIN once its output has
// reached the kernel, then reads and drops input until the client's FIN,
// within the close timeout and a bound on the bytes dropped. The
// connection stays counted until then, and Shutdown waits for it (or
// closes it when its context ends).

// linger ends a connection once what den wrote has left: gnet's own close
// would drop what the kernel has not taken yet. When the peer has nothing
// more to send (peerDone: its close frame was read), den closes as soon as
// its buffer is empty. Otherwise den stops reading, sends FIN once its
// buffer is empty, and closes when the peer's FIN arrives (gnet closes on
// EOF) or the close timeout passes.
func (l *loop) linger(s *Socket, peerDone bool) {
	if s.flags.has(flagGone) {
		return
	}
	l.refuseFrames(s)
	s.state = stateLinger
	s.since = l.wheel.now
	if peerDone {
		s.flags |= flagPeerDone
	}
	l.shutWhenDrained(s)
}

// shutWhenDrained closes, or sends FIN, once den's output has all reached
// the kernel, and files the socket to look again next tick if it has not.
func (l *loop) shutWhenDrained(s *Socket) {
	if s.flags.has(flagShut) {
		l.wheel.file(s, s.since+l.srv.ticks.close)
		return
	}
	if !l.outputGone(s, l.srv.ticks.close) {
		return
	}
	if s.flags.has(flagPeerDone) {
		l.closeConn(s)
		return
	}
	s.flags |= flagShut
	_ = unix.Shutdown(s.conn.Fd(), unix.SHUT_WR)
	s.since = l.wheel.now // now wait for the peer's FIN
	l.wheel.file(s, s.since+l.srv.ticks.close)
}

// drop counts n bytes a lingering socket read and threw away, and reports
// whether the socket is past its bound: as much as den would read of one
// request or one message. A client still sending past it is not waiting
// for an answer; den closes at once, reset or not.
func (l *loop) drop(s *Socket, n int) bool {
	if n == 0 {
		return false
	}
	l.dropped[s] += int64(n)
	cfg := &l.srv.cfg
	return l.dropped[s] > int64(cfg.MaxHeaderBytes)+max(cfg.MaxBodyBytes, cfg.MaxMessageBytes)
}

// outputGone reports whether all of s's output has reached the kernel. If
// not, s is looked at again next tick, or closed once its client has read
// nothing for limit ticks, or the whole wait passed maxDrainWaits times
// limit (see progress): the client stopped reading.
func (l *loop) outputGone(s *Socket, limit uint32) bool {
	if s.conn.OutboundBuffered() == 0 {
		delete(l.draining, s)
		return true
	}
	if !l.progress(s, limit) || l.wheel.now-s.since >= limit {
		l.closeConn(s)
	} else {
		l.wheel.file(s, l.wheel.now+1)
	}
	return false
}

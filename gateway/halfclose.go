package gateway

import (
	"context"
	"net"
	"os"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// A client may close its side of the connection right after its request,
// as `nc -N` does, and still wait for the answer. gnet closes a
// connection at the end of its input, so den keeps a duplicate of the
// descriptor of such a connection whose request is being handled, or
// whose join waits for its room, and writes the answer on it: the
// handler's response, or the room's refusal (a join accepted then is not
// opened: the client could never send a frame). The connection stays
// counted (Stats.Conns, the per-address limit) until then.
//
// Only a connection with nothing else in flight is kept: none of an
// earlier answer still waiting in gnet's buffer (which gnet's close
// drops, so that a later answer would follow a truncated one) and no
// pipelined request behind this one (which would go unanswered). Others
// close at the end of input, as before.

// halfClosedConns are the kept connections, by socket.
type halfClosedConns struct {
	mu    sync.Mutex
	conns map[*Socket]*halfClosed
}

type halfClosed struct {
	nc   net.Conn
	addr net.Addr
	// cancel ends the request's context; join is the join instead, for a
	// handshake. A client gone altogether looks the same as one that only
	// closed its side, so once the handshake timeout has passed since the
	// FIN, on den's clock, the context ends anyway and a handler waiting
	// on it gives up, or the join is answered 503 as on a loop. done ends
	// that wait.
	cancel context.CancelFunc
	join   *Join
	done   chan struct{}
}

// expire gives up on h's request or join once the handshake timeout has
// passed, unless it is answered first.
func (srv *Server) expire(s *Socket, h *halfClosed) {
	t := srv.cfg.Clock.NewTimer(srv.cfg.Clock.Now().Add(srv.cfg.HandshakeTimeout))
	defer t.Stop()
	select {
	case <-t.C():
		if h.join == nil {
			h.cancel()
		} else if h.join.abandonHalfClosed() {
			srv.stats.handshakeTimeouts.Add(1)
			srv.stats.refused(refusedTimeout)
			srv.answerHalfClosed(s, errorResponse(503, "room did not answer", nil))
		}
	case <-h.done:
	}
}

// end stops h's wait, ends its request and closes the connection.
func (srv *Server) end(h *halfClosed) {
	close(h.done)
	if h.cancel != nil {
		h.cancel()
	}
	_ = h.nc.Close()
	srv.forget(h.addr)
}

// keepHalfClosed keeps c, whose client closed its side while its request
// is handled (cancel ends it) or its join j waits for the room, for the
// answer; false if it cannot be kept.
func (srv *Server) keepHalfClosed(s *Socket, c gnet.Conn, cancel context.CancelFunc, j *Join) bool {
	if (cancel == nil && j == nil) || c.InboundBuffered() > 0 || c.OutboundBuffered() > 0 {
		return false
	}
	nc := dupConn(c)
	if nc == nil {
		return false
	}
	h := &halfClosed{nc: nc, addr: c.RemoteAddr(), cancel: cancel, join: j, done: make(chan struct{})}
	srv.half.mu.Lock()
	if srv.half.conns == nil {
		srv.half.conns = map[*Socket]*halfClosed{}
	}
	srv.half.conns[s] = h
	srv.half.mu.Unlock()
	go srv.expire(s, h)
	return true
}

// take removes and returns s's kept connection, or nil.
func (hc *halfClosedConns) take(s *Socket) *halfClosed {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	h := hc.conns[s]
	delete(hc.conns, s)
	return h
}

// answerHalfClosed writes resp (nil: an aborted answer, none) on s's kept
// connection, if it has one, within the handshake timeout, and closes it:
// nothing more can come from the client.
func (srv *Server) answerHalfClosed(s *Socket, resp []byte) {
	h := srv.half.take(s)
	if h == nil {
		return
	}
	go func() {
		if resp != nil {
			_ = h.nc.SetWriteDeadline(time.Now().Add(srv.cfg.HandshakeTimeout))
			_, _ = h.nc.Write(resp)
		}
		srv.end(h)
	}()
}

// refuseHalfClosedJoins answers 503 to the kept joins still waiting for
// their rooms, as Shutdown does the joins on the loops. A join kept after
// this sweep is refused as it is kept (see OnClose).
func (srv *Server) refuseHalfClosedJoins() {
	joins := map[*Socket]*Join{}
	srv.half.mu.Lock()
	for s, h := range srv.half.conns {
		if h.join != nil {
			joins[s] = h.join
		}
	}
	srv.half.mu.Unlock()
	for s, j := range joins {
		srv.refuseAtShutdown(s, j)
	}
}

// refuseAtShutdown answers 503 to s's kept join j, unless its room or
// its timeout answered first.
func (srv *Server) refuseAtShutdown(s *Socket, j *Join) {
	if j.abandonHalfClosed() {
		srv.stats.refused(refusedShutdown)
		srv.answerHalfClosed(s, errorResponse(503, "server shutting down", nil))
	}
}

// closeHalfClosed closes the kept connections whose handlers have not
// answered by the time the event loops stop.
func (srv *Server) closeHalfClosed() {
	srv.half.mu.Lock()
	conns := srv.half.conns
	srv.half.conns = nil
	srv.half.mu.Unlock()
	for _, h := range conns {
		srv.end(h)
	}
}

// forget counts a connection closed: in Stats, and against its client
// address's limit.
func (srv *Server) forget(addr net.Addr) {
	srv.stats.conns.Add(-1)
	if srv.ips != nil {
		srv.ips.release(addrIP(addr), srv.monotonic())
	}
}

// dupConn returns a connection on a duplicate of c's descriptor, which
// stays open when gnet closes c; nil if the process has no descriptor to
// spare.
func dupConn(c gnet.Conn) net.Conn {
	fd, err := unix.FcntlInt(uintptr(c.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil
	}
	return nc
}

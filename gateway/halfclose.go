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
// descriptor of such a connection whose request is being handled, and
// writes the answer on it. The connection stays counted (Stats.Conns, the
// per-address limit) until then.
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
	// cancel ends the request's context. A client gone altogether looks
	// the same as one that only closed its side, so the context ends
	// anyway once the handshake timeout has passed since the FIN, on
	// den's clock, and a handler waiting on it gives up. done ends that
	// wait.
	cancel context.CancelFunc
	done   chan struct{}
}

// expire cancels h's request once the handshake timeout has passed, unless
// it is answered first.
func (srv *Server) expire(h *halfClosed) {
	t := srv.cfg.Clock.NewTimer(srv.cfg.Clock.Now().Add(srv.cfg.HandshakeTimeout))
	defer t.Stop()
	select {
	case <-t.C():
		h.cancel()
	case <-h.done:
	}
}

// end stops h's wait, ends its request and closes the connection.
func (srv *Server) end(h *halfClosed) {
	close(h.done)
	h.cancel()
	_ = h.nc.Close()
	srv.forget(h.addr)
}

// keepHalfClosed keeps c, whose client closed its side while its request
// is handled, for the answer; false if it cannot be kept.
func (srv *Server) keepHalfClosed(s *Socket, c gnet.Conn, cancel context.CancelFunc) bool {
	if cancel == nil || c.InboundBuffered() > 0 || c.OutboundBuffered() > 0 {
		return false
	}
	nc := dupConn(c)
	if nc == nil {
		return false
	}
	h := &halfClosed{nc: nc, addr: c.RemoteAddr(), cancel: cancel, done: make(chan struct{})}
	srv.half.mu.Lock()
	if srv.half.conns == nil {
		srv.half.conns = map[*Socket]*halfClosed{}
	}
	srv.half.conns[s] = h
	srv.half.mu.Unlock()
	go srv.expire(h)
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

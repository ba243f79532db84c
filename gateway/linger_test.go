package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
)

// dialSmallWindow connects with a receive buffer of a few KiB, so most of
// a larger answer waits in den's kernel, not in the client's.
func dialSmallWindow(tb testing.TB, srv *Server) net.Conn {
	tb.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", srv.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// lingering reports whether den's one connection has given all of its
// answer to the kernel and lingers, or is gone; and how many bytes den
// has read and dropped on it while lingering.
func lingering(srv *Server) (handedOver bool, dropped int64) {
	handedOver = srv.Stats().Conns == 0
	for _, l := range *srv.loopSet.Load() {
		onLoop(l, func() {
			l.wheel.each(func(s *Socket) {
				if s.state == stateLinger && s.conn.OutboundBuffered() == 0 {
					handedOver = true
					dropped += l.dropped[s]
				}
			})
		})
	}
	return handedOver, dropped
}

// A client that sends more after a Connection: close request (a pipelined
// request, the rest of an upload) and reads the answer only once den has
// closed gets all of it. Closing with input unread resets the connection,
// and the kernel drops the part of the answer the client had no room for
// yet; den shuts its side instead, and reads and drops what comes until
// the client's FIN or the close timeout.
func TestAnswerSurvivesInputAfterIt(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	body := bytes.Repeat([]byte{'a'}, 128<<10)
	served := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(body)
		close(served)
	})
	srv := startServer(t, Config{Clock: fake, Tick: time.Second, Handler: h})
	c := dialSmallWindow(t, srv)
	if _, err := c.Write(request("/big", "Connection: close")); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "the handler", served) // the connection is counted by now
	waitFor(t, "den to hand its answer to the kernel", func() bool { ok, _ := lingering(srv); return ok })
	// Unread by den, and sent while most of the answer waits in den's
	// kernel for the client to make room.
	extra := bytes.Repeat([]byte{'x'}, 256<<10)
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write(extra) // fails if den reset the connection
	waitFor(t, "den to read what came after the request", func() bool {
		_, dropped := lingering(srv)
		return srv.Stats().Conns == 0 || dropped == int64(len(extra))
	})
	advanceUntil(t, fake, time.Second, "den to close the connection", func() bool { return srv.Stats().Conns == 0 })

	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("after %d bytes of the answer: %v", len(got), err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || !bytes.Equal(b, body) {
		t.Fatalf("answer: %d, %d bytes of %d (%v)", resp.StatusCode, len(b), len(body), err)
	}
}

// Den drops what a lingering client sends only up to a bound: past it the
// connection closes without waiting for the timeout.
func TestLingerDropsABoundedAmount(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	srv := startServer(t, Config{Clock: fake, Tick: time.Second, MaxHeaderBytes: 1 << 10, MaxBodyBytes: 16 << 10, MaxMessageBytes: 16 << 10})
	c := dialRaw(t, srv)
	c.send(request("/livez", "Connection: close"))
	if resp := c.response(); resp.StatusCode != http.StatusOK {
		t.Fatalf("/livez: %d", resp.StatusCode)
	}
	go func() {
		flood := make([]byte, 64<<10)
		_ = c.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := c.conn.Write(flood); err != nil {
				return
			}
		}
	}()
	waitFor(t, "den to close the flooding connection", func() bool { return srv.Stats().Conns == 0 })
}

// An answer still leaving when Shutdown closes the idle kept-alive
// connections reaches its client whole: the connection waits for no next
// request, but den's output has not left, and gnet's close drops what the
// kernel has not taken.
func TestShutdownLetsAnAnswerLeave(t *testing.T) {
	body := bytes.Repeat([]byte{'a'}, 8<<20)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) })
	srv, err := New(Config{Listen: "127.0.0.1:0", EventLoops: 1, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialSmallWindow(t, srv)
	if _, err := c.Write(request("/big")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the answer written, most of it still in den", func() bool {
		pending := false
		for _, l := range *srv.loopSet.Load() {
			onLoop(l, func() {
				l.wheel.each(func(s *Socket) {
					pending = pending || s.state == stateHTTP && s.conn.OutboundBuffered() > 0
				})
			})
		}
		return pending
	})
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res <- srv.Shutdown(ctx)
	}()
	waitFor(t, "Shutdown to close idle connections", func() bool {
		closing := true
		for _, l := range *srv.loopSet.Load() {
			onLoop(l, func() {
				l.wheel.each(func(s *Socket) { closing = closing && s.state != stateHTTP })
			})
		}
		return closing
	})
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || len(b) != len(body) {
		t.Fatalf("answer: %d bytes of %d (%v)", len(b), len(body), err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

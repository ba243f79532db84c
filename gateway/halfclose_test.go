package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
)

// blockingHandler serves /slow: it says it started, then waits for
// release or for its request's context to end, and says which.
type blockingHandler struct {
	started chan struct{}
	release chan struct{}
	ctxDone chan struct{}
}

func newBlockingHandler() *blockingHandler {
	return &blockingHandler{started: make(chan struct{}, 8), release: make(chan struct{}), ctxDone: make(chan struct{}, 8)}
}

func (h *blockingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.started <- struct{}{}
	select {
	case <-h.release:
		_, _ = w.Write([]byte("slow\n"))
	case <-r.Context().Done():
		h.ctxDone <- struct{}{}
	}
}

// halfClosedCount is the connections kept to be answered on a duplicate.
func halfClosedCount(srv *Server) int {
	srv.half.mu.Lock()
	defer srv.half.mu.Unlock()
	return len(srv.half.conns)
}

func waitChan(tb testing.TB, what string, ch <-chan struct{}) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		tb.Fatalf("timed out waiting for %s", what)
	}
}

// startSlow sends a request for /slow on c, waits for its handler, and
// closes the client's side.
func startSlow(t *testing.T, srv *Server, c net.Conn, h *blockingHandler) {
	t.Helper()
	if _, err := c.Write(request("/slow")); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "the handler", h.started)
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the half-close seen", func() bool { return halfClosedCount(srv) == 1 })
}

// A client that closes its side after its request, as `nc -N` does, gets
// the answer, which its handler makes after den has read the end of the
// client's input, and then the end of the connection.
func TestHalfClosedClientGetsItsAnswer(t *testing.T) {
	h := newBlockingHandler()
	srv := startServer(t, Config{Handler: h})
	c := dialRaw(t, srv)
	startSlow(t, srv, c.conn, h)
	close(h.release)
	if resp := c.response(); resp.StatusCode != http.StatusOK {
		t.Errorf("after a half-close: %d, want 200", resp.StatusCode)
	}
	c.expectEOF()
	waitFor(t, "the connection counted closed", func() bool { return srv.Stats().Conns == 0 })
}

// A kept connection counts against its address's limit until it closes.
func TestHalfClosedKeepsItsPerIPSlot(t *testing.T) {
	h := newBlockingHandler()
	srv := startServer(t, Config{MaxConnsPerIP: 1, Handler: h})
	t.Cleanup(func() { close(h.release) })
	first, err := dialFrom(t, srv, "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	startSlow(t, srv, first, h)
	second, err := dialFrom(t, srv, "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if _, err := second.Write(request("/livez")); err != nil {
		t.Fatal(err)
	}
	if code := statusOf(t, second); code != http.StatusTooManyRequests {
		t.Errorf("a second connection while the first waits for its answer: %d, want 429", code)
	}
}

// A client that half-closes may be gone altogether (after a FIN, a reset
// is not seen): the request's context ends once the handshake timeout has
// passed on den's clock, and a handler waiting on it gives up.
func TestHalfClosedRequestEndsAfterTheHandshakeTimeout(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	h := newBlockingHandler()
	srv := startServer(t, Config{Clock: fake, Tick: time.Second, Handler: h})
	c := dialRaw(t, srv)
	startSlow(t, srv, c.conn, h)
	tc := c.conn.(*net.TCPConn)
	_ = tc.SetLinger(0)
	_ = tc.Close() // a reset
	select {
	case <-h.ctxDone:
		t.Fatal("the request's context ended at the client's FIN")
	default:
	}
	advanceUntil(t, fake, time.Second, "the request's context to end", func() bool { return len(h.ctxDone) > 0 })
	waitFor(t, "the connection counted closed", func() bool { return srv.Stats().Conns == 0 })
}

// A handler that answers only after Shutdown gave up and stopped the
// event loops: the kept connection is closed all the same.
func TestHalfClosedClosedAtShutdown(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		_, _ = w.Write([]byte("late\n"))
	})
	srv, err := New(Config{Listen: "127.0.0.1:0", EventLoops: 1, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, srv)
	c.send(request("/slow"))
	waitChan(t, "the handler", started)
	if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the half-close seen", func() bool { return halfClosedCount(srv) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want its deadline passed (a handler runs)", err)
	}
	close(release)
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c.br); err != nil {
		t.Errorf("the kept connection is not closed after Shutdown: %v", err)
	}
	if n := srv.Stats().Conns; n != 0 {
		t.Errorf("Stats().Conns %d after Shutdown, want 0", n)
	}
}

// A connection with a pipelined request behind the one being handled is
// not kept: the client's FIN closes it, as before, rather than leave the
// second request unanswered on an open connection.
func TestHalfClosedWithPipelinedRequestCloses(t *testing.T) {
	h := newBlockingHandler()
	srv := startServer(t, Config{Handler: h})
	t.Cleanup(func() { close(h.release) })
	c := dialRaw(t, srv)
	c.send(append(request("/slow"), request("/livez")...))
	waitChan(t, "the handler", h.started)
	if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.expectEOF()
	if n := halfClosedCount(srv); n != 0 {
		t.Errorf("%d connections kept, want none", n)
	}
}

// A connection whose earlier answer is still partly in den's buffer when
// the FIN comes is not kept: gnet drops that rest as it closes, and an
// answer written after it would read as part of the truncated one.
func TestHalfClosedAfterABacklogCloses(t *testing.T) {
	const bigSize = 16 << 20
	big := bytes.Repeat([]byte{'a'}, bigSize)
	slowStarted, release := make(chan struct{}, 1), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		slowStarted <- struct{}{}
		<-release
		_, _ = w.Write([]byte("slow\n"))
	})
	srv := startServer(t, Config{Handler: mux, WriteQueueBytes: 64 << 20})
	t.Cleanup(func() { close(release) })
	// A small receive buffer, so that most of the big answer stays in den.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(append(request("/big"), request("/slow")...)); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "the second request's handler", slowStarted)
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if i := bytes.IndexFunc(body, func(r rune) bool { return r != 'a' }); i >= 0 {
		t.Fatalf("the first answer's body holds other bytes at %d: %q", i, body[i:min(len(body), i+40)])
	}
	if n := halfClosedCount(srv); n != 0 {
		t.Errorf("%d connections kept, want none", n)
	}
}

// heldJoins is a test Rooms whose joins wait for the test to answer them.
type heldJoins struct {
	Echo
	joins chan *Join
}

func (h *heldJoins) Join(j *Join) { h.joins <- j }

// startHeldJoin sends a handshake on a new connection, closes the
// client's side once its join waits for the room, and waits until den
// has read the FIN: it keeps the connection, or (without a way to answer
// it) closes it.
func startHeldJoin(t *testing.T, srv *Server, h *heldJoins) (*rawClient, *Join) {
	t.Helper()
	c := dialRaw(t, srv)
	c.send(request("/rooms/held/a", hUpgrade, hConn, hKey, hVersion))
	var j *Join
	select {
	case j = <-h.joins:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the join")
	}
	if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the half-close seen", func() bool { return halfClosedCount(srv) == 1 || srv.Stats().Conns == 0 })
	return c, j
}

// A client that closes its side after its handshake, as `nc -N` does,
// gets the room's refusal, which comes after den has read the end of the
// client's input, as a plain request's client gets its answer.
func TestHalfClosedJoinGetsItsRefusal(t *testing.T) {
	h := &heldJoins{joins: make(chan *Join, 1)}
	srv := startServer(t, Config{Rooms: h})
	c, j := startHeldJoin(t, srv, h)
	j.RefuseFor(RefusedAuth, http.StatusUnauthorized, "no token", http.Header{"Www-Authenticate": {"Bearer"}})
	resp := c.response()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Errorf("a refused join after a half-close: %d %q, want 401 with WWW-Authenticate", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	c.expectEOF()
	waitFor(t, "the connection counted closed", func() bool { return srv.Stats().Conns == 0 })
}

// A join accepted after its client closed its side is not opened: the
// room gets no socket it could never hear from, and the connection
// closes.
func TestHalfClosedJoinAcceptedCloses(t *testing.T) {
	h := &heldJoins{joins: make(chan *Join, 1)}
	srv := startServer(t, Config{Rooms: h})
	c, j := startHeldJoin(t, srv, h)
	if s := j.Accept(); s != nil {
		t.Error("Accept after the client closed its side returned a socket")
	}
	c.expectEOF()
	waitFor(t, "the connection counted closed", func() bool { return srv.Stats().Conns == 0 })
	if n := srv.Stats().Sockets; n != 0 {
		t.Errorf("%d sockets open, want none", n)
	}
}

// A kept join the room never answers gets 503 once the handshake timeout
// has passed since the FIN, on den's clock.
func TestHalfClosedJoinTimesOut(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	h := &heldJoins{joins: make(chan *Join, 1)}
	srv := startServer(t, Config{Clock: fake, Tick: time.Second, Rooms: h})
	c, j := startHeldJoin(t, srv, h)
	advanceUntil(t, fake, time.Second, "the join to time out", func() bool { return srv.Stats().HandshakeTimeouts == 1 })
	if resp := c.response(); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("an unanswered join after a half-close: %d, want 503", resp.StatusCode)
	}
	c.expectEOF()
	j.Refuse(http.StatusForbidden, "too late") // does nothing
	waitFor(t, "the connection counted closed", func() bool { return srv.Stats().Conns == 0 })
}

// Shutdown answers a kept join 503 at once, as it does a join on a loop,
// rather than wait for the room or the timeout.
func TestHalfClosedJoinRefusedAtShutdown(t *testing.T) {
	h := &heldJoins{joins: make(chan *Join, 1)}
	srv, err := New(Config{Listen: "127.0.0.1:0", Rooms: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c, _ := startHeldJoin(t, srv, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if resp := c.response(); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a kept join at Shutdown: %d, want 503", resp.StatusCode)
	}
	c.expectEOF()
}

// A handshake and its FIN sent together, as `nc -N` sends them, get the
// refusal a room makes at once, inside Join: the FIN can reach den
// before the refusal is written.
func TestHalfClosedJoinRefusedAtOnce(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.send(request("/rooms/nope/a", hUpgrade, hConn, hKey, hVersion))
	if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if resp := c.response(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown kind, handshake and FIN together: %d, want 404", resp.StatusCode)
	}
	c.expectEOF()
}

// A join whose client closes its side once Shutdown has begun, while the
// spread has not reached it yet, is answered 503 at once: it is off the
// loop by then, out of the spread's reach, and it was past Shutdown's
// sweep of the kept joins, so it waited for the room or the timeout.
func TestHalfClosedJoinDuringShutdown(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	h := &heldJoins{joins: make(chan *Join, 2)}
	srv, err := New(Config{Listen: "127.0.0.1:0", Clock: fake, Tick: time.Second, EventLoops: 1, ShutdownSpread: 10 * time.Second, Rooms: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	nextJoin := func() *Join {
		t.Helper()
		select {
		case j := <-h.joins:
			return j
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the join")
			return nil
		}
	}
	// An open WebSocket keeps the spread going, one socket a step.
	ws := dialRaw(t, srv)
	ws.send(request("/rooms/held/a", hUpgrade, hConn, hKey, hVersion))
	nextJoin().Accept()
	if resp := ws.response(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %d", resp.StatusCode)
	}
	var cs []*rawClient
	var js []*Join
	for range 2 {
		c := dialRaw(t, srv)
		c.send(request("/rooms/held/a", hUpgrade, hConn, hKey, hVersion))
		js = append(js, nextJoin())
		cs = append(cs, c)
	}
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res <- srv.Shutdown(ctx)
	}()
	t.Cleanup(func() {
		fake.Advance(time.Minute) // a failed test's join times out, and Shutdown ends
		<-res
	})
	// The spread's first step refuses one of the joins (they are due
	// before the socket); the clock does not move to the next.
	waitFor(t, "the first step", func() bool { return srv.Stats().Refused[refusedShutdown] == 1 })
	left := 0
	if js[0].state.Load() != joinOpen {
		left = 1
	}
	if js[left].state.Load() != joinOpen {
		t.Fatal("both joins answered in the spread's first step")
	}
	if err := cs[left].conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if resp := cs[left].response(); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a join half-closed during Shutdown: %d, want 503", resp.StatusCode)
	}
	cs[left].expectEOF()
	if n := srv.Stats().Refused[refusedShutdown]; n != 2 {
		t.Errorf("%d joins refused for the shutdown, want 2", n)
	}
}

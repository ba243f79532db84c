package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/internal/wsframe"
)

// Regression tests for failures found in review: each names what went
// wrong.

// runFunc runs a function as a gnet task on a loop.
type runFunc func()

func (f runFunc) Run(context.Context) error { f(); return nil }

// onLoop runs f on l's goroutine and waits for it.
func onLoop(l *loop, f func()) {
	done := make(chan struct{})
	_ = l.el.Execute(context.Background(), runFunc(func() { f(); close(done) }))
	<-done
}

// advanceTick moves den's fake clock a tick and waits until every loop
// has seen it.
func advanceTick(t *testing.T, srv *Server, fake *clock.Fake, tick time.Duration) {
	t.Helper()
	fake.Advance(tick)
	want := srv.nowTick()
	waitFor(t, "den's loops to take the tick", func() bool {
		seen := true
		for _, l := range *srv.loopSet.Load() {
			onLoop(l, func() { seen = seen && l.wheel.now >= want })
		}
		return seen
	})
}

// blockLoop keeps l busy in a task until the returned function is called,
// so events and tasks queue up behind it in a known order.
func blockLoop(l *loop) (release func()) {
	started, unblock := make(chan struct{}), make(chan struct{})
	_ = l.el.Execute(context.Background(), runFunc(func() { close(started); <-unblock }))
	<-started
	return func() { close(unblock) }
}

// TestFrameSplitAcrossReads: a header, or a control frame, that arrives in
// two reads was once dropped whole (gnet's Discard(0) discards everything).
// The pause only makes the split likely; the test cannot fail spuriously.
func TestFrameSplitAcrossReads(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/split")
	text := wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpText, []byte("hello"), testMask)
	ping := wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpPing, []byte("0123456789"), testMask)
	for _, tc := range []struct {
		frame []byte
		cut   int
		want  wsframe.Opcode
	}{{text, 1, wsframe.OpText}, {ping, 8, wsframe.OpPong}} {
		c.send(tc.frame[:tc.cut])
		time.Sleep(50 * time.Millisecond)
		c.send(tc.frame[tc.cut:])
		if f := c.mustRead(); f.op != tc.want {
			code, reason := wsframe.ParseClose(f.payload)
			t.Fatalf("got op %v (close %d %q), want %v", f.op, code, reason, tc.want)
		}
	}
}

type recRooms struct {
	Echo
	mu     sync.Mutex
	closed []closeEvent
}

func (r *recRooms) Join(j *Join) { j.Accept() }
func (r *recRooms) Closed(_ *Socket, code int, reason string, clean bool) {
	r.mu.Lock()
	r.closed = append(r.closed, closeEvent{code, reason, clean})
	r.mu.Unlock()
}
func (r *recRooms) events() []closeEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]closeEvent(nil), r.closed...)
}

// TestCloseReplyBehindQueuedFrames: a message and a close frame in one
// write; the echo was queued, and the close reply once went into the
// queue behind it, which closing then dropped.
func TestCloseReplyBehindQueuedFrames(t *testing.T) {
	r := &recRooms{}
	srv := startServer(t, Config{Rooms: r})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/x")
	b := wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpText, []byte("hi"), testMask)
	b = wsframe.AppendMaskedFrame(b, true, 0, wsframe.OpClose, closePayload(1000, "bye"), testMask)
	c.send(b)
	if f := c.mustRead(); f.op != wsframe.OpText || string(f.payload) != "hi" {
		t.Fatalf("first frame %v %q, want the echo", f.op, f.payload)
	}
	if f := c.mustRead(); f.op != wsframe.OpClose {
		t.Fatalf("second frame %v, want the close reply", f.op)
	}
	c.expectEOF()
	waitFor(t, "Closed", func() bool { return len(r.events()) == 1 })
	if ev := r.events()[0]; ev != (closeEvent{1000, "bye", true}) {
		t.Fatalf("Closed got %+v", ev)
	}
}

// TestDrainBehindQueuedFrame: shutdown's 1012 goes out after a frame that
// was queued for the socket, not instead of it.
func TestDrainBehindQueuedFrame(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/x")
	waitFor(t, "open", func() bool { return srv.Stats().Sockets == 1 })
	for _, l := range *srv.loopSet.Load() {
		onLoop(l, func() {
			l.wheel.each(func(s *Socket) {
				if s.state == stateOpen {
					_ = s.Send(true, []byte("queued"))
				}
			})
			_ = (&drainTask{l: l, stepsLeft: 1}).Run(context.Background())
		})
	}
	if f := c.mustRead(); string(f.payload) != "queued" {
		t.Fatalf("first frame %v %q, want the queued one", f.op, f.payload)
	}
	f := c.mustRead()
	if code, _ := wsframe.ParseClose(f.payload); f.op != wsframe.OpClose || code != wsframe.CloseServiceRestart {
		t.Fatalf("then %v %d, want close 1012", f.op, code)
	}
}

// trackRooms records the sockets Accept handed out until Closed. Closed may
// come before the goroutine that accepted records the socket, as it would
// for any room that answers from its own goroutine; done remembers it.
type trackRooms struct {
	Echo
	async bool
	mu    sync.Mutex
	open  map[*Socket]bool
	done  map[*Socket]int
}

func (r *trackRooms) Join(j *Join) {
	take := func() {
		if s := j.Accept(); s != nil {
			r.mu.Lock()
			if r.done[s] == 0 {
				r.open[s] = true
			}
			r.mu.Unlock()
		}
	}
	if r.async {
		go take()
		return
	}
	take()
}

func (r *trackRooms) Closed(s *Socket, _ int, _ string, _ bool) {
	r.mu.Lock()
	delete(r.open, s)
	r.done[s]++
	r.mu.Unlock()
}

func (r *trackRooms) count() (open, twice int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.done {
		if n > 1 {
			twice++
		}
	}
	return len(r.open), twice
}

// TestEveryAcceptedSocketIsClosed: clients that leave right after their
// handshake, before den writes the 101: the room was once never told.
func TestEveryAcceptedSocketIsClosed(t *testing.T) {
	for _, async := range []bool{false, true} {
		r := &trackRooms{async: async, open: map[*Socket]bool{}, done: map[*Socket]int{}}
		srv := startServer(t, Config{Rooms: r})
		for range 200 {
			c, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.Write(request("/rooms/echo/x", hUpgrade, hConn, hKey, hVersion))
			c.Close()
		}
		waitFor(t, "every accepted socket closed", func() bool {
			open, _ := r.count()
			return srv.Stats().Conns == 0 && open == 0
		})
		if _, twice := r.count(); twice > 0 {
			t.Fatalf("%d sockets got Closed more than once", twice)
		}
	}
}

// TestRequestFromRoomGoroutine: Join.Request from another goroutine while
// the loop moves on must not race (run with -race) or read a reused buffer.
func TestRequestFromRoomGoroutine(t *testing.T) {
	srv := startServer(t, Config{Rooms: asyncRequest{}})
	for range 20 {
		c := dialRaw(t, srv)
		c.upgrade("/rooms/echo/x?k=v")
		c.conn.Close()
	}
}

type asyncRequest struct{ Echo }

func (asyncRequest) Join(j *Join) {
	go func() {
		if r := j.Request(); r != nil && r.URL.Query().Get("k") != "v" {
			panic("request parsed from a reused buffer: " + r.RequestURI)
		}
		j.Accept()
	}()
}

// TestPingFloodIsSlowConsumer: pings from a client that never reads its
// pongs once grew den's buffer without bound. The server side's kernel
// buffer is made small so the pongs back up in den, not in the kernel.
func TestPingFloodIsSlowConsumer(t *testing.T) {
	srv := startServer(t, Config{WriteQueueBytes: 64 << 10})
	c := dialRaw(t, srv)
	c.conn.(*net.TCPConn).SetReadBuffer(4096)
	c.upgrade("/rooms/echo/x")
	waitFor(t, "open", func() bool { return srv.Stats().Sockets == 1 })
	for _, l := range *srv.loopSet.Load() {
		onLoop(l, func() {
			l.wheel.each(func(s *Socket) { _ = s.conn.SetWriteBuffer(4096) })
		})
	}
	batch := bytes.Repeat(wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpPing, bytes.Repeat([]byte("p"), 125), testMask), 1000)
	go func() {
		for range 80 {
			c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.conn.Write(batch); err != nil {
				return
			}
		}
	}()
	waitFor(t, "slow consumer", func() bool { return srv.Stats().SlowConsumers == 1 })
}

// holdRooms hands joins to the test.
type holdRooms struct {
	Echo
	joins  chan *Join
	closed atomic.Int32
}

func (r *holdRooms) Join(j *Join)                      { r.joins <- j }
func (r *holdRooms) Closed(*Socket, int, string, bool) { r.closed.Add(1) }

// TestAcceptAfterClientReset: the room accepts a client that has already
// reset its connection. den once opened the socket anyway: counted open
// for ever, never Closed, back in the wheel.
func TestAcceptAfterClientReset(t *testing.T) {
	r := &holdRooms{joins: make(chan *Join, 1)}
	srv := startServer(t, Config{Rooms: r})
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(request("/rooms/echo/x", hUpgrade, hConn, hKey, hVersion))
	j := <-r.joins
	l := j.s.loop
	release := blockLoop(l)
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // RST
	if j.Accept() == nil {
		t.Fatal("Accept refused")
	}
	release()
	waitFor(t, "the socket gone and Closed once", func() bool {
		st := srv.Stats()
		return st.Conns == 0 && st.Sockets == 0 && r.closed.Load() == 1
	})
	var inWheel int
	onLoop(l, func() { inWheel = l.wheel.count })
	if inWheel != 0 {
		t.Fatalf("%d sockets left in the wheel", inWheel)
	}
}

// TestLargeWelcome: a room that sends a message of the largest size right
// after Accept once tripped the queue limit and lost the 101.
func TestLargeWelcome(t *testing.T) {
	srv := startServer(t, Config{Rooms: bigWelcome{}})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/x")
	if f := c.mustRead(); len(f.payload) != 1<<20-16 {
		t.Fatalf("welcome of %d bytes", len(f.payload))
	}
}

type bigWelcome struct{ Echo }

func (bigWelcome) Join(j *Join) { _ = j.Accept().Send(false, make([]byte, 1<<20-16)) }

// TestShutdownWhileRoomDecides: a join answered after shutdown's sweep
// passed it once opened and stayed open, holding Shutdown to its deadline.
func TestShutdownWhileRoomDecides(t *testing.T) {
	r := &holdRooms{joins: make(chan *Join, 1)}
	srv, err := New(Config{Rooms: r, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, srv)
	c.send(request("/rooms/echo/x", hUpgrade, hConn, hKey, hVersion))
	j := <-r.joins
	release := blockLoop(j.s.loop)
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res <- srv.Shutdown(ctx)
	}()
	waitFor(t, "shutdown begun", func() bool { return !srv.Ready() })
	j.Accept()
	release()
	if resp := c.response(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	f := c.mustRead()
	if code, _ := wsframe.ParseClose(f.payload); f.op != wsframe.OpClose || code != wsframe.CloseServiceRestart {
		t.Fatalf("got %v %d, want close 1012", f.op, code)
	}
	c.frame(true, 0, wsframe.OpClose, closePayload(1012, ""))
	c.expectEOF()
	if err := <-res; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestHostileChunkedBodies: a chunk size that overflowed once panicked the
// loop and killed the process; endless trailers were buffered without end.
func TestHostileChunkedBodies(t *testing.T) {
	srv := startServer(t, Config{EventLoops: 1})
	canary := dialRaw(t, srv)
	canary.upgrade("/rooms/echo/canary")
	post := "POST /x HTTP/1.1\r\nHost: den\r\nTransfer-Encoding: chunked\r\n\r\n"

	c := dialRaw(t, srv)
	c.send([]byte(post + "1\r\nA\r\n7fffffffffffffff\r\nxx\r\n"))
	if resp := c.response(); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("overflowing chunk size: %d", resp.StatusCode)
	}

	c = dialRaw(t, srv)
	c.send([]byte(post + "1\r\nA\r\n0\r\n"))
	line := []byte("X-Pad: " + strings.Repeat("a", 1000) + "\r\n")
	go func() {
		for range 2000 { // 2 MB of trailers for a 1 MiB body limit
			c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.conn.Write(line); err != nil {
				return
			}
		}
	}()
	if resp := c.response(); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("endless trailers: %d", resp.StatusCode)
	}

	canary.frame(true, 0, wsframe.OpText, []byte("alive"))
	if f := canary.mustRead(); string(f.payload) != "alive" {
		t.Fatalf("canary: %q", f.payload)
	}
}

// bigHandler answers /big with 8 MiB and /abort with half an answer.
func bigHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) {
		w.Write(bytes.Repeat([]byte("b"), 8<<20))
	})
	mux.HandleFunc("GET /abort", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"items":[1,2,`))
		panic(http.ErrAbortHandler)
	})
	return mux
}

// TestLargeResponsesArriveWhole: den once closed a connection with part
// of a response still in its buffer (gnet's close writes once and drops
// the rest), and closed kept-alive connections whose answer was large.
func TestLargeResponsesArriveWhole(t *testing.T) {
	srv := startServer(t, Config{Handler: bigHandler()})
	c := dialRaw(t, srv)
	for _, close := range []bool{false, false, true} {
		req := request("/big")
		if close {
			req = request("/big", "Connection: close")
		}
		c.send(req)
		resp := c.response()
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || len(b) != 8<<20 {
			t.Fatalf("close=%v: status %d, %d bytes of %d", close, resp.StatusCode, len(b), 8<<20)
		}
	}
	c.expectEOF()
}

// TestAbortedHandler: a handler that aborts mid-answer must not look like
// a complete response.
func TestAbortedHandler(t *testing.T) {
	srv := startServer(t, Config{Handler: bigHandler()})
	c := dialRaw(t, srv)
	c.send(request("/abort"))
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(c.br, nil); err == nil {
		b, err := io.ReadAll(resp.Body)
		t.Fatalf("got a response: %d %q %v", resp.StatusCode, b, err)
	}
}

// TestLargeMessagesAndControl: an 8 MiB echo followed by a ping, then by
// the client's close, all written before reading: the whole echo, then the
// pong, then the close reply arrive. den once cut such a client off as a
// slow consumer, and once lost the tail behind the close.
func TestLargeMessagesAndControl(t *testing.T) {
	srv := startServer(t, Config{MaxMessageBytes: 16 << 20})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/big")
	msg := bytes.Repeat([]byte("m"), 8<<20)
	var b []byte
	b = wsframe.AppendMaskedFrame(b, true, 0, wsframe.OpBinary, msg, testMask)
	b = wsframe.AppendMaskedFrame(b, true, 0, wsframe.OpPing, []byte("p"), testMask)
	b = wsframe.AppendMaskedFrame(b, true, 0, wsframe.OpClose, closePayload(1000, ""), testMask)
	go c.conn.Write(b)
	if f := c.mustRead(); f.op != wsframe.OpBinary || len(f.payload) != len(msg) {
		t.Fatalf("first: %v of %d bytes", f.op, len(f.payload))
	}
	if f := c.mustRead(); f.op != wsframe.OpPong {
		code, reason := wsframe.ParseClose(f.payload)
		t.Fatalf("second: %v (%d %q), want the pong", f.op, code, reason)
	}
	if f := c.mustRead(); f.op != wsframe.OpClose {
		t.Fatalf("third: %v, want the close reply", f.op)
	}
	c.expectEOF()
}

// TestMaxSizeWelcome: a room may send the largest message right after
// Accept, even when the kernel cannot take it all at once.
func TestMaxSizeWelcome(t *testing.T) {
	srv := startServer(t, Config{Rooms: hugeWelcome{}, MaxMessageBytes: 16 << 20})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/x")
	if f := c.mustRead(); f.op != wsframe.OpBinary || len(f.payload) != 16<<20 {
		code, reason := wsframe.ParseClose(f.payload)
		t.Fatalf("welcome: %v of %d bytes (%d %q)", f.op, len(f.payload), code, reason)
	}
}

type hugeWelcome struct{ Echo }

func (hugeWelcome) Join(j *Join) { _ = j.Accept().Send(false, make([]byte, 16<<20)) }

// TestPanicLeavesLoopWorking: after a panic on client input was recovered,
// the loop once never flushed again, so frames for idle sockets waited for
// unrelated input.
func TestPanicLeavesLoopWorking(t *testing.T) {
	srv := startServer(t, Config{EventLoops: 1, Logger: zap.NewNop(), Subprotocol: func(kind string, _ []string) string {
		if kind == "boom" {
			panic("subprotocol hook bug")
		}
		return ""
	}})
	idle := dialRaw(t, srv)
	idle.upgrade("/rooms/echo/idle")
	waitFor(t, "open", func() bool { return srv.Stats().Sockets == 1 })

	bad := dialRaw(t, srv)
	bad.send(request("/rooms/boom/x", hUpgrade, hConn, hKey, hVersion, "Sec-WebSocket-Protocol: p"))
	bad.expectEOF()

	var s *Socket
	for _, l := range *srv.loopSet.Load() {
		onLoop(l, func() {
			l.wheel.each(func(x *Socket) {
				if x.state == stateOpen {
					s = x
				}
			})
		})
	}
	if err := s.Send(true, []byte("still flushing")); err != nil {
		t.Fatal(err)
	}
	if f := idle.mustRead(); string(f.payload) != "still flushing" {
		t.Fatalf("got %q", f.payload)
	}
}

// TestBurstOverLimitBeforeOpen: a room that queues more than the write
// queue holds before the 101 is written once left the socket open and
// mute for ever: frames refused, nothing sent, no close.
func TestBurstOverLimitBeforeOpen(t *testing.T) {
	srv := startServer(t, Config{Rooms: burstRoom{}, WriteQueueBytes: 64 << 10})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/x")
	c.expectCloseAfterData(wsframe.ClosePolicyViolation)
	waitFor(t, "slow consumer counted", func() bool { return srv.Stats().SlowConsumers == 1 })
}

type burstRoom struct{ Echo }

func (burstRoom) Join(j *Join) {
	s := j.Accept()
	for range 3 {
		_ = s.Send(false, make([]byte, 40<<10))
	}
}

// TestPanicInPipelinedRequest: input read from a task (the next pipelined
// request, after a response) is guarded too; a panic there once killed
// the process.
func TestPanicInPipelinedRequest(t *testing.T) {
	srv := startServer(t, Config{Logger: zap.NewNop(), Subprotocol: func(kind string, _ []string) string {
		if kind == "boom" {
			panic("subprotocol hook bug")
		}
		return ""
	}})
	c := dialRaw(t, srv)
	c.send(append(request("/livez"), request("/rooms/boom/x", hUpgrade, hConn, hKey, hVersion, "Sec-WebSocket-Protocol: p")...))
	if resp := c.response(); resp.StatusCode != 200 {
		t.Fatalf("first response %d", resp.StatusCode)
	}
	c.expectEOF()
	other := dialRaw(t, srv)
	other.upgrade("/rooms/echo/alive")
}

// TestSlowReaderGetsEverything: a client that reads steadily but slowly
// once had large answers cut off at a timeout counted from the start. The
// server's socket buffer is small, so den holds most of the answer, and
// den's clock is a fake one that moves a tick per 32 KiB read: the read
// outlasts six close timeouts while never pausing one, however the
// machine schedules the test.
func TestSlowReaderGetsEverything(t *testing.T) {
	const (
		size    = 2 << 20
		tick    = 20 * time.Millisecond
		perTick = 32 << 10
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) { w.Write(bytes.Repeat([]byte("b"), size)) })
	fake := clock.NewFake(time.Unix(0, 0))
	srv := startServer(t, Config{Handler: mux, Clock: fake, WriteQueueBytes: 16 << 10, MaxMessageBytes: 16 << 10,
		Tick: tick, CloseTimeout: 10 * tick, HandshakeTimeout: 10 * tick})
	for _, hdr := range []string{"X-Keep: alive", "Connection: close"} {
		c := dialRaw(t, srv)
		c.conn.(*net.TCPConn).SetReadBuffer(16 << 10)
		c.send(request("/livez")) // open the connection on the loop
		c.response()
		for _, l := range *srv.loopSet.Load() {
			onLoop(l, func() { l.wheel.each(func(s *Socket) { _ = s.conn.SetWriteBuffer(16 << 10) }) })
		}
		c.send(request("/big", hdr))
		c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("%s: %v", hdr, err)
		}
		got, sinceTick := 0, 0
		buf := make([]byte, 8<<10)
		for {
			n, err := resp.Body.Read(buf)
			got += n
			if err != nil {
				break
			}
			if sinceTick += n; sinceTick >= perTick {
				sinceTick = 0
				advanceTick(t, srv, fake, tick)
			}
		}
		if got != size {
			t.Fatalf("%s: %d of %d bytes", hdr, got, size)
		}
	}
}

// TestBodyLeavesGnetBuffer: a body is taken out of gnet's buffer as it
// arrives, so a client dribbling a large body does not make den copy the
// whole buffer on every read.
func TestBodyLeavesGnetBuffer(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.send([]byte("POST /x HTTP/1.1\r\nHost: den\r\nContent-Length: 400000\r\n\r\n"))
	c.send(make([]byte, 300000))
	waitFor(t, "body taken from gnet's buffer", func() bool {
		held := -1
		for _, l := range *srv.loopSet.Load() {
			onLoop(l, func() {
				l.wheel.each(func(s *Socket) {
					if b := l.bodies[s]; b != nil && len(b.body) == 300000 {
						held = s.conn.InboundBuffered()
					}
				})
			})
		}
		return held == 0
	})
}

// TestPeerReasonWhileLingering: a socket that lingers after its peer's
// close frame once lost that peer's reason to another socket's close.
func TestPeerReasonWhileLingering(t *testing.T) {
	r := &recRooms{}
	srv := startServer(t, Config{Rooms: r, EventLoops: 1, MaxMessageBytes: 4 << 20, Tick: 50 * time.Millisecond})
	a := dialRaw(t, srv)
	a.conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	a.upgrade("/rooms/echo/a")
	waitFor(t, "open", func() bool { return srv.Stats().Sockets == 1 })
	for _, l := range *srv.loopSet.Load() {
		onLoop(l, func() { l.wheel.each(func(s *Socket) { _ = s.conn.SetWriteBuffer(64 << 10) }) })
	}
	// A's echo backs up in den, so after its close den lingers.
	var msg []byte
	msg = wsframe.AppendMaskedFrame(msg, true, 0, wsframe.OpBinary, make([]byte, 1<<20), testMask)
	msg = wsframe.AppendMaskedFrame(msg, true, 0, wsframe.OpClose, closePayload(4001, "reason-of-A"), testMask)
	go a.conn.Write(msg)
	waitFor(t, "A lingering", func() bool {
		lingering := false
		for _, l := range *srv.loopSet.Load() {
			onLoop(l, func() { l.wheel.each(func(s *Socket) { lingering = lingering || s.state == stateLinger }) })
		}
		return lingering
	})
	b := dialRaw(t, srv)
	b.upgrade("/rooms/echo/b")
	b.frame(true, 0, wsframe.OpClose, closePayload(4002, "reason-of-B"))
	b.expectClose(4002)
	for { // A reads everything, then den closes it
		if _, err := a.read(); err != nil {
			break
		}
	}
	waitFor(t, "both closed", func() bool { return len(r.events()) == 2 })
	for _, ev := range r.events() {
		if want := map[int]string{4001: "reason-of-A", 4002: "reason-of-B"}[ev.code]; ev.reason != want {
			t.Fatalf("Closed %d with reason %q, want %q", ev.code, ev.reason, want)
		}
	}
}

// A continuation frame whose declared length, added to what its message
// holds, wraps past 2^63 gets 1009 like any message over the cap, and is
// not buffered as it arrives.
func TestRegressContinuationLengthWrapGets1009(t *testing.T) {
	srv := startServer(t, Config{MaxMessageBytes: 1000})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/wrap")
	c.frame(false, 0, wsframe.OpBinary, []byte("x"))
	hdr := binary.BigEndian.AppendUint64([]byte{0x80, 0x80 | 127}, 1<<63-1)
	c.send(append(hdr, testMask[:]...))
	c.send(make([]byte, 64<<10))
	c.expectClose(wsframe.CloseMessageTooBig)
}

// Handshakes RFC 6455 forbids, and a deflate offer den cannot read, are
// the client's mistakes: each gets 400, never a 101 or a 500.
func TestRegressBadHandshakesGet400(t *testing.T) {
	srv := startServer(t, Config{})
	const head = "GET /rooms/echo/k HTTP/1.1\r\nHost: den\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	for _, c := range []struct{ name, fields string }{
		// gobwas checked one key and answered for the other.
		{"two keys", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!\r\n"},
		{"two versions", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\n"},
		// The body would be read as the first frames.
		{"a body", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\nContent-Length: 5\r\n\r\nhello"},
		{"a chunked body", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"},
		{"deflate window 99", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=99\r\n"},
		{"deflate server window without a value", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits\r\n"},
		{"deflate parameter twice", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=9; client_max_window_bits=10\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, srv)
			req := head + c.fields
			if !strings.Contains(c.fields, "\r\n\r\n") {
				req += "\r\n"
			}
			rc.send([]byte(req))
			if resp := rc.response(); resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
		})
	}
	// The server is none the worse.
	rc := dialRaw(t, srv)
	rc.upgrade("/rooms/echo/k")
}

// A Content-Length with a sign is no length: "-0" was read as an empty
// body and the request served, where a proxy in front of den may have
// framed it otherwise.
func TestRegressSignedContentLengthGets400(t *testing.T) {
	srv := startServer(t, Config{})
	rc := dialRaw(t, srv)
	rc.send([]byte("GET /livez HTTP/1.1\r\nHost: den\r\nContent-Length: -0\r\n\r\n"))
	if resp := rc.response(); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
}

package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/den-rooms/den/gateway"
)

// Regressions found in review, each named for what went wrong.

// testLoop is one loop of a one-connection worker, driven by the test.
func testLoop(t testing.TB, url string) *loop {
	t.Helper()
	cfg := Config{Scenario: Idle, URLs: []string{url}, Count: 1, Loops: 1}.withDefaults()
	w, err := newWorker(cfg, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.loops[0].closeAll() })
	return w.loops[0]
}

// drive runs the loop's events, not its ticks, until cond holds.
func drive(t *testing.T, l *loop, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		n, _ := unix.EpollWait(l.epfd, l.events[:], 10)
		for i := range max(n, 0) {
			ev := &l.events[i]
			if c := l.slots[ev.Fd]; c != nil && c.gen == uint32(ev.Pad) {
				l.event(c, ev.Events)
			}
		}
	}
}

// resetOpen opens one connection that the server then resets, and waits
// until the reset is readable but not yet read by the loop.
func resetOpen(t *testing.T) (*loop, *conn) {
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		tc := c.UnderlyingConn().(*net.TCPConn)
		_ = tc.SetLinger(0)
		_ = tc.Close()
	})
	l := testLoop(t, "ws://"+addr+"/x")
	l.dial(0, time.Now().UnixNano())
	var c *conn
	drive(t, l, func() bool {
		if len(l.open) == 1 {
			c = l.open[0]
			return true
		}
		return false
	})
	fds := []unix.PollFd{{Fd: c.fd, Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 10_000); n != 1 || err != nil {
		t.Fatalf("the reset never arrived: %v", err)
	}
	return l, c
}

func TestHangUpOfResetConnectionCountsOnce(t *testing.T) {
	l, c := resetOpen(t)
	l.hangUp(c)
	s := l.stats
	if s.opened.Load() != 1 || s.lost.Load()+s.closed.Load() != 1 {
		t.Fatalf("opened %d lost %d closed %d: one connection must end once", s.opened.Load(), s.lost.Load(), s.closed.Load())
	}
}

func TestFailedWriteIsNotCountedSent(t *testing.T) {
	l, c := resetOpen(t)
	if l.sendData(c, []byte("x")) || c.state == stOpen {
		t.Fatal("a write to a reset connection succeeded")
	}
	if sent := l.stats.sent.Load(); sent != 0 {
		t.Fatalf("sent %d: the failed write was counted", sent)
	}
	if l.stats.lost.Load() != 1 {
		t.Fatalf("lost %d, want 1", l.stats.lost.Load())
	}
}

func TestSplitHeaderKeepsSmallBuffer(t *testing.T) {
	l := testLoop(t, "ws://127.0.0.1:1/x")
	c := &conn{fd: -1, state: stOpen, openPos: -1, sendPos: -1}
	now := time.Now().UnixNano()
	l.received(c, []byte{0x81}, now) // the first byte of a header
	p := []byte{0x05, 'h', 'e', 'l', 'l', 'o'}
	for len(p) < 60000 {
		p = append(p, 0x81, 100)
		p = append(p, strings.Repeat("y", 100)...)
	}
	p = append(p, 0x81) // and the next header split again
	l.received(c, p, now)
	if len(c.in) != 1 || cap(c.in) > 256 {
		t.Fatalf("c.in len %d cap %d: one pending byte must not keep a read's buffer", len(c.in), cap(c.in))
	}
}

func TestSnapshotNeverShowsNegativeOpen(t *testing.T) {
	s := newLoopStats()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			s.opened.Add(1)
			s.closed.Add(1)
		}
	}()
	errs, closes := map[string]int64{}, map[string]int64{}
	lat, con, lag := newHist(), newHist(), newHist()
	for i := 0; i < 20000; i++ {
		var c Counters
		s.collect(&c, errs, closes, lat, con, lag)
		if c.Open() < 0 {
			stop.Store(true)
			t.Fatalf("snapshot %d: open %d", i, c.Open())
		}
	}
	stop.Store(true)
	<-done
}

func TestInterruptCountsDialsInFlight(t *testing.T) {
	// A server that accepts TCP and never answers the handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			accepted <- struct{}{}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for range 10 {
			<-accepted
		}
		cancel()
	}()
	res, err := Run(ctx, Config{Scenario: Idle, URLs: []string{"ws://" + ln.Addr().String() + "/x"}, Count: 10, Loops: 1,
		Duration: time.Minute, Interval: 50 * time.Millisecond}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Counters
	if c.Dials != 10 || c.Aborted != 10 || c.Failed != 0 || !res.Interrupted {
		t.Fatalf("counters %+v: want 10 dials, all aborted by the interrupt", c)
	}
}

// slowFanout echoes each message to its sender at once and to the room's
// other members later, as a slow fan-out would.
type slowFanout struct {
	mu    sync.Mutex
	conns map[*websocket.Conn]*sync.Mutex
}

func (h *slowFanout) serve(c *websocket.Conn, _ *http.Request) {
	wmu := &sync.Mutex{}
	h.mu.Lock()
	if h.conns == nil {
		h.conns = map[*websocket.Conn]*sync.Mutex{}
	}
	h.conns[c] = wmu
	h.mu.Unlock()
	defer func() { h.mu.Lock(); delete(h.conns, c); h.mu.Unlock() }()
	for {
		op, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		wmu.Lock()
		_ = c.WriteMessage(op, msg)
		wmu.Unlock()
		go func() {
			time.Sleep(300 * time.Millisecond)
			h.mu.Lock()
			defer h.mu.Unlock()
			for m, mu := range h.conns {
				if m != c {
					mu.Lock()
					_ = m.WriteMessage(op, msg)
					mu.Unlock()
				}
			}
		}()
	}
}

func TestBroadcastDrainWaitsForDeliveriesNotEchoes(t *testing.T) {
	h := &slowFanout{}
	addr := gorillaServer(t, h.serve)
	res := run(t, Config{
		Scenario: Broadcast, URLs: []string{"ws://" + addr + "/r/{room}"},
		Rooms: 1, Members: 2, Senders: 1, MsgRate: 100, Messages: 5, Drain: 10 * time.Second,
	}, Options{})
	if res.Counters.Delivered != 5 || res.Counters.Echoed != 5 || res.missing() != 0 {
		t.Fatalf("counters %+v missing %d: the drain must wait for the 5 deliveries", res.Counters, res.missing())
	}
}

func TestSlowMetricsDoNotFailTheRun(t *testing.T) {
	addr := startDen(t, gateway.Config{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	var n atomic.Int32
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 2 {
			<-r.Context().Done() // hangs until the client gives up
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer metrics.Close()
	res, err := Run(context.Background(), Config{Scenario: Idle, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"}, Count: 5,
		Duration: 2 * time.Second, Interval: 100 * time.Millisecond, Loops: 1}, Options{MetricsURLs: []string{metrics.URL}})
	if res == nil || res.Counters.Opened != 5 || res.Counters.Closed != 5 {
		t.Fatalf("result %+v err %v: a hanging metrics endpoint must not cost the run its counts", res, err)
	}
	if err == nil || !strings.Contains(err.Error(), "sampling the server") {
		t.Fatalf("err %v: want the failed hold sample reported", err)
	}
}

func TestBrokenWorkerIsStopped(t *testing.T) {
	var cmds []*exec.Cmd
	var mu sync.Mutex
	_, err := Run(context.Background(), Config{Scenario: Idle, URLs: []string{"ws://127.0.0.1:1/x"}, Count: 2, Workers: 2,
		Duration: 5 * time.Second, Interval: 100 * time.Millisecond, Loops: 1},
		Options{WorkerCommand: func() *exec.Cmd {
			cmd := exec.Command("sh", "-c", "echo garbage; exec yes '{}'")
			mu.Lock()
			cmds = append(cmds, cmd)
			mu.Unlock()
			return cmd
		}})
	if err == nil {
		t.Fatal("a worker that speaks garbage must fail the run")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range cmds {
		if c.ProcessState == nil {
			t.Fatalf("worker %d was not waited for", c.Process.Pid)
		}
	}
}

func TestFailedWorkersGiveNoNegativeRamp(t *testing.T) {
	res, err := Run(context.Background(), Config{Scenario: Idle, URLs: []string{"ws://127.0.0.1:1/x"}, Count: 2, Workers: 2,
		Duration: 5 * time.Second, Interval: 100 * time.Millisecond, Loops: 1},
		Options{WorkerCommand: func() *exec.Cmd { return exec.Command("sh", "-c", "head -n1 >/dev/null") }})
	if err == nil || res == nil || res.RampSeconds < 0 {
		t.Fatalf("err %v result %+v: want an error and a ramp that is not negative", err, res)
	}
	if err := res.WriteJSON(&bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
}

func TestStoppedByNamesTimeWhenDialsRanShort(t *testing.T) {
	r := &Result{Target: 100, PeakOpen: 38, Counters: Counters{Dials: 39, Opened: 38, Failed: 1},
		Errors: map[string]int64{"http_503": 1}}
	if got := stoppedBy(r); !strings.Contains(got, "--duration") {
		t.Fatalf("stopped by %q: 39 of 100 dialled is the clock's doing, not one 503's", got)
	}
}

func TestHangUpSendsValidClose(t *testing.T) {
	got := make(chan error, 1)
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		_, _, err := c.ReadMessage()
		got <- err
	})
	l := testLoop(t, "ws://"+addr+"/x")
	l.dial(0, time.Now().UnixNano())
	drive(t, l, func() bool { return len(l.open) == 1 })
	l.hangUp(l.open[0])
	var ce *websocket.CloseError
	if err := <-got; !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("server read %v; want a close frame with 1000", err)
	}
}

// TestHoldSampleTakenBeforeClose serves metrics whose "memory" is the
// server's open connections, 50 ms late: the hold's sample must still see
// every connection open.
func TestHoldSampleTakenBeforeClose(t *testing.T) {
	var open atomic.Int64
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		open.Add(1)
		defer open.Add(-1)
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	})
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		fmt.Fprintf(w, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %d\n", open.Load())
	}))
	defer metrics.Close()
	res := run(t, Config{Scenario: Idle, URLs: []string{"ws://" + addr + "/x"}, Count: 5, Hold: 300 * time.Millisecond},
		Options{MetricsURLs: []string{metrics.URL}})
	if s := res.Server; s.OpenAtHold != 5 || s.HoldRSS != 5 {
		t.Fatalf("hold sample %+v: want it taken with all 5 connections open", *s)
	}
}

func TestStoppedByNamesConnectionsStillOpening(t *testing.T) {
	r := &Result{Target: 3, Interrupted: false, Counters: Counters{Dials: 3, Aborted: 3}}
	if got := stoppedBy(r); !strings.Contains(got, "still opening") {
		t.Fatalf("stopped by %q: want the aborted dials named", got)
	}
}

// TestSnapshotPhaseCoversItsCounts plays a loop that sends under traffic
// and then publishes the drain: a snapshot that shows the drain must count
// every message sent before it.
func TestSnapshotPhaseCoversItsCounts(t *testing.T) {
	cfg := Config{Scenario: Idle, URLs: []string{"ws://127.0.0.1:1/x"}, Count: 1, Loops: 1}.withDefaults()
	for iter := 0; iter < 50; iter++ {
		w, err := newWorker(cfg, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		l := w.loops[0]
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 2000 {
				l.stats.sent.Add(1)
				l.seen.Store(phaseTraffic)
			}
			l.seen.Store(phaseDrain)
		}()
		for {
			s := w.snapshot(false)
			if s.Phase >= phaseDrain {
				if s.Counters.Sent != 2000 {
					t.Fatalf("iteration %d: the drain is shown with %d of 2000 sent", iter, s.Counters.Sent)
				}
				break
			}
		}
		<-done
		l.closeAll()
	}
}

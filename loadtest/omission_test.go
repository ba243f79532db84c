package loadtest

import (
	"bytes"
	"context"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// stall is how long a server or client stops, once, in the middle of a
// rate-driven run. Each message due in it waits for its end, so a lower
// bound on the latencies recorded is a property of the accounting (time
// from when each message was due), not of the machine's speed.
const stall = 500 * time.Millisecond

// stallingEcho echoes every message, but once it has read the after-th
// message (over all connections) it answers nothing for d: each
// connection's handler, having read its next message, waits that out
// before it echoes the message and reads on.
func stallingEcho(after int64, d time.Duration) func(*websocket.Conn, *http.Request) {
	var reads, until atomic.Int64
	return func(c *websocket.Conn, _ *http.Request) {
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if reads.Add(1) == after {
				until.Store(time.Now().Add(d).UnixNano())
			}
			if d := time.Until(time.Unix(0, until.Load())); d > 0 {
				time.Sleep(d)
			}
			if c.WriteMessage(op, msg) != nil {
				return
			}
		}
	}
}

// checkTimetable checks a rate-driven run's account of its sends: every
// send the rate called for over the traffic phase was scheduled, each was
// sent, and each reply was timed, none lost to the stall.
func checkTimetable(t *testing.T, res *Result, senders int, every time.Duration) {
	t.Helper()
	c := res.Counters
	t.Logf("counters %+v traffic %.3fs latency %+v", c, res.TrafficSeconds, res.Latency)
	// Each sender's first slot and the loops' view of the phase change
	// may each move its count by one, and worker processes see the phase
	// change later than the coordinator that times the phase, more so on
	// a busy machine: a tenth is allowed. Sends lost to a stall are far
	// more (a third of the client-stall test's run).
	due := float64(senders) * res.TrafficSeconds / every.Seconds()
	if math.Abs(float64(c.Scheduled)-due) > max(float64(2*senders), due/10) {
		t.Errorf("scheduled %d sends, the rate calls for %.0f in %.3fs", c.Scheduled, due, res.TrafficSeconds)
	}
	if c.Sent != c.Scheduled || c.Skipped != 0 || c.Unsent != 0 {
		t.Errorf("sent %d of %d scheduled (skipped %d, unsent %d): the stall's sends were dropped, not sent late",
			c.Sent, c.Scheduled, c.Skipped, c.Unsent)
	}
	if res.Latency.Count != c.Sent {
		t.Errorf("latency n=%d for %d sends: replies went untimed", res.Latency.Count, c.Sent)
	}
	if res.LatencyFrom != LatencyFromSchedule {
		t.Errorf("latency_from %q, want %q", res.LatencyFrom, LatencyFromSchedule)
	}
	if res.SendLag == nil || res.SendLag.Count != c.Sent {
		t.Errorf("send lag %+v for %d sends: want each send's lag", res.SendLag, c.Sent)
	}
}

// A server that stops reading for 500 ms under idle pings every 50 ms:
// each ping due in the stall is answered after it, and each must be timed
// from when it was due. The client timed only the first ping while one
// was unanswered, so the stall's other pings went unrecorded (and their
// late replies answered later pings).
func TestPingsDueInAServerStallAreTimed(t *testing.T) {
	const conns, every = 4, 50 * time.Millisecond
	addr := gorillaServer(t, stallingEcho(5*conns, stall))
	res := run(t, Config{Scenario: Idle, URLs: []string{"ws://" + addr + "/{room}"}, Count: conns,
		PingEvery: every, Hold: 1500 * time.Millisecond}, Options{})
	// The ping due as the stall began waited for all of it, less a
	// period by which it may have been due before the server's read.
	if floor := (stall - every).Seconds() * 1000; res.Latency.Max < floor {
		t.Errorf("latency max %.1f ms, want at least %.0f ms: the stall is not in the latency", res.Latency.Max, floor)
	}
	checkTimetable(t, res, conns, every)
}

// A server that stops reading for 1.5 s under echo at --msg-rate, with
// messages big enough (5 MB/s) that the client's socket and then its
// backlog pass their bounds in the stall: the sends held back must go out
// as the backlog drains, each timed from when it was due. The client
// skipped them: sent never, and timed never. The stall is long, and the
// rate low, so that a client and server built with -race catch up after
// it.
func TestSendsHeldBackByABacklogAreSentLateAndTimed(t *testing.T) {
	const rate, size, long = 20, 256 << 10, 3 * stall
	addr := gorillaServerWith(t, stallingEcho(rate/4, long), func(s *http.Server) {
		// A small, fixed receive buffer, so the stall fills the
		// client's socket and then its backlog.
		s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
			return ctx
		}
	})
	res := run(t, Config{Scenario: Echo, URLs: []string{"ws://" + addr + "/{room}"}, Count: 1,
		MsgRate: rate, Size: size, Hold: 4 * time.Second}, Options{})
	if floor := (long - time.Second/rate).Seconds() * 1000; res.Latency.Max < floor {
		t.Errorf("latency max %.1f ms, want at least %.0f ms: the stall is not in the latency", res.Latency.Max, floor)
	}
	if res.Counters.Echoed != res.Counters.Sent {
		t.Errorf("echoed %d of %d", res.Counters.Echoed, res.Counters.Sent)
	}
	checkTimetable(t, res, 1, time.Second/rate)
}

// The load client itself stops for 500 ms (its worker processes are
// sent SIGSTOP, as a host that takes the CPU away or a long pause would):
// the sends due in the stall must go out when it ends, each timed from
// when it was due. The client caught up at most 100 ms of them, stamped
// with the time it got to them, and dropped the rest uncounted.
func TestSendsDueInAClientStallAreSentLateAndTimed(t *testing.T) {
	const conns, rate = 4, 100
	var reads atomic.Int64
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if reads.Add(1) == conns*rate/4 {
				go stopWorkers(t)
			}
			if c.WriteMessage(op, msg) != nil {
				return
			}
		}
	})
	// The stall begins a quarter second into the traffic phase, with
	// three quarters of a second of sending after it.
	res := run(t, Config{Scenario: Echo, URLs: []string{"ws://" + addr + "/{room}"}, Count: conns,
		MsgRate: rate, Hold: 1500 * time.Millisecond, Workers: 2, Loops: 1},
		Options{WorkerCommand: testWorkerCommand})
	if reads.Load() < conns*rate/4 {
		t.Fatalf("the server read %d messages, and the client never stalled", reads.Load())
	}
	// The slots due in the stall's first half, a sixth of the run's,
	// each waited at least half the stall.
	if floor := (stall / 2).Seconds() * 1000; res.Latency.P90 < floor {
		t.Errorf("latency p90 %.1f ms, want at least %.0f ms: the stall's sends were timed from when they went out", res.Latency.P90, floor)
	}
	if res.Counters.Echoed != res.Counters.Sent {
		t.Errorf("echoed %d of %d", res.Counters.Echoed, res.Counters.Sent)
	}
	// The sends due in the stall went out after it: the client's own share
	// of their latency shows as send lag.
	if floor := (stall / 2).Seconds() * 1000; res.SendLag == nil || res.SendLag.Max < floor {
		t.Errorf("send lag %+v, want a max of at least %.0f ms: the stall's sends went out late", res.SendLag, floor)
	}
	checkTimetable(t, res, conns, time.Second/rate)
}

// stopWorkers stops this test's worker processes for the stall, then
// lets them go on.
func stopWorkers(t *testing.T) {
	pids := workerPIDs(t)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	time.AfterFunc(stall, func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
}

// workerPIDs finds the worker processes this test process started.
func workerPIDs(t *testing.T) []int {
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Error(err)
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	var pids []int
	for _, p := range procs {
		stat, err := os.ReadFile(p + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(stat[i+1:])
		if len(f) < 2 || string(f[1]) != self {
			continue
		}
		env, _ := os.ReadFile(p + "/environ")
		if bytes.Contains(env, []byte(workerEnv+"=1")) {
			pid, _ := strconv.Atoi(filepath.Base(p))
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		t.Error("no worker process found")
	}
	return pids
}

// A server that stops reading for good: the sends its backlog held back
// through the end of the run are never sent, and must be accounted for,
// not dropped from the count of what the rate called for.
func TestSendsNeverMadeAreCounted(t *testing.T) {
	const rate, size = 20, 256 << 10
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	var reads atomic.Int64
	addr := gorillaServerWith(t, func(c *websocket.Conn, _ *http.Request) {
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if reads.Add(1) == rate/4 {
				<-done
				return
			}
			if c.WriteMessage(op, msg) != nil {
				return
			}
		}
	}, func(s *http.Server) {
		s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
			return ctx
		}
	})
	res := run(t, Config{Scenario: Echo, URLs: []string{"ws://" + addr + "/{room}"}, Count: 1,
		MsgRate: rate, Size: size, Hold: 2 * time.Second, Drain: 100 * time.Millisecond}, Options{})
	c := res.Counters
	t.Logf("counters %+v traffic %.3fs", c, res.TrafficSeconds)
	if c.Skipped == 0 || c.Sent+c.Skipped+c.Unsent != c.Scheduled {
		t.Errorf("scheduled %d, sent %d, skipped %d, unsent %d: want some skipped, and all accounted for",
			c.Scheduled, c.Sent, c.Skipped, c.Unsent)
	}
	if due := rate * res.TrafficSeconds; math.Abs(float64(c.Scheduled)-due) > 2 {
		t.Errorf("scheduled %d sends, the rate calls for %.0f in %.3fs", c.Scheduled, due, res.TrafficSeconds)
	}
	var sum bytes.Buffer
	res.WriteSummary(&sum)
	if !bytes.Contains(sum.Bytes(), []byte("skipped (the server was not reading)")) {
		t.Errorf("the summary does not account for the sends never made:\n%s", sum.String())
	}
}

// A loop waits for its next timed send on a timer of its own, set for the
// send's due time: epoll_wait's timeout counts whole milliseconds, so a
// loop woken only by it sent up to a tick late, and the tick was timed as
// the server's.
func TestLoopWakesForItsNextTimedSend(t *testing.T) {
	w := &worker{cfg: Config{Scenario: Echo, MsgRate: 10}, totalLoops: 1}
	l, err := newLoop(w, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l.epfd)
	defer unix.Close(l.timer)
	armedIn := func() time.Duration {
		var spec unix.ItimerSpec
		if err := unix.TimerfdGettime(l.timer, &spec); err != nil {
			t.Fatal(err)
		}
		return time.Duration(unix.TimespecToNsec(spec.Value))
	}

	l.senders = []*conn{{}}
	l.startTimetable(time.Now().UnixNano())
	due := time.Now().Add(time.Hour)
	l.senders[0].due = due.UnixNano()
	l.armTimer()
	left := time.Until(due)
	if in := armedIn(); in > left || in < left-time.Minute {
		t.Fatalf("the loop's timer is armed to go off in %v, want at the next send's due time, %v from now", in, left)
	}

	l.timetable = false
	l.armTimer()
	if in := armedIn(); in != 0 {
		t.Fatalf("with nothing timed to send the timer goes off in %v, want it disarmed", in)
	}
}

// Wake over four loops at 4 rooms/s: the rooms must be woken one every
// 250 ms, as --wake-rate says, not four at once every second. Each loop
// kept its own schedule from the end of --wake-idle at a quarter of the
// rate, so the loops woke a room each at the same moment, one burst per
// loop period. The messages' stamps (when each wake was due) are checked,
// not when they came, so a slow machine cannot bunch them up or spread
// them out.
func TestWakesAreSpreadOverTheLoops(t *testing.T) {
	const rooms, rate, loops = 8, 4, 4
	var mu sync.Mutex
	var due []int64
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if ts, _, ok := parseStamp(msg); ok {
				mu.Lock()
				due = append(due, ts)
				mu.Unlock()
			}
			if c.WriteMessage(op, msg) != nil {
				return
			}
		}
	})
	res := run(t, Config{Scenario: Wake, URLs: []string{"ws://" + addr + "/{room}"}, Rooms: rooms,
		WakeIdle: 100 * time.Millisecond, WakeRate: rate, Loops: loops, Hold: 5 * time.Second}, Options{})
	if c := res.Counters; c.Sent != rooms || c.Scheduled != rooms || res.Latency.Count != rooms {
		t.Fatalf("counters %+v latency n=%d: want %d rooms woken and timed", c, res.Latency.Count, rooms)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(due)
	// The loops each see the traffic phase begin on their own tick: half
	// a period is allowed for that.
	const every = time.Second / rate
	for i := range due {
		if at := time.Duration(due[i] - due[0]); at < time.Duration(i)*every-every/2 {
			t.Fatalf("wake %d was due %v after the first, want %v (due times %v)", i, at, time.Duration(i)*every, due)
		}
	}
}

// Wakes whose replies are still coming when the hold ends: the drain
// must wait for them, as it does for echoes, deliveries and idle pings,
// or the wakes are counted sent and never timed. The drain ended as
// soon as every worker had seen it begin.
func TestDrainWaitsForWakeReplies(t *testing.T) {
	const rooms, delay = 4, 800 * time.Millisecond
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			time.Sleep(delay)
			if c.WriteMessage(op, msg) != nil {
				return
			}
		}
	})
	res := run(t, Config{Scenario: Wake, URLs: []string{"ws://" + addr + "/{room}"}, Rooms: rooms,
		WakeIdle: 50 * time.Millisecond, WakeRate: 1000, Hold: 300 * time.Millisecond, Drain: 10 * time.Second}, Options{})
	if c := res.Counters; c.Sent != rooms || res.Latency.Count != rooms {
		t.Fatalf("counters %+v latency n=%d: want %d wakes sent, each timed", c, res.Latency.Count, rooms)
	}
}

// Senders whose connections the server ends mid-run: the sends the rate
// called for after that are unsent ("the run or its connection ended
// first"), not left out of scheduled. They were counted only up to the
// moment each connection ended, nearly always none: scheduled fell short
// of what the rate called for, and the summary said "all sent".
func TestSendsOfLostConnectionsAreCountedUnsent(t *testing.T) {
	const conns, rate, lostAfter = 6, 50, 5
	// Every third connection is closed by the server once it has read
	// lostAfter messages.
	var n atomic.Int64
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		lose := n.Add(1)%3 == 0
		for reads := 1; ; reads++ {
			op, msg, err := c.ReadMessage()
			if err != nil || lose && reads == lostAfter {
				return
			}
			if c.WriteMessage(op, msg) != nil {
				return
			}
		}
	})
	check := func(t *testing.T, res *Result, due float64, slack float64) {
		t.Helper()
		c := res.Counters
		t.Logf("counters %+v traffic %.3fs", c, res.TrafficSeconds)
		if c.Lost != conns/3 {
			t.Fatalf("lost %d connections, want %d", c.Lost, conns/3)
		}
		if math.Abs(float64(c.Scheduled)-due) > slack {
			t.Errorf("scheduled %d sends, the rate calls for %.0f", c.Scheduled, due)
		}
		if c.Unsent == 0 || c.Sent+c.Skipped+c.Unsent != c.Scheduled {
			t.Errorf("scheduled %d, sent %d, skipped %d, unsent %d: want the lost connections' sends unsent, all accounted for",
				c.Scheduled, c.Sent, c.Skipped, c.Unsent)
		}
	}
	cfg := Config{Scenario: Echo, URLs: []string{"ws://" + addr + "/{room}"}, Count: conns, MsgRate: rate}
	t.Run("messages", func(t *testing.T) {
		cfg := cfg
		cfg.Messages = 4 * lostAfter
		res := run(t, cfg, Options{})
		// Traffic ends once the senders left have sent theirs: a lost
		// one's last slot may come due just after that, never scheduled.
		check(t, res, conns*float64(cfg.Messages), conns/3)
	})
	t.Run("hold", func(t *testing.T) {
		cfg := cfg
		cfg.Hold = time.Second
		res := run(t, cfg, Options{})
		// As checkTimetable allows.
		due := conns * rate * res.TrafficSeconds
		check(t, res, due, max(2*conns, due/10))
	})
}

// Rate-driven senders on several loops take turns as wakes do: with one
// sender a loop, every loop's first send was due at the moment traffic
// began, and each period brought a burst of as many sends as loops.
func TestSendersAreSpreadOverTheLoops(t *testing.T) {
	const loops, rate = 4, 4
	var mu sync.Mutex
	var first []int64
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		seen := false
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if ts, _, ok := parseStamp(msg); ok && !seen {
				seen = true
				mu.Lock()
				first = append(first, ts)
				mu.Unlock()
			}
			if c.WriteMessage(op, msg) != nil {
				return
			}
		}
	})
	run(t, Config{Scenario: Echo, URLs: []string{"ws://" + addr + "/{room}"}, Count: loops,
		MsgRate: rate, Loops: loops, Hold: 600 * time.Millisecond}, Options{})
	mu.Lock()
	defer mu.Unlock()
	if len(first) != loops {
		t.Fatalf("%d senders sent, want %d", len(first), loops)
	}
	slices.Sort(first)
	// Each loop sees the traffic phase begin on its own tick: half a turn
	// is allowed for that.
	const turn = time.Second / rate / loops
	for i := 1; i < len(first); i++ {
		if gap := time.Duration(first[i] - first[i-1]); gap < turn/2 {
			t.Fatalf("the senders' first sends were due %v apart, want about %v (due times %v)", gap, turn, first)
		}
	}
}

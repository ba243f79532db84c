package loadtest

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/den-rooms/den/gateway"
)

func TestEchoAgainstDen(t *testing.T) {
	addr := startDen(t, gateway.Config{})
	res := run(t, Config{
		Scenario: Echo, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"},
		Count: 50, Messages: 20, Size: 100,
	}, Options{})
	c := res.Counters
	if c.Opened != 50 || c.Failed != 0 || c.Lost != 0 || c.Closed != 50 {
		t.Fatalf("connections %+v: want 50 opened and closed by the client", c)
	}
	if c.Sent != 1000 || c.Echoed != 1000 || c.Received != 1000 || c.Delivered != 0 {
		t.Fatalf("messages %+v: want 1000 sent and echoed", c)
	}
	if res.Latency.Count != 1000 || res.Connect.Count != 50 || res.Expected != 1000 {
		t.Fatalf("latency n=%d connect n=%d expected %d: want 1000, 50, 1000", res.Latency.Count, res.Connect.Count, res.Expected)
	}
	if res.PeakOpen != 50 || res.StoppedBy != "" || res.Interrupted {
		t.Fatalf("peak %d stopped by %q interrupted %v", res.PeakOpen, res.StoppedBy, res.Interrupted)
	}
}

func TestBroadcastCountsEveryDelivery(t *testing.T) {
	h := &hub{}
	addr := gorillaServer(t, h.serve)
	res := run(t, Config{
		Scenario: Broadcast, URLs: []string{"ws://" + addr + "/rooms/{room}"},
		Rooms: 3, Members: 10, Senders: 2, MsgRate: 50, Messages: 10,
	}, Options{})
	c := res.Counters
	// 3 rooms × 2 senders × 10 messages, each to 9 others and back to
	// its sender.
	if c.Opened != 30 || c.Sent != 60 || c.Delivered != 540 || c.Echoed != 60 || c.Received != 600 {
		t.Fatalf("counters %+v: want 30 opened, 60 sent, 540 delivered, 60 echoed", c)
	}
	if res.Expected != 540 || res.missing() != 0 || res.Latency.Count != 600 {
		t.Fatalf("expected %d missing %d latency n=%d", res.Expected, res.missing(), res.Latency.Count)
	}
}

// TestLatencyPercentiles injects known delays: connections whose number
// ends in 0 or 5 are answered after 200 ms, the rest at once, so the
// slowest 20% of round trips take at least 200 ms and the rest far less.
func TestLatencyPercentiles(t *testing.T) {
	const slow = 200 * time.Millisecond
	addr := gorillaServer(t, func(c *websocket.Conn, r *http.Request) {
		var delay time.Duration
		if strings.HasSuffix(r.URL.Path, "0") || strings.HasSuffix(r.URL.Path, "5") {
			delay = slow
		}
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
	res := run(t, Config{
		Scenario: Echo, URLs: []string{"ws://" + addr + "/c/{n}"}, Count: 20, Messages: 10,
	}, Options{})
	l := res.Latency
	if l.Count != 200 {
		t.Fatalf("latency count %d, want 200", l.Count)
	}
	// The slow population's bound is exact: no reply comes before its
	// delay. The fast one only has to stay apart from it.
	ms := float64(slow / time.Millisecond)
	if l.P50 >= ms {
		t.Errorf("p50 %.2fms: want under %.0fms, 80%% of replies are immediate", l.P50, ms)
	}
	if l.P90 < ms || l.P99 < ms || l.P999 < ms || l.Max < ms {
		t.Errorf("p90 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms: want all at least %.0fms", l.P90, l.P99, l.P999, l.Max, ms)
	}
}

func TestPercentilesOfKnownValues(t *testing.T) {
	h := newHist()
	for ms := int64(1); ms <= 1000; ms++ {
		record(h, ms*int64(time.Millisecond))
	}
	p := percentiles(h)
	near := func(got, want float64) bool { return got >= want*0.999 && got <= want*1.001 }
	if p.Count != 1000 || !near(p.P50, 500) || !near(p.P90, 900) || !near(p.P99, 990) || !near(p.P999, 999) || !near(p.Max, 1000) {
		t.Fatalf("percentiles %+v: want p50 500, p90 900, p99 990, p99.9 999, max 1000 (ms, ±0.1%%)", p)
	}
}

func TestRefusedConnectionsCountedWithReason(t *testing.T) {
	denAddr := startDen(t, gateway.Config{AllowedOrigins: []string{"https://good.example"}})
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer busy.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	cases := []struct {
		name, url string
		headers   map[string]string
		kind      string
		stopped   string
	}{
		{"den origin check", "ws://" + denAddr + "/rooms/echo/{room}", map[string]string{"Origin": "https://evil.example"}, "http_403", "HTTP 403"},
		{"overloaded server", "ws://" + strings.TrimPrefix(busy.URL, "http://") + "/ws", nil, "http_503", "HTTP 503"},
		{"nothing listening", "ws://" + closed + "/ws", nil, kindRefused, "ECONNREFUSED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, Config{Scenario: Idle, URLs: []string{tc.url}, Headers: tc.headers, Count: 7, Duration: 5 * time.Second}, Options{})
			if res.Counters.Failed != 7 || res.Counters.Opened != 0 || res.Errors[tc.kind] != 7 {
				t.Fatalf("counters %+v errors %v: want 7 failed as %s", res.Counters, res.Errors, tc.kind)
			}
			if !strings.Contains(res.StoppedBy, tc.stopped) {
				t.Fatalf("stopped by %q: want it to name %q", res.StoppedBy, tc.stopped)
			}
		})
	}
}

func TestServerCloseCodesCounted(t *testing.T) {
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "go away"), time.Now().Add(time.Second))
		_, _, _ = c.ReadMessage()
	})
	res := run(t, Config{Scenario: Idle, URLs: []string{"ws://" + addr + "/x"}, Count: 5, Hold: time.Second}, Options{})
	if res.CloseCodes["1008"] != 5 || res.Counters.Lost != 5 || res.Counters.Opened != 5 {
		t.Fatalf("close codes %v counters %+v: want 5 opened and lost with 1008", res.CloseCodes, res.Counters)
	}
}

func TestWorkersMergeResults(t *testing.T) {
	addr := startDen(t, gateway.Config{})
	res := run(t, Config{
		Scenario: Echo, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"},
		Count: 30, Messages: 5, Workers: 3,
	}, Options{WorkerCommand: testWorkerCommand})
	c := res.Counters
	if res.Workers != 3 || c.Opened != 30 || c.Sent != 150 || c.Echoed != 150 || res.Latency.Count != 150 || res.Connect.Count != 30 {
		t.Fatalf("workers %d counters %+v latency n=%d connect n=%d: want 3 workers, 30 opened, 150 echoed",
			res.Workers, c, res.Latency.Count, res.Connect.Count)
	}
	if res.Client.InProcess || res.Client.RSSBytes == 0 {
		t.Fatalf("client memory %+v: want the workers' own RSS", res.Client)
	}
}

func TestWakeTimesFirstReply(t *testing.T) {
	addr := startDen(t, gateway.Config{})
	res := run(t, Config{
		Scenario: Wake, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"},
		Rooms: 20, WakeIdle: 100 * time.Millisecond, WakeRate: 200,
	}, Options{})
	if res.Counters.Opened != 20 || res.Counters.Sent != 20 || res.Counters.Received != 20 || res.Latency.Count != 20 {
		t.Fatalf("counters %+v latency n=%d: want 20 rooms woken once each", res.Counters, res.Latency.Count)
	}
	// The traffic phase, over 100 ms, was timed for steadiness.
	if st := res.Steadiness; st == nil || st.Samples < 3 || st.P50 <= 0 || st.P99 < st.P50 || st.SlowFraction < 0 || st.SlowFraction > 1 {
		t.Fatalf("steadiness %+v: want samples of the traffic phase", st)
	}
}

// Two runs at once in one process, as a program embedding the load
// generator may make, each time their own steadiness (under -race: with
// nothing shared between them).
func TestConcurrentRunsEachMeasureSteadiness(t *testing.T) {
	addr := startDen(t, gateway.Config{})
	cfg := Config{Scenario: Echo, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"}, Count: 5, Messages: 50, MsgRate: 100,
		Duration: 30 * time.Second, Interval: 100 * time.Millisecond, Loops: 1}
	results := make([]*Result, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i], errs[i] = Run(context.Background(), cfg, Options{}) })
	}
	wg.Wait()
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("run %d: %v", i, errs[i])
		}
		if res.Steadiness == nil || res.Steadiness.Samples == 0 {
			t.Fatalf("run %d: steadiness %+v, want samples", i, res.Steadiness)
		}
	}
}

// Steadiness counts as slow the samples over twice the median.
func TestSteadinessOfKnownTimes(t *testing.T) {
	h := newHist()
	for range 90 {
		record(h, 20_000)
	}
	for range 7 {
		record(h, 100_000)
	}
	for range 3 {
		record(h, 39_000) // under twice the median: not slow
	}
	st := steadinessOf(h)
	if st.Samples != 100 || st.P50 != 20 || st.Max != 100 || st.SlowFraction != 0.07 {
		t.Fatalf("steadiness %+v: want 100 samples, p50 20 µs, max 100 µs, 7%% slow", st)
	}
	if steadinessOf(newHist()) != nil {
		t.Fatal("steadiness of no samples is not nil")
	}
}

func TestChurnReplacesConnections(t *testing.T) {
	addr := startDen(t, gateway.Config{})
	res := run(t, Config{
		Scenario: Churn, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"},
		Count: 20, ChurnRate: 100, Hold: 500 * time.Millisecond,
	}, Options{})
	c := res.Counters
	// A replacement still connecting when the run closes is aborted.
	if c.Failed != 0 || c.Dials <= 20 || c.Dials != c.Opened+c.Aborted || c.Closed != c.Opened {
		t.Fatalf("counters %+v: want more than 20 dials, each opened (or aborted at the end), all closed by the client", c)
	}
}

func TestSourceAddressesAndTemplate(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	addr := gorillaServer(t, func(c *websocket.Conn, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		seen[host]++
		mu.Unlock()
		echo(c, r)
	})
	res := run(t, Config{
		Scenario: Echo, URLs: []string{"ws://" + addr + "/x"}, Count: 6, Messages: 3,
		Sources: []string{"127.0.0.2", "127.0.0.3"}, PerSource: 3,
		Template: `{"type":"message","text":"{payload}"}`,
	}, Options{})
	if res.Counters.Echoed != 18 {
		t.Fatalf("echoed %d, want 18: the stamp must be found inside the template", res.Counters.Echoed)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["127.0.0.2"] != 3 || seen["127.0.0.3"] != 3 {
		t.Fatalf("connections by source %v: want 3 from each of 127.0.0.2 and 127.0.0.3", seen)
	}
}

func TestSubprotocol(t *testing.T) {
	picky := websocket.Upgrader{Subprotocols: []string{"v2"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := picky.Upgrade(w, r, http.Header{"Sec-WebSocket-Protocol": {"v3"}})
		if err == nil {
			echo(c, r)
		}
	}))
	defer srv.Close()
	res := run(t, Config{Scenario: Idle, URLs: []string{"ws://" + strings.TrimPrefix(srv.URL, "http://")}, Count: 3,
		Subprotocol: "v2", Duration: 3 * time.Second}, Options{})
	if res.Errors[kindBadHandshake] != 3 {
		t.Fatalf("errors %v: a server choosing a subprotocol not offered must fail the handshake", res.Errors)
	}
}

func TestServerSampling(t *testing.T) {
	addr := startDen(t, gateway.Config{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	metrics := httptest.NewServer(mux)
	defer metrics.Close()
	for _, opt := range []Options{{ServerPIDs: []int{os.Getpid()}}, {MetricsURLs: []string{metrics.URL + "/metrics"}}} {
		res := run(t, Config{Scenario: Idle, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"}, Count: 20, Hold: 200 * time.Millisecond}, opt)
		if res.Server == nil || res.Server.BaseRSS == 0 || res.Server.HoldRSS == 0 || res.Server.OpenAtHold != 20 {
			t.Fatalf("server sample %+v: want memory before and during a hold of 20", res.Server)
		}
	}
	if _, err := Run(context.Background(), Config{Scenario: Idle, URLs: []string{"ws://" + addr + "/x"}, Count: 1}, Options{MetricsURLs: []string{metrics.URL + "/nothing"}}); err == nil {
		t.Fatal("a metrics URL without process_resident_memory_bytes must be an error before the run")
	}
}

func TestInterruptStillReports(t *testing.T) {
	srv := startDenServer(t, gateway.Config{})
	addr := srv.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var res *Result
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err = Run(ctx, Config{Scenario: Idle, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"}, Count: 10,
			Duration: time.Hour, Interval: 50 * time.Millisecond}, Options{})
	}()
	// Cancel once the connections are held, as Ctrl-C would.
	deadline := time.Now().Add(20 * time.Second)
	for srv.Stats().Sockets < 10 {
		if time.Now().After(deadline) {
			t.Fatal("connections never opened")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if err != nil || res == nil || !res.Interrupted || res.Counters.Opened != 10 || res.Counters.Closed != 10 {
		t.Fatalf("err %v result %+v: want an interrupted result with 10 opened and closed", err, res)
	}
}

func TestConfigErrors(t *testing.T) {
	u := []string{"ws://127.0.0.1:1/x"}
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Scenario: "storm", URLs: u, Count: 1}, "unknown scenario"},
		{Config{Scenario: Idle, Count: 1}, "--url"},
		{Config{Scenario: Idle, URLs: []string{"wss://127.0.0.1/x"}, Count: 1}, "only ws://"},
		{Config{Scenario: Idle, URLs: []string{"ws://{room}.example/x"}, Count: 1}, "path"},
		{Config{Scenario: Idle, URLs: u}, "--count"},
		{Config{Scenario: Broadcast, URLs: u, Members: 1}, "--members"},
		{Config{Scenario: Broadcast, URLs: u, Members: 4, Senders: 5}, "--senders"},
		{Config{Scenario: Churn, URLs: u, Count: 1}, "--churn-rate"},
		{Config{Scenario: Idle, URLs: u, Count: 1, Zipf: 0.5}, "--zipf"},
		{Config{Scenario: Idle, URLs: u, Count: 1, Template: "no placeholder"}, "--template"},
		{Config{Scenario: Idle, URLs: u, Count: 1, Sources: []string{"not-an-ip"}}, "--source"},
		{Config{Scenario: Idle, URLs: u, Count: 1, Headers: map[string]string{"Bad Name": "x"}}, "header"},
		{Config{Scenario: Idle, URLs: u, Count: 2, Rooms: 3}, "--rooms"},
		{Config{Scenario: Idle, URLs: u, Count: 1, Rate: math.Inf(1)}, "--rate"},
		{Config{Scenario: Idle, URLs: u, Count: 1, Zipf: math.NaN()}, "--zipf"},
		{Config{Scenario: Echo, URLs: u, Count: 1, MsgRate: 1e-12}, "--msg-rate must be 0 or at least one a day"},
		{Config{Scenario: Wake, URLs: u, Rooms: 1, WakeRate: 1e-12}, "--wake-rate must be 0 or at least one a day"},
		{Config{Scenario: Idle, URLs: u, Count: 1, Interval: time.Nanosecond}, "--interval"},
		{Config{Scenario: Idle, URLs: u, Count: 1, Duration: time.Second, Drain: time.Second}, "--drain"},
		{Config{Scenario: Echo, URLs: u, Count: 1, PingEvery: time.Second}, "--ping-every"},
		{Config{Scenario: Broadcast, URLs: u, Members: 3, Rooms: 1 << 62}, "--rooms × --members"},
		{Config{Scenario: Idle, URLs: u, Count: MaxCount + 1}, "--count"},
		{Config{Scenario: Wake, URLs: u, Rooms: MaxCount + 1}, "--rooms for wake"},
		{Config{Scenario: Idle, URLs: u, Count: 10, Workers: 200, Loops: 2}, "--concurrency 256 is below the client's 400 event loops"},
	}
	for _, tc := range cases {
		_, err := Run(context.Background(), tc.cfg, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want one mentioning %q", tc.cfg, err, tc.want)
		}
	}
}

func TestThresholds(t *testing.T) {
	r := &Result{Latency: Percentiles{P99: 42}, Counters: Counters{Failed: 1}, Client: ClientMemory{BytesPerConn: 1500},
		Server: &ServerSample{NanosPerMessage: 500}, Steadiness: &Steadiness{SlowFraction: 0.02}}
	cases := []struct {
		expr string
		pass bool
	}{
		{"p99>50ms", true}, {"p99>40ms", false}, {"p99 > 0.04s", false}, {"p99>=42", false},
		{"failed>0", false}, {"failed==1", false}, {"failed<=1", false}, {"failed!=1", true},
		{"client_bytes_per_conn>2KiB", true}, {"client_bytes_per_conn>1KiB", false},
		{"server_cpu_ns_per_message>2us", true}, {"server_cpu_ns_per_message>400", false},
		{"steadiness_slow_fraction>0.01", false}, {"steadiness_slow_fraction>0.05", true},
	}
	for _, tc := range cases {
		th, err := ParseThreshold(tc.expr)
		if err != nil {
			t.Fatalf("%q: %v", tc.expr, err)
		}
		if got := checkThresholds([]Threshold{th}, r)[0].Pass; got != tc.pass {
			t.Errorf("%q: pass %v, want %v", tc.expr, got, tc.pass)
		}
	}
	for _, bad := range []string{"p99", "latency>5ms", "p99>fast", ">5", "p99=>5", "p99>NaN", "failed>5%", "failed>1ms", "sent>Inf"} {
		if _, err := ParseThreshold(bad); err == nil {
			t.Errorf("%q parsed; want an error", bad)
		}
	}
}

func TestIdleZipfRoomsAndPings(t *testing.T) {
	var mu sync.Mutex
	rooms := map[string]int{}
	addr := gorillaServer(t, func(c *websocket.Conn, r *http.Request) {
		mu.Lock()
		rooms[r.URL.Path]++
		mu.Unlock()
		echo(c, r)
	})
	res := run(t, Config{
		Scenario: Idle, URLs: []string{"ws://" + addr + "/{room}"}, Count: 300, Rooms: 10, Zipf: 1.5,
		PingEvery: 100 * time.Millisecond, Hold: 500 * time.Millisecond,
	}, Options{})
	if res.Counters.Opened != 300 || res.Counters.Sent == 0 || res.Latency.Count == 0 {
		t.Fatalf("counters %+v latency n=%d: want 300 open, pings sent and their replies timed", res.Counters, res.Latency.Count)
	}
	mu.Lock()
	defer mu.Unlock()
	// Zipf with s=1.5 over 10 rooms puts about 44% in room 0 and under 2%
	// in room 9.
	if hot, cold := rooms["/room-0"], rooms["/room-9"]; hot < 3*cold || hot < 60 {
		t.Fatalf("rooms %v: room-0 should be the hot one", rooms)
	}
}

// TestClientFileLimitNamed runs a worker whose open-file limit is too low
// for its share: the summary must say that the client's limit stopped it.
func TestClientFileLimitNamed(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	addr := startDen(t, gateway.Config{})
	limited := func() *exec.Cmd {
		cmd := exec.Command("prlimit", "--nofile=100", os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), workerEnv+"=1")
		cmd.Stderr = os.Stderr
		return cmd
	}
	res := run(t, Config{Scenario: Idle, URLs: []string{"ws://" + addr + "/rooms/echo/{room}"}, Count: 200, Workers: 2, Hold: 100 * time.Millisecond},
		Options{WorkerCommand: limited})
	c := res.Counters
	if c.Opened == 0 || c.Opened+c.Failed != 200 || res.Errors[kindClientFiles] != c.Failed {
		t.Fatalf("counters %+v errors %v: want some opened and the rest failed on the client's file limit", c, res.Errors)
	}
	if !strings.Contains(res.StoppedBy, "client's open-file limit") {
		t.Fatalf("stopped by %q: want the client's open-file limit named", res.StoppedBy)
	}
}

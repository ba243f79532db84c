package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Options are how a run reports and what else it watches; Config is what
// it does.
type Options struct {
	// Out receives progress lines and the summary; nil discards them.
	// Terminal rewrites one progress line in place instead of printing a
	// line per interval.
	Out      io.Writer
	Terminal bool
	// ServerPIDs and MetricsURLs name the server(s) whose memory and CPU
	// are sampled.
	ServerPIDs  []int
	MetricsURLs []string
	// WorkerCommand starts one worker process (den loadtest-worker, which
	// calls ServeWorker). Without it a run has one worker, in this process.
	WorkerCommand func() *exec.Cmd
	// Thresholds are checked into the Result.
	Thresholds []Threshold
}

// fileReserve is descriptors a worker keeps for itself (stdio, epoll,
// pipes, the runtime).
const fileReserve = 64

// workerEvent is a snapshot, or the end of a worker.
type workerEvent struct {
	worker int
	snap   Snapshot
	err    error // the worker failed; snap is unset
}

// workerHandle drives one worker, in this process or another.
type workerHandle interface {
	setPhase(p int32)
	// abandon stops waiting for a worker that did not finish in time.
	abandon()
}

type localWorker struct{ w *worker }

func (l localWorker) setPhase(p int32) { l.w.setPhase(p) }
func (l localWorker) abandon()         { l.w.setPhase(phaseClose) }

type procWorker struct {
	cmd *exec.Cmd
	enc *json.Encoder
	in  io.WriteCloser
}

func (p *procWorker) setPhase(ph int32) {
	_ = p.enc.Encode(workerCommand{Phase: ph})
	if ph == phaseClose {
		_ = p.in.Close()
	}
}

func (p *procWorker) abandon() { _ = p.cmd.Process.Kill() }

// Run runs one load test until its scenario ends, cfg.Duration passes or
// ctx is cancelled, whichever comes first, and returns what it measured.
// A cancelled run still returns its Result, marked Interrupted.
func Run(ctx context.Context, cfg Config, opt Options) (*Result, error) {
	cfg = cfg.withDefaults()
	if cfg.Loops == 0 {
		cfg.Loops = runtime.NumCPU()
	}
	if _, err := cfg.validate(); err != nil {
		return nil, err
	}
	if opt.Out == nil {
		opt.Out = io.Discard
	}
	workers := cfg.Workers
	if workers == 0 {
		perWorker := max(int(raiseFileLimit())-fileReserve, 1)
		workers = (cfg.Count + perWorker - 1) / perWorker
		if opt.WorkerCommand == nil {
			workers = 1
		}
	}
	// Checked here, not only in each worker: the run would start every
	// worker to have each refuse the same.
	if err := loopsErr(&cfg, workers); err != nil {
		return nil, err
	}
	if workers > 1 && opt.WorkerCommand == nil {
		// A test or an embedding program that cannot re-execute itself.
		return nil, configErr("--workers %d needs worker processes, and this build cannot start them", workers)
	}
	r := &runner{cfg: cfg, opt: opt, workers: workers, probe: newServerProbe(opt.ServerPIDs, opt.MetricsURLs)}
	return r.run(ctx)
}

// runner is one Run's state, owned by its goroutine.
type runner struct {
	cfg     Config
	opt     Options
	workers int
	probe   *serverProbe

	handles []workerHandle
	events  chan workerEvent
	quit    chan struct{} // closed when Run returns: nobody reads events any more
	latest  []Snapshot
	final   []bool
	failed  error

	// The server is sampled on its own goroutine, so a slow metrics
	// endpoint delays only its own figures.
	sampleReqs     chan sampleReq
	samples        chan sampleRes
	pendingSamples int  // trafficStart and hold samples asked for, not yet in
	periodicBusy   bool // a periodic sample is asked for and not yet in
	holdPending    bool // the hold sample is asked for and not yet in: keep the connections open

	latency, connect, interval, lag *hdr.Histogram
	steady                          *steadyProbe // running while traffic does
	res                             *Result
	progress                        progress

	phase                              int32
	start, deadline, lastTick          time.Time
	trafficStart, trafficEnd, drainEnd time.Time
	trafficEnded, memTaken             bool
	recvAtStart, sentAtStart           int64
	rampOpened                         int64 // connections opened by the end of the ramp
	cpuAtStart                         float64
	cpuKnown                           bool
	lastTotals                         Counters
}

type sampleKind int

const (
	samplePeriodic     sampleKind = iota // for the chart and the peak
	sampleTrafficStart                   // CPU when traffic begins
	sampleHold                           // memory and CPU when the hold ends
)

type sampleReq struct {
	kind     sampleKind
	point    int   // periodic: the Series index it belongs to
	open     int64 // hold: connections open when it was asked for
	received int64 // hold: messages received by then
}

type sampleRes struct {
	sampleReq
	rss int64
	cpu float64
	err error
}

// sampleTimeout bounds one periodic server sample: an interval, within
// limits, so that a server that answers slowly costs the series a point,
// not the run its pace.
func (r *runner) sampleTimeout() time.Duration {
	return min(max(r.cfg.Interval, 200*time.Millisecond), maxSampleTimeout)
}

// maxSampleTimeout bounds the samples the result is made of (before the
// load, as traffic starts, at the hold, at the end): taken once each, they
// wait this long for a busy server, and a slow one costs a run at most
// this much each past its --duration.
const maxSampleTimeout = 2 * time.Second

func (r *runner) run(ctx context.Context) (*Result, error) {
	r.events = make(chan workerEvent, 16*r.workers)
	r.quit = make(chan struct{})
	defer close(r.quit)
	r.latest = make([]Snapshot, r.workers)
	r.final = make([]bool, r.workers)
	r.latency, r.connect, r.interval, r.lag = newHist(), newHist(), newHist(), newHist()
	r.res = &Result{
		Scenario: r.cfg.Scenario, Config: r.cfg, Target: r.cfg.Count,
		Workers: r.workers, Loops: r.cfg.Loops, Errors: map[string]int64{}, CloseCodes: map[string]int64{},
	}
	r.progress = progress{out: r.opt.Out, terminal: r.opt.Terminal}
	if r.probe != nil {
		sctx, cancel := context.WithTimeout(ctx, maxSampleTimeout)
		rss, _, err := r.probe.sample(sctx)
		cancel()
		if err != nil {
			return nil, err
		}
		r.res.Server = &ServerSample{Source: r.probe.source(), BaseRSS: rss, PeakRSS: rss}
		r.startSampler()
	}
	r.start = time.Now()
	if err := r.startWorkers(); err != nil {
		r.setPhase(phaseClose)
		return nil, err
	}
	r.res.Started = r.start
	r.deadline = r.start.Add(r.cfg.Duration)
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	stop := time.NewTimer(r.cfg.Duration)
	defer stop.Stop()
	interrupt := ctx.Done()
	var killAt <-chan time.Time
	r.lastTick = r.start
	for !r.allFinal() || r.pendingSamples > 0 {
		select {
		case ev := <-r.events:
			r.take(ev)
		case s := <-r.samples:
			r.takeSample(s)
		case now := <-tick.C:
			r.point(now)
		case <-interrupt:
			interrupt = nil
			r.res.Interrupted = true
		case <-stop.C:
		case <-killAt:
			for i, h := range r.handles {
				if !r.final[i] {
					h.abandon()
					r.failed = errors.Join(r.failed, fmt.Errorf("loadtest: worker %d did not stop within 10s", i))
				}
			}
			return r.finish(time.Now()), r.failed
		}
		now := time.Now()
		if r.phase < phaseClose && (r.res.Interrupted || !now.Before(r.deadline)) {
			r.endTraffic(now, true)
			if !r.holdPending {
				r.setPhase(phaseClose)
			}
		} else {
			r.advance(now)
		}
		if r.phase == phaseClose && killAt == nil {
			killAt = time.After(10 * time.Second)
		}
	}
	return r.finish(time.Now()), r.failed
}

// advance moves the run to its next phase when the workers are ready.
func (r *runner) advance(now time.Time) {
	switch r.phase {
	case phaseConnect:
		if !r.all(func(s *Snapshot) bool { return s.Connected }) {
			return
		}
		var last int64
		for i := range r.latest {
			last = max(last, r.latest[i].ConnectedAt)
		}
		if last == 0 {
			// Every worker ended without connecting.
			last = now.UnixNano()
		}
		r.res.RampSeconds = time.Unix(0, last).Sub(r.start).Seconds()
		r.trafficStart = now
		r.trafficEnd = r.deadline.Add(-r.cfg.Drain)
		if r.cfg.Hold > 0 && now.Add(r.cfg.Hold).Before(r.trafficEnd) {
			r.trafficEnd = now.Add(r.cfg.Hold)
		}
		totals := r.totals()
		r.recvAtStart, r.sentAtStart, r.rampOpened = totals.Received, totals.Sent, totals.Opened
		r.requestSample(sampleReq{kind: sampleTrafficStart})
		r.steady = startSteady()
		r.setPhase(phaseTraffic)
	case phaseTraffic:
		// With nothing open or opening after the first wave, there is
		// nothing to hold or measure: every connection failed.
		t := r.totals()
		alive := t.Open() > 0 || t.Dials > t.Opened+t.Failed+t.Aborted
		if now.Before(r.trafficEnd) && !r.all(func(s *Snapshot) bool { return s.Done }) && alive {
			return
		}
		r.endTraffic(now, false)
		r.drainEnd = now.Add(r.cfg.Drain)
		r.setPhase(phaseDrain)
	case phaseDrain:
		// Wait until the server's memory at the end of the hold is known
		// (it is measured with the connections open), every worker has
		// reported from the drain (so its memory after a collection is
		// known) and every expected message is in, or the drain time is up.
		if r.holdPending || !r.all(func(s *Snapshot) bool { return s.Phase >= phaseDrain }) && now.Before(r.drainEnd) {
			return
		}
		r.clientMemory()
		t := r.totals()
		if !r.awaitingMessages(&t) || !now.Before(r.drainEnd) {
			r.setPhase(phaseClose)
		}
	}
}

// endTraffic measures the end of the traffic or hold phase, once. early
// is a run cut short by a signal or --duration: there is no drain, so the
// client's memory is taken now.
func (r *runner) endTraffic(now time.Time, early bool) {
	if r.trafficEnded {
		return
	}
	r.trafficEnded = true
	r.stopSteady()
	totals := r.totals()
	if early {
		r.clientMemory()
	}
	if r.res.RampSeconds == 0 {
		r.res.RampSeconds = now.Sub(r.start).Seconds()
	}
	if r.trafficStart.IsZero() {
		return
	}
	secs := now.Sub(r.trafficStart).Seconds()
	r.res.TrafficSeconds = secs
	if secs > 0 {
		r.res.MessageRate = float64(totals.Received-r.recvAtStart) / secs
		r.res.SendRate = float64(totals.Sent-r.sentAtStart) / secs
	}
	r.requestSample(sampleReq{kind: sampleHold, open: totals.Open(), received: totals.Received})
}

func (r *runner) startSampler() {
	r.sampleReqs = make(chan sampleReq, 4)
	r.samples = make(chan sampleRes, 4)
	go func() {
		for {
			var req sampleReq
			select {
			case req = <-r.sampleReqs:
			case <-r.quit:
				return
			}
			timeout := maxSampleTimeout
			if req.kind == samplePeriodic {
				timeout = r.sampleTimeout()
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			rss, cpu, err := r.probe.sample(ctx)
			cancel()
			select {
			case r.samples <- sampleRes{req, rss, cpu, err}:
			case <-r.quit:
				return
			}
		}
	}()
}

// requestSample asks for a server sample. A periodic one is skipped while
// the last is not in, so they never queue ahead of the others; the others
// are always taken, and the run waits for them before it returns.
func (r *runner) requestSample(req sampleReq) {
	if r.probe == nil {
		return
	}
	if req.kind == samplePeriodic {
		if !r.periodicBusy {
			r.periodicBusy = true
			r.sampleReqs <- req
		}
		return
	}
	r.pendingSamples++
	r.holdPending = r.holdPending || req.kind == sampleHold
	r.sampleReqs <- req
}

func (r *runner) takeSample(s sampleRes) {
	srv := r.res.Server
	switch s.kind {
	case samplePeriodic:
		r.periodicBusy = false
	case sampleHold:
		r.holdPending = false
		r.pendingSamples--
	default:
		r.pendingSamples--
	}
	if s.err != nil {
		if s.kind != samplePeriodic {
			r.failed = errors.Join(r.failed, fmt.Errorf("loadtest: sampling the server: %w", s.err))
		}
		return
	}
	srv.PeakRSS = max(srv.PeakRSS, s.rss)
	switch s.kind {
	case samplePeriodic:
		if s.point < len(r.res.Series) {
			r.res.Series[s.point].ServerRSS = s.rss
		}
	case sampleTrafficStart:
		r.cpuAtStart, r.cpuKnown = s.cpu, true
	case sampleHold:
		srv.HoldRSS, srv.OpenAtHold = s.rss, s.open
		if s.open > 0 {
			srv.BytesPerConn = float64(srv.HoldRSS-srv.BaseRSS) / float64(s.open)
		}
		if r.cpuKnown {
			srv.CPUSeconds = s.cpu - r.cpuAtStart
			if n := s.received - r.recvAtStart; n > 0 {
				srv.NanosPerMessage = srv.CPUSeconds * 1e9 / float64(n)
			}
		}
	}
}

func (r *runner) setPhase(p int32) {
	r.phase = p
	for _, h := range r.handles {
		h.setPhase(p)
	}
}

// expected is the deliveries (broadcast) or echoes (echo) the messages
// sent so far should bring back, and got how many came.
func expected(scenario Scenario, members int, t *Counters) (want, got int64) {
	switch scenario {
	case Broadcast:
		return t.Sent * int64(members-1), t.Delivered
	case Echo:
		return t.Sent, t.Echoed
	}
	return 0, 0
}

// awaitingMessages reports whether the drain should wait on: some
// expected message, ping reply or wake reply has not come. With
// connections missing, what to expect cannot be known, and the drain runs
// its full time.
func (r *runner) awaitingMessages(t *Counters) bool {
	if latencyFrom(&r.cfg) == "" {
		return false
	}
	answered := r.cfg.Scenario == Wake || r.cfg.Scenario == Idle
	if t.Open() < int64(r.cfg.Count) {
		return true
	}
	if answered {
		// Each ping's or wake's reply is one latency sample.
		return r.latency.TotalCount() < t.Sent
	}
	want, got := expected(r.cfg.Scenario, r.cfg.Members, t)
	return got < want
}

// clientMemory takes the workers' memory from their latest snapshots: in
// the drain, taken after each collected its garbage.
func (r *runner) clientMemory() {
	if r.memTaken {
		return
	}
	r.memTaken = true
	var rss, growth int64
	for i := range r.latest {
		s := &r.latest[i]
		rss += s.RSS
		growth += s.RSS - s.BaseRSS
	}
	open := r.totals().Open()
	r.res.Client = ClientMemory{RSSBytes: rss, GrowthBytes: growth, InProcess: r.workers == 1}
	if open > 0 {
		r.res.Client.BytesPerConn = float64(growth) / float64(open)
	}
}

// startWorkers starts the workers: in this process when there is one, as
// processes otherwise.
func (r *runner) startWorkers() error {
	if r.workers == 1 {
		w, err := newWorker(r.cfg, 0, 1)
		if err != nil {
			return err
		}
		r.handles = append(r.handles, localWorker{w})
		go func() {
			err := w.serve(func(s Snapshot) error {
				if !r.send(workerEvent{worker: 0, snap: s}) {
					return errRunOver
				}
				return nil
			})
			if err != nil && err != errRunOver {
				r.send(workerEvent{worker: 0, err: err})
			}
		}()
		return nil
	}
	for i := range r.workers {
		cmd := r.opt.WorkerCommand()
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("loadtest: starting worker %d: %w", i, err)
		}
		p := &procWorker{cmd: cmd, enc: json.NewEncoder(in), in: in}
		r.handles = append(r.handles, p)
		cfg := r.cfg
		if err := p.enc.Encode(workerCommand{Config: &cfg, Worker: i, Workers: r.workers}); err != nil {
			_ = cmd.Process.Kill()
			_, _ = io.Copy(io.Discard, out)
			_ = cmd.Wait()
			return fmt.Errorf("loadtest: worker %d: %w", i, err)
		}
		go r.readWorker(i, cmd, out)
	}
	return nil
}

// readWorker forwards a worker process's snapshots; a worker that ends
// without its final snapshot is an error.
func (r *runner) readWorker(i int, cmd *exec.Cmd, out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	final := false
	for sc.Scan() {
		var s Snapshot
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			// A worker that says something else is broken: stop it, and let
			// its output run out so Wait returns.
			_ = cmd.Process.Kill()
			_, _ = io.Copy(io.Discard, out)
			_ = cmd.Wait()
			r.send(workerEvent{worker: i, err: fmt.Errorf("loadtest: worker %d: %w", i, err)})
			return
		}
		final = final || s.Final
		r.send(workerEvent{worker: i, snap: s})
	}
	// A scanner that stopped early (a read error, a line over the limit)
	// leaves the worker blocked on a full pipe: drain it so it can end.
	_, _ = io.Copy(io.Discard, out)
	err := cmd.Wait()
	if !final {
		r.send(workerEvent{worker: i, err: fmt.Errorf("loadtest: worker %d ended without a result: %v", i, err)})
	}
}

// errRunOver tells a worker that nobody is listening any more.
var errRunOver = errors.New("loadtest: run over")

// send hands an event to the run, unless it has returned.
func (r *runner) send(ev workerEvent) bool {
	select {
	case r.events <- ev:
		return true
	case <-r.quit:
		return false
	}
}

// take folds a worker's event into the run.
func (r *runner) take(ev workerEvent) {
	if ev.err != nil {
		r.failed = errors.Join(r.failed, ev.err)
		r.final[ev.worker] = true
		return
	}
	s := ev.snap
	for name, b := range map[string][]byte{"latency": s.Latency, "connect": s.Connect, "send lag": s.SendLag} {
		h, err := decodeHist(b)
		if err != nil {
			r.failed = errors.Join(r.failed, fmt.Errorf("loadtest: worker %d sent a bad %s histogram: %w", ev.worker, name, err))
			continue
		}
		switch name {
		case "latency":
			r.latency.Merge(h)
			r.interval.Merge(h)
		case "connect":
			r.connect.Merge(h)
		default:
			r.lag.Merge(h)
		}
	}
	s.Latency, s.Connect, s.SendLag = nil, nil, nil
	r.latest[ev.worker] = s
	r.final[ev.worker] = r.final[ev.worker] || s.Final
	if open := r.totals().Open(); open > r.res.PeakOpen {
		r.res.PeakOpen = open
	}
}

func (r *runner) totals() Counters {
	var c Counters
	for i := range r.latest {
		c.add(&r.latest[i].Counters)
	}
	return c
}

func (r *runner) all(f func(*Snapshot) bool) bool {
	for i := range r.latest {
		if !f(&r.latest[i]) && !r.final[i] {
			return false
		}
	}
	return true
}

func (r *runner) allFinal() bool {
	for _, f := range r.final {
		if !f {
			return false
		}
	}
	return true
}

// point closes one interval: a point for the charts and a progress line.
func (r *runner) point(now time.Time) {
	t := r.totals()
	dt := now.Sub(r.lastTick).Seconds()
	if dt <= 0 {
		return
	}
	p := Point{
		T:           now.Sub(r.start).Seconds(),
		Open:        t.Open(),
		Failed:      t.Failed,
		ConnectRate: float64(t.Opened-r.lastTotals.Opened) / dt,
		SendRate:    float64(t.Sent-r.lastTotals.Sent) / dt,
		RecvRate:    float64(t.Received-r.lastTotals.Received) / dt,
	}
	if r.interval.TotalCount() > 0 {
		p.P50 = float64(r.interval.ValueAtQuantile(50)) / 1000
		p.P99 = float64(r.interval.ValueAtQuantile(99)) / 1000
		p.Max = float64(r.interval.Max()) / 1000
	}
	r.interval.Reset()
	r.res.Series = append(r.res.Series, p)
	r.requestSample(sampleReq{kind: samplePeriodic, point: len(r.res.Series) - 1})
	r.lastTick, r.lastTotals = now, t
	r.progress.print(&p, r.phase)
}

// finish completes the Result.
// stopSteady ends the steadiness probe, if it runs, and keeps its result.
func (r *runner) stopSteady() {
	if r.steady != nil {
		r.res.Steadiness = r.steady.finish()
		r.steady = nil
	}
}

func (r *runner) finish(now time.Time) *Result {
	res := r.res
	r.stopSteady()
	r.clientMemory()
	res.Seconds = now.Sub(r.start).Seconds()
	res.Counters = r.totals()
	for i := range r.latest {
		for k, v := range r.latest[i].Errors {
			res.Errors[k] += v
		}
		for k, v := range r.latest[i].CloseCodes {
			res.CloseCodes[k] += v
		}
	}
	if res.RampSeconds > 0 {
		// Opened, not the peak held: connections the server ended during
		// the ramp were opened all the same.
		opened := r.rampOpened
		if r.trafficStart.IsZero() {
			opened = res.Counters.Opened
		}
		res.ConnectRate = float64(opened) / res.RampSeconds
	}
	res.Latency, res.Connect = percentiles(r.latency), percentiles(r.connect)
	if r.lag.TotalCount() > 0 {
		lag := percentiles(r.lag)
		res.SendLag = &lag
	}
	res.LatencyFrom = latencyFrom(&r.cfg)
	res.Expected, _ = expected(r.cfg.Scenario, r.cfg.Members, &res.Counters)
	res.StoppedBy = stoppedBy(res)
	res.Thresholds = checkThresholds(r.opt.Thresholds, res)
	r.progress.done()
	return res
}

package loadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/den-rooms/den/internal/wsframe"
)

// maxClientMessage caps what the client accepts from a server in one
// message; a bigger one is the server's bug, and fails that connection.
const maxClientMessage = 64 << 20

// worker is one process's share of a run: event loops, and the
// connection numbers n with n % workers == id.
type worker struct {
	cfg        Config
	id         int
	totalLoops int
	targets    []target
	// user is --source; loopback the default for IPv4 loopback targets.
	user, loopback sourceSet
	head           requestHead
	lim            wsframe.Limits
	pad            []byte
	tmplHead       []byte
	tmplTail       []byte

	// started is when this worker was made, before any message of the
	// run was stamped: an earlier stamp is an earlier run's, which a
	// durable room sends again in the history it gives a joiner.
	started int64

	phase       atomic.Int32
	waveDone    atomic.Int32  // loops whose first wave is done
	connectedAt atomic.Int64  // when the last loop's first wave was done
	doneLoops   atomic.Int32  // loops with no traffic left
	kick        chan struct{} // a phase changed: snapshot now
	loops       []*loop
	wg          sync.WaitGroup
	baseRSS     int64
	// trafficEnd is when the worker was told traffic is over: sends due
	// after it were never scheduled.
	trafficEnd atomic.Int64

	// Only the goroutine that takes snapshots touches these.
	latency, connect, lag *hdr.Histogram
}

// newWorker prepares worker id of workers for cfg, which must have been
// through withDefaults and validate, with Loops set.
func newWorker(cfg Config, id, workers int) (*worker, error) {
	targets, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	sources, _ := parseSources(cfg.Sources)
	w := &worker{
		cfg: cfg, id: id, totalLoops: workers * cfg.Loops, targets: targets,
		head:    newRequestHead(cfg.Headers, cfg.Subprotocol),
		lim:     wsframe.Limits{MaxMessage: maxClientMessage, FromServer: true},
		pad:     []byte(strings.Repeat("x", cfg.Size)),
		latency: newHist(), connect: newHist(), lag: newHist(), kick: make(chan struct{}, 1),
		started: time.Now().UnixNano(),
	}
	w.user = newSourceSet(sources)
	w.loopback = newSourceSet([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	if cfg.Template != "" {
		h, t, _ := strings.Cut(cfg.Template, "{payload}")
		w.tmplHead, w.tmplTail = []byte(h), []byte(t)
	}
	if err := loopsErr(&cfg, workers); err != nil {
		return nil, err
	}
	raiseFileLimit()
	for i := range cfg.Loops {
		first := int64(i*workers + id)
		l, err := newLoop(w, first, int64(w.totalLoops))
		if err != nil {
			return nil, err
		}
		w.loops = append(w.loops, l)
	}
	// The baseline is taken with the loops' buffers already allocated and
	// garbage returned, so growth from here is what connections cost.
	debug.FreeOSMemory()
	w.baseRSS = readRSS(os.Getpid())
	return w, nil
}

func (w *worker) start() {
	for _, l := range w.loops {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			l.run()
		}()
	}
}

// closedLoop reports whether each connection sends its next message only
// when the last one has come back (echo without --msg-rate).
func (c *Config) closedLoop() bool { return c.Scenario == Echo && c.MsgRate == 0 }

// isSender reports whether connection n sends timed messages:
// timestamped ones, or idle pings.
func (w *worker) isSender(n int64) bool {
	switch w.cfg.Scenario {
	case Echo:
		return true
	case Broadcast:
		return n < int64(w.cfg.Count) && n/int64(w.cfg.Rooms) < int64(w.cfg.Senders)
	case Idle:
		return w.cfg.PingEvery > 0
	}
	return false
}

// roomOf places connection n in a room.
func (l *loop) roomOf(n int64) int32 {
	cfg := &l.w.cfg
	if cfg.Zipf > 1 && cfg.Scenario == Idle {
		if l.zipf == nil {
			l.zipf = rand.NewZipf(l.rng, cfg.Zipf, 1, uint64(cfg.Rooms-1))
		}
		return int32(l.zipf.Uint64())
	}
	return int32(n % int64(cfg.Rooms))
}

// sourceSet is local addresses to connect from.
type sourceSet struct {
	prefixes []netip.Prefix
	sizes    []uint64
	total    uint64
}

func newSourceSet(ps []netip.Prefix) sourceSet {
	s := sourceSet{prefixes: ps}
	for _, p := range ps {
		s.sizes = append(s.sizes, usable(p))
		s.total += usable(p)
	}
	return s
}

// sourceFor picks the local address for connection n to t: PerSource
// connections from each address in turn. Without --source, an IPv4
// loopback target is reached from all of 127.0.0.0/8 and any other from
// the kernel's choice.
func (w *worker) sourceFor(n int64, t *target) netip.Addr {
	set := &w.user
	if set.total == 0 {
		if !t.loopback || !t.addr.Addr().Is4() {
			return netip.Addr{}
		}
		set = &w.loopback
	}
	k := uint64(n) / uint64(w.cfg.PerSource) % set.total
	for i, p := range set.prefixes {
		if k < set.sizes[i] {
			return nth(p, k)
		}
		k -= set.sizes[i]
	}
	return netip.Addr{}
}

// usable counts the addresses of p a connection may come from: a single
// address, or all but the network address (and, for IPv4, the broadcast
// address) of a wider prefix, capped near 2^24.
func usable(p netip.Prefix) uint64 {
	host := min(p.Addr().BitLen()-p.Bits(), 24)
	switch {
	case host == 0:
		return 1
	case p.Addr().Is4() && host > 1:
		return 1<<host - 2
	}
	return 1<<host - 1
}

func nth(p netip.Prefix, k uint64) netip.Addr {
	if p.Addr().BitLen()-p.Bits() == 0 {
		return p.Addr()
	}
	b := p.Addr().As16()
	carry := k + 1
	for i := 15; i >= 0 && carry > 0; i-- {
		s := uint64(b[i]) + carry&0xff
		b[i] = byte(s)
		carry = carry>>8 + s>>8
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// appendPath expands the target's path for a connection.
func (t *target) appendPath(dst []byte, prefix string, room int32, n int64) []byte {
	s := t.pathTmpl
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "{room}"):
			dst = append(dst, prefix...)
			dst = strconv.AppendInt(dst, int64(room), 10)
			s = s[len("{room}"):]
		case strings.HasPrefix(s, "{n}"):
			dst = strconv.AppendInt(dst, n, 10)
			s = s[len("{n}"):]
		default:
			dst = append(dst, '{')
			s = s[1:]
		}
	}
}

// setPhase moves every loop to phase p. Going to phaseDrain first
// collects garbage, so the memory the snapshot after it reports is what
// the connections hold.
func (w *worker) setPhase(p int32) {
	if p > phaseTraffic {
		w.trafficEnd.CompareAndSwap(0, time.Now().UnixNano())
	}
	if p == phaseDrain && w.phase.Load() < phaseDrain {
		debug.FreeOSMemory()
	}
	for {
		old := w.phase.Load()
		if p <= old {
			return
		}
		if w.phase.CompareAndSwap(old, p) {
			w.kickNow()
			return
		}
	}
}

// kickNow has the worker send a snapshot at once rather than at the next
// interval: the run waits on what it reports.
func (w *worker) kickNow() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// snapshot gathers the loops' counts.
func (w *worker) snapshot(final bool) Snapshot {
	s := Snapshot{Worker: w.id, Errors: map[string]int64{}, CloseCodes: map[string]int64{}}
	// The phase is read before the counts: a loop publishes a phase once
	// its tick under the old one is done, so the counts read after it
	// include everything sent before it.
	s.Phase = phaseClose
	for _, l := range w.loops {
		s.Phase = min(s.Phase, l.seen.Load())
	}
	for _, l := range w.loops {
		l.stats.collect(&s.Counters, s.Errors, s.CloseCodes, w.latency, w.connect, w.lag)
	}
	s.Latency, s.Connect, s.SendLag = encodeHist(w.latency), encodeHist(w.connect), encodeHist(w.lag)
	w.latency.Reset()
	w.connect.Reset()
	w.lag.Reset()
	s.RSS, s.BaseRSS = readRSS(os.Getpid()), w.baseRSS
	s.Connected = int(w.waveDone.Load()) == len(w.loops)
	s.ConnectedAt = w.connectedAt.Load()
	s.Done = int(w.doneLoops.Load()) == len(w.loops)
	s.Final = final
	return s
}

// workerCommand is a line from the run to a worker process. The first
// carries the config; the rest move the phase.
type workerCommand struct {
	Config  *Config `json:"config,omitempty"`
	Worker  int     `json:"worker"`
	Workers int     `json:"workers"`
	Phase   int32   `json:"phase,omitempty"`
}

// ServeWorker runs a worker process: den loadtest starts one per --workers
// with this on the other end of its stdin and stdout. It reads the config
// and phase changes as JSON lines from r and writes a Snapshot line to out
// every interval, the last one Final. If r ends, the worker closes
// everything and stops.
func ServeWorker(r io.Reader, out io.Writer) error {
	in := bufio.NewScanner(r)
	in.Buffer(make([]byte, 64<<10), 16<<20)
	if !in.Scan() {
		return fmt.Errorf("loadtest worker: no config: %v", in.Err())
	}
	var first workerCommand
	if err := json.Unmarshal(in.Bytes(), &first); err != nil || first.Config == nil {
		return fmt.Errorf("loadtest worker: bad config line: %v", err)
	}
	w, err := newWorker(*first.Config, first.Worker, first.Workers)
	if err != nil {
		return err
	}
	go func() {
		for in.Scan() {
			var c workerCommand
			if json.Unmarshal(in.Bytes(), &c) == nil {
				w.setPhase(c.Phase)
			}
		}
		w.setPhase(phaseClose)
	}()
	enc := json.NewEncoder(out)
	return w.serve(func(s Snapshot) error { return enc.Encode(s) })
}

// serve runs the worker until its loops stop, handing a snapshot to emit
// every interval and once more, Final, at the end.
func (w *worker) serve(emit func(Snapshot) error) error {
	w.start()
	stopped := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(stopped)
	}()
	t := time.NewTicker(min(w.cfg.Interval/4, 250*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stopped:
			return emit(w.snapshot(true))
		case <-t.C:
		case <-w.kick:
		}
		if err := emit(w.snapshot(false)); err != nil {
			w.setPhase(phaseClose)
		}
	}
}

// readRSS is a process's resident memory in bytes, 0 if it cannot be read.
func readRSS(pid int) int64 {
	rss, _, _ := procSample(pid)
	return rss
}

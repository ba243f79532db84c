package loadtest

import (
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Steadiness is how steadily the load client's machine ran through the
// traffic phase: a fixed piece of CPU work (steadyIters rounds of a
// xorshift, some tens of µs) timed every steadyEvery. On a virtual machine
// whose host takes its CPU now and then, the work takes several times its
// median in those moments, and so does everything the server does in
// them: a latency tail that comes with a high SlowFraction is the host's
// as much as the server's. It costs the client well under 1% of a CPU.
type Steadiness struct {
	Samples int64   `json:"samples"`
	P50     float64 `json:"p50_us"`
	P99     float64 `json:"p99_us"`
	Max     float64 `json:"max_us"`
	// SlowFraction is the share of samples that took more than twice
	// the median.
	SlowFraction float64 `json:"slow_fraction"`
}

const (
	steadyIters = 20_000
	steadyEvery = 10 * time.Millisecond
)

// steadyProbe times the work on its own goroutine until stopped.
type steadyProbe struct {
	stop chan struct{}
	done chan *hdr.Histogram
	sink uint64 // the work's result, kept so the compiler keeps the work
}

func startSteady() *steadyProbe {
	p := &steadyProbe{stop: make(chan struct{}), done: make(chan *hdr.Histogram, 1)}
	go p.run()
	return p
}

func (p *steadyProbe) run() {
	h := newHist()
	t := time.NewTicker(steadyEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			p.done <- h
			return
		case <-t.C:
			start := time.Now()
			x := uint64(88172645463325252)
			for range steadyIters {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
			}
			p.sink = x
			record(h, time.Since(start).Nanoseconds())
		}
	}
}

// finish stops the probe and summarises what it timed.
func (p *steadyProbe) finish() *Steadiness {
	close(p.stop)
	return steadinessOf(<-p.done)
}

// steadinessOf summarises the work's times in h (µs), nil if none.
func steadinessOf(h *hdr.Histogram) *Steadiness {
	n := h.TotalCount()
	if n == 0 {
		return nil
	}
	med := h.ValueAtQuantile(50)
	var slow int64
	for _, b := range h.Distribution() {
		if b.From > 2*med {
			slow += b.Count
		}
	}
	return &Steadiness{
		Samples: n, P50: float64(med), P99: float64(h.ValueAtQuantile(99)), Max: float64(h.Max()),
		SlowFraction: float64(slow) / float64(n),
	}
}

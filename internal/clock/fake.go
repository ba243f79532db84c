package clock

import (
	"sync"
	"time"
)

// Fake is a Clock that moves only when Advance is called. Tickers fire,
// in order, for every period that Advance passes over.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*fakeTicker
}

var _ Clock = (*Fake)(nil)

// NewFake returns a Fake clock reading start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTicker returns a ticker that fires as Advance passes its periods.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker period")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTicker{clock: f, period: d, next: f.now.Add(d), c: make(chan time.Time, 1)}
	f.tickers = append(f.tickers, t)
	return t
}

// Advance moves the clock forward by d, firing tickers due on the way. A
// ticker whose channel is still full drops the tick, as time.Ticker does.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		var due *fakeTicker
		for _, t := range f.tickers {
			if !t.next.After(end) && (due == nil || t.next.Before(due.next)) {
				due = t
			}
		}
		if due == nil {
			break
		}
		f.now = due.next
		if due.once {
			f.remove(due)
		} else {
			due.next = due.next.Add(due.period)
		}
		select {
		case due.c <- f.now:
		default:
		}
	}
	f.now = end
}

// NewTimer returns a timer that fires once Advance reaches at.
func (f *Fake) NewTimer(at time.Time) Timer {
	t := &fakeTicker{clock: f, once: true, c: make(chan time.Time, 1)}
	t.ResetAt(at)
	return t
}

func (f *Fake) remove(t *fakeTicker) {
	for i, x := range f.tickers {
		if x == t {
			f.tickers = append(f.tickers[:i], f.tickers[i+1:]...)
			return
		}
	}
}

// ResetAt, for a timer, makes it fire when Advance reaches at.
func (t *fakeTicker) ResetAt(at time.Time) {
	f := t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remove(t)
	select {
	case <-t.c:
	default:
	}
	if !at.After(f.now) {
		// Passed already: it fires at once, as a real timer does.
		t.c <- f.now
		return
	}
	t.next = at
	f.tickers = append(f.tickers, t)
}

// fakeTicker is a Fake's ticker, or its timer when once is set.
type fakeTicker struct {
	clock  *Fake
	period time.Duration
	once   bool
	next   time.Time
	c      chan time.Time
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }

func (t *fakeTicker) Stop() {
	f := t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remove(t)
	if t.once {
		select {
		case <-t.c:
		default:
		}
	}
}

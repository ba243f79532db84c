// Package clock is den's injectable time source. Code that waits on time
// (keepalive, hibernation, alarms) takes a Clock so tests move a Fake one
// instead of sleeping.
package clock

import "time"

// Clock tells the time and makes tickers. Real and *Fake implement it; both
// are safe for concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTicker returns a ticker that sends on C every d (d > 0). Stop it
	// when done.
	NewTicker(d time.Duration) Ticker
	// NewTimer returns a timer that sends on C once, at at (at once if
	// at has passed).
	NewTimer(at time.Time) Timer
}

// Timer delivers one tick on a channel at its time, like time.Timer since
// Go 1.23: ResetAt and Stop discard a tick not yet read. It takes a time,
// not a duration, so that setting it races with no one moving the clock.
type Timer interface {
	C() <-chan time.Time
	// ResetAt makes the timer fire at at, whether or not it had.
	ResetAt(at time.Time)
	// Stop keeps the timer from firing.
	Stop()
}

// Ticker delivers ticks on a channel, like time.Ticker.
type Ticker interface {
	// C is the channel ticks arrive on. A slow reader misses ticks; it never
	// blocks the clock.
	C() <-chan time.Time
	// Stop turns the ticker off. It does not close C.
	Stop()
}

// Real is the system clock.
type Real struct{}

var _ Clock = Real{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTicker wraps time.NewTicker.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// NewTimer wraps time.NewTimer.
func (Real) NewTimer(at time.Time) Timer { return realTimer{time.NewTimer(time.Until(at))} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time  { return r.t.C }
func (r realTimer) ResetAt(at time.Time) { r.t.Reset(time.Until(at)) }
func (r realTimer) Stop()                { r.t.Stop() }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

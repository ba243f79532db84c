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

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

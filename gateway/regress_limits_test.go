package gateway

import (
	"testing"
	"time"
)

// TestRegressMessageRateNearWrap: allowMessage keeps a socket's schedule
// in a uint32 of 10 µs units, which wraps every ~11.9 h. A socket's
// schedule starts when it opens and the keepalive keeps it from falling a
// wrap behind, so neither a first message just before a wrap nor one
// after a long quiet spell is refused.
func TestRegressMessageRateNearWrap(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0", MessageRate: 1, MessageBurst: 1})
	if err != nil {
		t.Fatal(err)
	}
	const unit = time.Second / rateUnitsPerSecond
	for _, before := range []int64{1, 50_000, 99_000} { // units before the wrap, all within one interval
		srv.monoStart = time.Now().Add(-time.Duration(1<<32-before) * unit)
		s := &Socket{rateTAT: srv.rateNow()} // as open sets it
		if !srv.allowMessage(s) {
			t.Errorf("%v before the clock wraps: a socket's first message refused", time.Duration(before)*unit)
		}
	}
}

// TestRegressTinyRates: a rate so low that its schedule would overflow
// the limit's arithmetic is refused at start-up rather than silently
// letting everything through; the lowest allowed rate still limits.
func TestRegressTinyRates(t *testing.T) {
	for _, cfg := range []Config{
		{MessageRate: 4e-5, MessageBurst: 1},
		{HandshakesPerIP: 1e-11, HandshakeBurst: 1},
		{MessageRate: 1, MessageBurst: 20_000},
	} {
		cfg.Listen = "127.0.0.1:0"
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v: accepted, want a configuration error", cfg)
		}
	}
	srv, err := New(Config{Listen: "127.0.0.1:0", MessageRate: MinRate, MessageBurst: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := &Socket{rateTAT: srv.rateNow()}
	allowed := 0
	for range 10 {
		if srv.allowMessage(s) {
			allowed++
		}
	}
	if allowed != 1 {
		t.Errorf("message rate %v/s, burst 1: %d of 10 back-to-back messages allowed, want 1", MinRate, allowed)
	}
}

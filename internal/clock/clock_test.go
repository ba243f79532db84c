package clock

import (
	"testing"
	"time"
)

func TestFakeTickerFiresPerPeriod(t *testing.T) {
	start := time.Unix(1000, 0)
	f := NewFake(start)
	tk := f.NewTicker(time.Second)
	defer tk.Stop()

	f.Advance(999 * time.Millisecond)
	select {
	case <-tk.C():
		t.Fatal("ticked before its period")
	default:
	}
	f.Advance(time.Millisecond)
	select {
	case at := <-tk.C():
		if !at.Equal(start.Add(time.Second)) {
			t.Fatalf("tick at %v, want %v", at, start.Add(time.Second))
		}
	default:
		t.Fatal("no tick after one period")
	}
	if got := f.Now(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("Now = %v", got)
	}
}

func TestFakeTickerStop(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	tk := f.NewTicker(time.Second)
	tk.Stop()
	f.Advance(time.Minute)
	select {
	case <-tk.C():
		t.Fatal("stopped ticker ticked")
	default:
	}
}

func TestFakeTimerFiresOnceAndResets(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	tm := f.NewTimer(time.Unix(1, 0))
	f.Advance(999 * time.Millisecond)
	select {
	case <-tm.C():
		t.Fatal("fired early")
	default:
	}
	f.Advance(5 * time.Second)
	select {
	case at := <-tm.C():
		if !at.Equal(time.Unix(1, 0)) {
			t.Fatalf("fired at %v", at)
		}
	default:
		t.Fatal("did not fire")
	}
	f.Advance(time.Minute)
	select {
	case <-tm.C():
		t.Fatal("fired twice")
	default:
	}
	tm.ResetAt(f.Now())
	f.Advance(0)
	select {
	case <-tm.C():
	default:
		t.Fatal("a reset to now did not fire on Advance(0)")
	}
	tm.ResetAt(f.Now().Add(time.Second))
	tm.Stop()
	f.Advance(time.Hour)
	select {
	case <-tm.C():
		t.Fatal("a stopped timer fired")
	default:
	}
}

package rooms

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

// countObserver counts what it is told.
type countObserver struct {
	mu     sync.Mutex
	events map[string]int
	late   []time.Duration
}

func (o *countObserver) Wake(time.Duration)        {}
func (o *countObserver) Commit(int, time.Duration) {}
func (o *countObserver) Event(typ string, _ time.Duration) {
	o.mu.Lock()
	o.events[typ]++
	o.mu.Unlock()
}
func (o *countObserver) AlarmLate(d time.Duration) {
	o.mu.Lock()
	o.late = append(o.late, d)
	o.mu.Unlock()
}
func (o *countObserver) lates() []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]time.Duration(nil), o.late...)
}
func (o *countObserver) count(typ string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.events[typ]
}

// TestRegressAlarmLatenessOnceAfterFailedCommit: an alarm whose batch fails
// to commit runs again with RetryCount 0; den_alarm_lateness_seconds
// ("first attempts") should count that alarm once, not once per run.
func TestRegressAlarmLatenessOnceAfterFailedCommit(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	k := &revKind{fake: clock.NewFake(time.UnixMilli(1_700_000_000_000))}
	obs := &countObserver{events: map[string]int{}}
	rt, err := New(Config{Store: store, Kinds: []Kind{k.kind()}, Clock: k.fake, HibernateAfter: 10 * time.Second,
		EvictAfter: time.Minute, Observer: obs, CommitHook: func(ID) error {
			if failing.Load() {
				return errors.New("disk full")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rt.Shutdown(t.Context()); store.Close() }()
	s := join(t, rt, "rev", "a")
	revCmd(t, s, "set:1000")
	failing.Store(true)
	k.fake.Advance(time.Second)
	waitUntil(t, "the failed commit", func() bool { return rt.Stats().CommitsFailed >= 1 })
	failing.Store(false)
	waitUntil(t, "the alarm to run again", func() bool {
		k.fake.Advance(alarmFirstWait)
		return k.runs.Load() == 2
	})
	waitUntil(t, "both alarm events observed", func() bool { return obs.count("alarm") >= 2 })
	if l := obs.lates(); len(l) != 1 {
		t.Fatalf("one alarm, first attempt only: AlarmLate called %d times: %v", len(l), l)
	}
}

// TestRegressEventsObservedWhenWakeFails: a join that reaches a room whose
// wake fails is refused (503): like a failed batch's events it should be
// observed, "from its arrival ... to its failure".
func TestRegressEventsObservedWhenWakeFails(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	broken := Kind{Name: "broken", New: func(*State) Handler { panic("no") }}
	obs := &countObserver{events: map[string]int{}}
	rt, err := New(Config{Store: store, Kinds: []Kind{broken}, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rt.Shutdown(t.Context()); store.Close() }()
	j := newFjoin(rt, "/rooms/broken/x")
	rt.Join("broken", "x", j)
	select {
	case s := <-j.answer:
		if s != nil || j.status != 503 {
			t.Fatalf("join: %v %d, want a 503", s, j.status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	waitUntil(t, "the room to go", func() bool { r := rt.entry("broken", "x"); return r == nil || !r.isRunning() })
	if n := obs.count("connect"); n != 1 {
		t.Fatalf("connect events observed: %d, want 1", n)
	}
}

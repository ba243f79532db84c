package rooms

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

const indexTestStart = 1_700_000_000_000 // ms: where the tests' fake clocks start

// roomAlarm reads room id's alarm from its own file, with the room out of
// memory.
func roomAlarm(t *testing.T, store *storage.Store, kind, name string) (time.Time, bool) {
	t.Helper()
	sr, err := store.Room(IDFromName(kind, name).String(), kind, name)
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	at, _, ok, err := sr.Alarm()
	if err != nil {
		t.Fatal(err)
	}
	return at, ok
}

// TestWakeDuringFireChild is den, killed in the commit hook of the
// batch described in TestWakeDuringFireCrashKeepsTheDueAlarmIndexed.
func TestWakeDuringFireChild(t *testing.T) {
	dir := os.Getenv("DEN_WAKE_FIRE_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestWakeDuringFireCrashKeepsTheDueAlarmIndexed")
	}
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k := &revKind{fake: clock.NewFake(time.UnixMilli(indexTestStart))}
	var crash atomic.Bool
	rt := revRuntime(t, store, k, func(ID) error {
		if crash.Load() {
			KillSelf()
		}
		return nil
	})
	s := join(t, rt, "rev", "a")
	revCmd(t, s, "set:3600000") // T1 = start + 1 h
	sleepRoom(t, rt, k.fake, "rev", "a")
	// The scheduler's first step, by hand: T1 comes due and leaves the
	// heap to be fired...
	if due := rt.alarms.due(k.fake.Now().Add(time.Hour)); len(due) != 1 {
		t.Fatalf("%d alarms due, want 1", len(due))
	}
	// ...and before it is delivered a message wakes the room (loadAlarm
	// finds none in the scheduler) and moves the alarm two hours later.
	// den dies before that batch commits.
	crash.Store(true)
	rt.Message(s, true, []byte("set:7200000"))
	time.Sleep(10 * time.Second)
	t.Fatal("not killed")
}

// A room woken while the scheduler fires its alarm, by an event that moves
// the alarm later, indexes the later time only once its commit is
// durable: den killed before that leaves the room's own due alarm
// indexed, and it fires at the restart.
func TestWakeDuringFireCrashKeepsTheDueAlarmIndexed(t *testing.T) {
	dir := t.TempDir()
	RunKilledChild(t, "TestWakeDuringFireChild", "DEN_WAKE_FIRE_CRASH_DIR="+dir)
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	idx, err := store.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	at, ok := roomAlarm(t, store, "rev", "a")
	if !ok || len(idx) != 1 {
		t.Fatalf("room's alarm %v (set %v), index %+v", at, ok, idx)
	}
	if idx[0].At.After(at) {
		t.Errorf("after the crash node.db indexes the alarm at %v, the room's own file has it at %v (the index %v later)",
			idx[0].At.UTC(), at.UTC(), idx[0].At.Sub(at))
	}
	// Restarted with the clock a second past the room's alarm.
	k := &revKind{fake: clock.NewFake(at.Add(time.Second))}
	rt := revRuntime(t, store, k, nil)
	defer func() { _ = rt.Shutdown(t.Context()) }()
	waitUntil(t, "the room's due alarm to run after the restart", func() bool { return k.runs.Load() > 0 })
}

// trKind's Error sets the alarm to a time SetAlarm refuses.
type trKind struct {
	fake   *clock.Fake
	runs   atomic.Int32
	errors atomic.Int32
	setErr atomic.Value // error SetAlarm returned in Error
}

type trRoom struct {
	Base
	k  *trKind
	st *State
}

func (k *trKind) kind() Kind {
	return Kind{Name: "tr", New: func(st *State) Handler { return &trRoom{k: k, st: st} }}
}

func (r *trRoom) Message(s *Sock, _ bool, data []byte) error {
	switch string(data) {
	case "set":
		if err := r.st.SetAlarm(r.k.fake.Now().Add(time.Hour)); err != nil {
			return err
		}
	case "fail":
		return errors.New("the upstream is down")
	}
	s.SendText("ok")
	return nil
}

func (r *trRoom) Error(_ *Sock, _ error) {
	// A retry time computed from bad input: refused with ErrTimeRange.
	err := r.st.SetAlarm(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))
	r.k.setErr.Store(&err)
	r.k.errors.Add(1)
}

func (r *trRoom) Alarm(AlarmInfo) error {
	r.k.runs.Add(1)
	return nil
}

// A SetAlarm outside a batch (in Error, or a constructor) that fails
// leaves node.db's index as it was: one refused as out of range does not
// index year 10000 over the room's alarm an hour ahead, which fires after
// a restart.
func TestRefusedSetAlarmLeavesTheIndex(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	k := &trKind{fake: clock.NewFake(time.UnixMilli(indexTestStart))}
	newRT := func() *Runtime {
		rt, err := New(Config{Store: store, Kinds: []Kind{k.kind()}, Clock: k.fake, HibernateAfter: 10 * time.Second, EvictAfter: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	rt := newRT()
	s := join(t, rt, "tr", "a")
	revCmd(t, s, "set") // T1 = start + 1 h
	rt.Message(s, true, []byte("fail"))
	waitUntil(t, "Error to run", func() bool { return k.errors.Load() == 1 })
	if e := k.setErr.Load().(*error); !errors.Is(*e, storage.ErrTimeRange) {
		t.Fatalf("SetAlarm(year 10000) in Error: %v", *e)
	}
	_ = rt.Shutdown(t.Context())
	idx, _ := store.Alarms()
	at, ok := roomAlarm(t, store, "tr", "a")
	if !ok || len(idx) != 1 || idx[0].At.After(at) {
		t.Errorf("after a refused SetAlarm: room's alarm %v (set %v), node.db index %+v", at.UTC(), ok, idx)
	}
	rt = newRT()
	defer func() { _ = rt.Shutdown(t.Context()) }()
	if sched, _ := rt.alarms.get(IDFromName("tr", "a")); sched.After(at) {
		t.Errorf("after a restart the alarm due at %v is scheduled at %v", at.UTC(), sched.UTC())
	}
	k.fake.Advance(2 * time.Hour)
	waitUntil(t, "the alarm to run after the restart", func() bool { return k.runs.Load() > 0 })
}

package rooms

import (
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

type revKind struct {
	fake  *clock.Fake
	runs  atomic.Int32
	fail  atomic.Bool
	rearm atomic.Int64 // ms, 0: none
}

type revRoom struct {
	Base
	k  *revKind
	st *State
}

func (k *revKind) kind() Kind {
	return Kind{Name: "rev", New: func(st *State) Handler { return &revRoom{k: k, st: st} }}
}

func (r *revRoom) Message(s *Sock, _ bool, data []byte) error {
	cmd, arg, _ := strings.Cut(string(data), ":")
	n, _ := strconv.Atoi(arg)
	switch cmd {
	case "set":
		if err := r.st.SetAlarm(r.k.fake.Now().Add(time.Duration(n) * time.Millisecond)); err != nil {
			return err
		}
	case "del":
		if err := r.st.DeleteAlarm(); err != nil {
			return err
		}
	}
	s.SendText("ok " + string(data))
	return nil
}

func (r *revRoom) Alarm(AlarmInfo) error {
	r.k.runs.Add(1)
	if r.k.fail.Load() {
		return errors.New("fail")
	}
	if ms := r.k.rearm.Load(); ms != 0 {
		return r.st.SetAlarm(r.k.fake.Now().Add(time.Duration(ms) * time.Millisecond))
	}
	return nil
}

func revRuntime(t *testing.T, store *storage.Store, k *revKind, hook func(ID) error) *Runtime {
	t.Helper()
	rt, err := New(Config{Store: store, Kinds: []Kind{k.kind()}, Clock: k.fake, HibernateAfter: 10 * time.Second, EvictAfter: time.Minute, CommitHook: hook})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func revCmd(t *testing.T, s *fsock, cmd string) {
	t.Helper()
	n := len(s.msgs())
	s.rt.Message(s, true, []byte(cmd))
	waitUntil(t, cmd, func() bool { return len(s.msgs()) > n })
}

// An alarm that wakes a sleeping room and runs (and sets nothing new)
// leaves node.db's index: after a restart nothing fires.
func TestRegressAlarmFiredInSleepingRoomStaysIndexed(t *testing.T) {
	dir := t.TempDir()
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k := &revKind{fake: clock.NewFake(time.UnixMilli(1_700_000_000_000))}
	rt := revRuntime(t, store, k, nil)
	s := join(t, rt, "rev", "a")
	revCmd(t, s, "set:60000")
	sleepRoom(t, rt, k.fake, "rev", "a")
	k.fake.Advance(2 * time.Minute)
	waitUntil(t, "the alarm to run", func() bool { return k.runs.Load() == 1 })
	waitUntil(t, "the room asleep again", func() bool {
		k.fake.Advance(11 * time.Second)
		r := rt.entry("rev", "a")
		return r != nil && !r.isRunning()
	})
	idx, _ := store.Alarms()
	_ = rt.Shutdown(t.Context())
	rt2 := revRuntime(t, store, k, nil)
	defer func() { _ = rt2.Shutdown(t.Context()); store.Close() }()
	info, _ := rt2.Info("rev", "a")
	if len(idx) != 0 || info.Alarm != nil || rt2.Stats().AlarmsPending != 0 {
		t.Fatalf("an alarm that ran and was not set again: node.db index %+v, after a restart Info.Alarm %v", idx, info.Alarm)
	}
}

// A batch holding the alarm that fails to commit puts the (due) alarm
// back, but not at once: a commit that keeps failing must not run the
// handler in a loop.
func TestRegressAlarmCommitFailureHotLoop(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	k := &revKind{fake: clock.NewFake(time.UnixMilli(1_700_000_000_000))}
	rt := revRuntime(t, store, k, func(ID) error {
		if failing.Load() {
			return errors.New("disk full")
		}
		return nil
	})
	defer func() { _ = rt.Shutdown(t.Context()); store.Close() }()
	s := join(t, rt, "rev", "a")
	revCmd(t, s, "set:1000")
	failing.Store(true)
	k.fake.Advance(time.Second) // the clock stops here
	waitUntil(t, "the failed commit", func() bool { return rt.Stats().CommitsFailed >= 1 })
	id := IDFromName("rev", "a")
	waitUntil(t, "the alarm back in the scheduler", func() bool { _, ok := rt.alarms.get(id); return ok })
	at, _ := rt.alarms.get(id)
	if wait := at.Sub(k.fake.Now()); wait < alarmFirstWait {
		t.Fatalf("after a failed commit the alarm is due again in %v", wait)
	}
	if n := k.runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times", n)
	}
}

// An alarm the scheduler has taken from its heap as the room is deleted
// is turned away: it must not make the deleted room anew.
func TestRegressAlarmInFlightDoesNotReviveDeletedRoom(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	k := &revKind{fake: clock.NewFake(time.UnixMilli(1_700_000_000_000))}
	rt := revRuntime(t, store, k, nil)
	defer func() { _ = rt.Shutdown(t.Context()); store.Close() }()
	s := join(t, rt, "rev", "a")
	revCmd(t, s, "set:60000")
	// The scheduler's first step, by hand: the alarm leaves the heap.
	due := rt.alarms.due(k.fake.Now().Add(time.Minute))
	if len(due) != 1 {
		t.Fatalf("%d alarms due, want 1", len(due))
	}
	id := IDFromName("rev", "a")
	deleted := make(chan error, 1)
	go func() {
		_, err := rt.Delete("rev", "a")
		deleted <- err
	}()
	waitUntil(t, "the room's files deleted", func() bool {
		_, ok, err := store.Record(id.String())
		return err == nil && !ok
	})
	// Its second step: the alarm goes to the room.
	rt.alarms.fire(due[0])
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	// deliver makes a room's entry before it queues the event, so a room
	// made anew is in the index by now.
	if r := rt.entry("rev", "a"); r != nil {
		t.Fatal("the alarm made the deleted room anew")
	}
	if _, ok, _ := store.Record(id.String()); ok || k.runs.Load() != 0 {
		t.Fatalf("the deleted room is back (recorded %v), its alarm ran %d times", ok, k.runs.Load())
	}
}

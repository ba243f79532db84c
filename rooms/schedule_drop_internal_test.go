package rooms

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
)

// zrKind schedules events whose payload is "name@unixnano" (the intended
// time) and records, for each delivered one, the room's clock then.
type zrKind struct {
	fake *clock.Fake
	mu   sync.Mutex
	got  []zrGot
	// slow is how far the clock moves while a failing last retry runs
	// (a slow handler).
	slow time.Duration
	runs atomic.Int32
}

type zrGot struct {
	name     string
	intended time.Time
	now      time.Time
}

type zrRoom struct {
	Base
	k  *zrKind
	st *State
}

func (k *zrKind) kind() Kind {
	return Kind{Name: "zr", New: func(st *State) Handler { return &zrRoom{k: k, st: st} }}
}

func (r *zrRoom) Message(s *Sock, _ bool, data []byte) error {
	cmd, arg, _ := strings.Cut(string(data), ":")
	var err error
	switch cmd {
	case "sched": // sched:name@unixnano
		_, ns, _ := strings.Cut(arg, "@")
		n, _ := strconv.ParseInt(ns, 10, 64)
		err = r.st.Schedule(time.Unix(0, n), []byte(arg))
	}
	s.SendText("ok " + string(data) + " " + errStr(err))
	return nil
}

func (r *zrRoom) Alarm(info AlarmInfo) error {
	defer r.k.runs.Add(1)
	due, err := r.st.Due()
	if err != nil {
		return err
	}
	now := r.st.Now()
	poison := false
	r.k.mu.Lock()
	for _, d := range due {
		name, ns, _ := strings.Cut(string(d.Payload), "@")
		n, _ := strconv.ParseInt(ns, 10, 64)
		r.k.got = append(r.k.got, zrGot{name, time.Unix(0, n), now})
		poison = poison || name == "poison"
	}
	r.k.mu.Unlock()
	if poison {
		if info.RetryCount == alarmRetries {
			r.k.fake.Advance(r.k.slow) // the handler's work takes a while
		}
		return errors.New("poison")
	}
	return nil
}

func (k *zrKind) seen(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, g := range k.got {
		if g.name == name {
			return true
		}
	}
	return false
}

func zrSched(t *testing.T, s *fsock, name string, at time.Time) {
	t.Helper()
	cmd := "sched:" + name + "@" + strconv.FormatInt(at.UnixNano(), 10)
	revCmd(t, s, cmd)
	if got := lastMsg(s); got != "ok "+cmd+" " {
		t.Fatalf("%s: %q", cmd, got)
	}
}

// A scheduled event is not handed to Alarm before its time.
func TestScheduledNotDeliveredEarly(t *testing.T) {
	k := &zrKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	k.fake = fake
	s := join(t, rt, "zr", "a")
	intended := fake.Now().Truncate(time.Millisecond).Add(time.Second + 900*time.Microsecond)
	zrSched(t, s, "e", intended)
	id := IDFromName("zr", "a")
	at, ok := rt.alarms.get(id)
	if !ok {
		t.Fatal("no alarm")
	}
	fake.Advance(at.Sub(fake.Now())) // to the alarm's time, as a real timer would
	waitUntil(t, "the alarm to run", func() bool { return k.runs.Load() == 1 })
	fake.Advance(time.Second) // later alarms, if the first was a no-op
	waitUntil(t, "the event", func() bool { return k.seen("e") })
	k.mu.Lock()
	defer k.mu.Unlock()
	if g := k.got[0]; g.now.Before(g.intended) {
		t.Fatalf("event scheduled for %s handed to Alarm at %s (%v early; the alarm was armed for %s)",
			g.intended.Format(time.StampMicro), g.now.Format(time.StampMicro), g.intended.Sub(g.now), at.Format(time.StampMicro))
	}
}

// An alarm dropped after its last retry drops the events its failing
// handler was handed, not one that came due while that handler ran.
func TestDropKeepsAnEventDueDuringTheFailingRun(t *testing.T) {
	k := &zrKind{slow: 500 * time.Millisecond}
	rt, _, fake := fakeRuntime(t, k.kind())
	k.fake = fake
	s := join(t, rt, "zr", "a")
	id := IDFromName("zr", "a")
	zrSched(t, s, "poison", fake.Now().Add(time.Second))
	fake.Advance(time.Second)
	for i := 1; i <= alarmRetries; i++ {
		waitUntil(t, "the retry", func() bool { return rt.Stats().AlarmsRetried == int64(i) })
		waitUntil(t, "the retry armed", func() bool { _, ok := rt.alarms.get(id); return ok })
		if i < alarmRetries {
			fake.Advance(100 * time.Second)
		}
	}
	// The last retry is armed: an event due 300 ms after it, which that
	// run's Due does not hand over.
	retryAt, _ := rt.alarms.get(id)
	zrSched(t, s, "bystander", retryAt.Add(300*time.Millisecond))
	fake.Advance(retryAt.Sub(fake.Now()))
	waitUntil(t, "the drop", func() bool { return rt.Stats().AlarmsDropped == 1 })
	// Not dropped with the poison: its alarm stays, and it comes.
	fake.Advance(time.Second)
	waitUntil(t, "the bystander", func() bool { return k.seen("bystander") })
}

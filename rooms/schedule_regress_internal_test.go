package rooms

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

type skKind struct {
	fake  *clock.Fake
	runs  atomic.Int32
	fail  atomic.Bool
	mu    sync.Mutex
	got   []string
	infos []AlarmInfo
}

type skRoom struct {
	Base
	k  *skKind
	st *State
}

func (k *skKind) kind() Kind {
	return Kind{Name: "sk", New: func(st *State) Handler { return &skRoom{k: k, st: st} }}
}

func (r *skRoom) Message(s *Sock, _ bool, data []byte) error {
	defer func() {
		if p := recover(); p != nil {
			s.SendText("panic " + fmt.Sprint(p))
		}
	}()
	cmd, arg, _ := strings.Cut(string(data), ":")
	var err error
	switch cmd {
	case "sched": // sched:<ms>
		n, _ := strconv.Atoi(arg)
		err = r.st.Schedule(r.k.fake.Now().Add(time.Duration(n)*time.Millisecond), []byte(arg))
	case "many": // many:<n> all at +1s
		n, _ := strconv.Atoi(arg)
		for i := range n {
			if err = r.st.Schedule(r.k.fake.Now().Add(time.Second), []byte(strconv.Itoa(i))); err != nil {
				break
			}
		}
	case "at": // at:<unix seconds>
		n, _ := strconv.ParseInt(arg, 10, 64)
		err = r.st.Schedule(time.Unix(n, 0), []byte("far"))
	case "put":
		err = r.st.Storage.Put(arg, []byte("mine"))
	}
	if err != nil {
		s.SendText("err " + err.Error())
		return nil
	}
	s.SendText("ok " + string(data))
	return nil
}

func (r *skRoom) Alarm(info AlarmInfo) error {
	r.k.runs.Add(1)
	r.k.mu.Lock()
	r.k.infos = append(r.k.infos, info)
	r.k.mu.Unlock()
	if r.k.fail.Load() {
		return errors.New("fail")
	}
	due, err := r.st.Due()
	if err != nil {
		return err
	}
	r.k.mu.Lock()
	for _, d := range due {
		r.k.got = append(r.k.got, string(d.Payload))
	}
	r.k.mu.Unlock()
	return nil
}

func (k *skKind) gotN() int { k.mu.Lock(); defer k.mu.Unlock(); return len(k.got) }

func skRuntime(t *testing.T) (*Runtime, *skKind) {
	k := &skKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	k.fake = fake
	return rt, k
}

func lastMsg(s *fsock) string { m := s.msgs(); return m[len(m)-1] }

// An author's own KV key that looks like den's does not break Schedule:
// scheduled events live in a table of den's own.
func TestRegressScheduleKeyCollision(t *testing.T) {
	rt, _ := skRuntime(t)
	s := join(t, rt, "sk", "a")
	revCmd(t, s, "put:den.schedule/0")
	revCmd(t, s, "sched:1000")
	if got := lastMsg(s); got != "ok sched:1000" {
		t.Fatalf("Schedule after the author's key den.schedule/0: %q", got)
	}
}

// A Schedule call while a failed alarm waits for its retry keeps the
// retry's backoff.
func TestRegressScheduleDefeatsRetryBackoff(t *testing.T) {
	rt, k := skRuntime(t)
	s := join(t, rt, "sk", "a")
	revCmd(t, s, "sched:1000")
	k.fail.Store(true)
	k.fake.Advance(time.Second)
	waitUntil(t, "first run", func() bool { return k.runs.Load() == 1 })
	id := IDFromName("sk", "a")
	waitUntil(t, "the retry", func() bool { _, ok := rt.alarms.get(id); return ok })
	revCmd(t, s, "sched:500") // an event due before the retry
	at, ok := rt.alarms.get(id)
	if wait := at.Sub(k.fake.Now()); !ok || wait < alarmFirstWait {
		t.Fatalf("after a Schedule the failed alarm is due in %v (scheduled %v)", wait, ok)
	}
	if n := k.runs.Load(); n != 1 {
		t.Fatalf("the failing alarm ran %d times with the clock stopped; infos %+v", n, k.infos)
	}
}

// After the last retry the alarm is dropped with the scheduled events due
// then (they failed it); a later one still fires.
func TestRegressScheduleStuckAfterDrop(t *testing.T) {
	rt, k := skRuntime(t)
	s := join(t, rt, "sk", "a")
	revCmd(t, s, "sched:1000")
	revCmd(t, s, "sched:3600000")
	k.fail.Store(true)
	k.fake.Advance(time.Second)
	for i := 1; i <= alarmRetries; i++ {
		waitUntil(t, "run", func() bool { return k.runs.Load() == int32(i) })
		// The retry is stored with the failed run's batch: then the clock
		// moves past it.
		id := IDFromName("sk", "a")
		waitUntil(t, "the retry", func() bool { _, ok := rt.alarms.get(id); return ok })
		k.fake.Advance(100 * time.Second)
	}
	waitUntil(t, "last run", func() bool { return k.runs.Load() == alarmRetries+1 })
	waitUntil(t, "dropped", func() bool { return rt.Stats().AlarmsDropped == 1 })
	k.fail.Store(false)
	waitUntil(t, "the later event's alarm", func() bool { return rt.Stats().AlarmsPending == 1 })
	k.fake.Advance(time.Hour)
	waitUntil(t, "the later event", func() bool { return k.gotN() == 1 })
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.got[0] != "3600000" {
		t.Fatalf("got %q, want only the later event", k.got)
	}
}

// More than 128 due at once all come, in order.
func TestRegressScheduleManyDue(t *testing.T) {
	rt, k := skRuntime(t)
	s := join(t, rt, "sk", "a")
	revCmd(t, s, "many:300")
	k.fake.Advance(time.Second)
	waitUntil(t, "all 300", func() bool { return k.gotN() == 300 })
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, g := range k.got {
		if g != strconv.Itoa(i) {
			t.Fatalf("out of order at %d: %s", i, g)
		}
	}
}

// A time beyond year 9999 is refused, not fired at once.
func TestRegressScheduleHugeTime(t *testing.T) {
	rt, k := skRuntime(t)
	s := join(t, rt, "sk", "a")
	revCmd(t, s, "at:"+strconv.FormatInt(1<<60, 10))
	if got := lastMsg(s); !strings.HasPrefix(got, "err ") || k.gotN() != 0 || rt.Stats().AlarmsPending != 0 {
		t.Fatalf("an event scheduled for year ~3e10: %q, %d fired", got, k.gotN())
	}
}

// The fake clock's timer contract: at once if at has passed.
func TestRegressFakeTimerPast(t *testing.T) {
	f := clock.NewFake(time.Now().Truncate(time.Millisecond))
	tm := f.NewTimer(f.Now().Add(-time.Second))
	select {
	case <-tm.C():
	case <-time.After(200 * time.Millisecond):
		t.Fatal("a fake timer set in the past never fires (until the next Advance)")
	}
}

// A store's MaxBatchKeys below 128 does not stop Due.
func TestRegressScheduleSmallBatchLimit(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir(), Limits: storage.Limits{MaxBatchKeys: 64}})
	if err != nil {
		t.Fatal(err)
	}
	k := &skKind{fake: clock.NewFake(time.Now().Truncate(time.Millisecond))}
	rt, err := New(Config{Store: store, Kinds: []Kind{k.kind()}, Clock: k.fake, HibernateAfter: 10 * time.Second, EvictAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rt.Shutdown(t.Context()); store.Close() }()
	s := join(t, rt, "sk", "a")
	revCmd(t, s, "many:100")
	k.fake.Advance(time.Second)
	waitUntil(t, "all 100 due events", func() bool { return k.gotN() == 100 })
}

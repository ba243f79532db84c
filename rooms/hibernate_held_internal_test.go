package rooms

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

// ordKind logs, in order, the events its handlers saw. Its constructor
// fails (after waiting for gate) while fails > 0.
type ordKind struct {
	mu       sync.Mutex
	log      []string
	fails    atomic.Int32
	building chan struct{}
	gate     chan struct{}
	sawA     atomic.Bool
}

type ordRoom struct {
	Base
	k  *ordKind
	st *State
}

func (k *ordKind) kind() Kind {
	return Kind{Name: "ord", New: func(st *State) Handler {
		if k.fails.Load() > 0 {
			k.fails.Add(-1)
			k.building <- struct{}{}
			<-k.gate
			panic("transient failure")
		}
		return &ordRoom{k: k, st: st}
	}}
}

func (k *ordKind) add(s string) { k.mu.Lock(); k.log = append(k.log, s); k.mu.Unlock() }
func (k *ordKind) get() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.log)
}

func (o *ordRoom) Message(s *Sock, text bool, data []byte) error {
	o.k.add(fmt.Sprintf("msg %s (room has %d sockets)", data, len(o.st.Sockets(""))))
	return nil
}
func (o *ordRoom) Close(s *Sock, code int, reason string, clean bool) error {
	o.k.add(fmt.Sprintf("close %d", code))
	return nil
}

// hsock is a gateway socket whose Close runs onClose first (on the
// caller's goroutine), e.g. another client's message arriving then.
type hsock struct {
	*fsock
	onClose func()
}

func (h *hsock) Close(code int, reason string) {
	if f := h.onClose; f != nil {
		h.onClose = nil
		f()
	}
	h.fsock.Close(code, reason)
}

type hjoin struct {
	*fjoin
	hs *hsock
}

func (j *hjoin) Accept(v any) Socket {
	s := newFsock(j.rt)
	s.SetValue(v)
	j.hs = &hsock{fsock: s}
	j.answer <- s
	return j.hs
}

func hjoinRoom(t *testing.T, rt *Runtime, kind, name string) *hsock {
	t.Helper()
	j := &hjoin{fjoin: &fjoin{rt: rt, req: httptest.NewRequest(http.MethodGet, "/rooms/"+kind+"/"+name, nil), answer: make(chan *fsock, 1)}}
	rt.Join(kind, name, j)
	if s := <-j.answer; s == nil {
		t.Fatalf("refused")
	}
	return j.hs
}

// setupHeldWhileAwake: A's close is held by a failed wake, and an event
// arriving during failWake makes the goroutine wake again (wakeAgain):
// the held close must go back into the queue, first.
func setupHeldWhileAwake(t *testing.T) (*Runtime, *ordKind, *room, *fsock, *hsock, *fsock) {
	k := &ordKind{building: make(chan struct{}, 1), gate: make(chan struct{})}
	rt, _, fake := fakeRuntime(t, k.kind())
	a := join(t, rt, "ord", "o")
	b := hjoinRoom(t, rt, "ord", "o")
	c := join(t, rt, "ord", "o")
	sleepRoom(t, rt, fake, "ord", "o")
	r := rt.entry("ord", "o")

	k.fails.Store(1)
	// When failWake closes B (1011, it sent a message), client C sends a
	// message: it arrives after A's close.
	b.onClose = func() { rt.Message(c, true, []byte("from-C")) }
	a.clientClose() // wakes the room; its constructor fails
	<-k.building
	rt.Message(b, true, []byte("from-B"))
	close(k.gate)
	waitUntil(t, "C's message handled", func() bool {
		for _, l := range k.get() {
			if len(l) > 10 && l[:10] == "msg from-C" {
				return true
			}
		}
		return false
	})
	time.Sleep(100 * time.Millisecond)
	return rt, k, r, a, b, c
}

// A closed before C sent; the room must see A's close before C's message.
func TestRegressHeldCloseReorderedAfterWakeAgain(t *testing.T) {
	rt, k, r, _, _, _ := setupHeldWhileAwake(t)
	r.mu.Lock()
	running, held := r.running, len(r.held)
	r.mu.Unlock()
	log := k.get()
	t.Logf("log: %q; running=%v held=%d", log, running, held)
	iClose, iC := -1, -1
	for i, l := range log {
		if l == "close 1001" && iClose < 0 {
			iClose = i
		}
		if len(l) > 10 && l[:10] == "msg from-C" {
			iC = i
		}
	}
	_ = rt
	if iClose < 0 || iClose > iC {
		t.Fatalf("A's close (held by the failed wake) was not delivered before C's later message: log %q, room running=%v with %d held events", log, running, held)
	}
}

// Shutdown delivers the closes a failed wake held.
func TestRegressHeldCloseLostAtShutdown(t *testing.T) {
	rt, k, _, _, _, _ := setupHeldWhileAwake(t)
	if err := rt.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	log := k.get()
	if !slices.Contains(log, "close 1001") {
		t.Fatalf("after Shutdown, A's close never reached the room: log %q", log)
	}
}

// No hook: only the fake gateway's own asynchronous Closed for B (failWake
// closed it with 1011), which wakes the room again at once. A's close,
// held by the failed wake, runs in that wake, before B's: never left in
// an awake room until it next sleeps.
func TestRegressHeldStrandedNatural(t *testing.T) {
	for range 20 {
		k := &ordKind{building: make(chan struct{}, 1), gate: make(chan struct{})}
		rt, _, fake := fakeRuntime(t, k.kind())
		a := join(t, rt, "ord", "o")
		b := join(t, rt, "ord", "o")
		sleepRoom(t, rt, fake, "ord", "o")
		k.fails.Store(1)
		a.clientClose()
		<-k.building
		rt.Message(b, true, []byte("from-B"))
		close(k.gate)
		waitUntil(t, "both closes handled", func() bool {
			return slices.Contains(k.get(), "close 1001") && slices.Contains(k.get(), "close 1011")
		})
		if log := k.get(); slices.Index(log, "close 1001") > slices.Index(log, "close 1011") {
			t.Fatalf("A's held close ran after B's later one: %q", log)
		}
	}
}

// Deleting an awake room counts as an eviction: Wakes stays equal to
// Hibernations+Evictions+Rooms when no wake failed.
func TestRegressStatsInvariantAfterDelete(t *testing.T) {
	k := &flakyKind{}
	rt, _, _ := fakeRuntime(t, k.kind())
	a := join(t, rt, "flaky", "d")
	rt.Message(a, true, []byte("x"))
	waitUntil(t, "answer", func() bool { return len(a.msgs()) == 1 })
	if _, err := rt.Delete("flaky", "d"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "goroutine gone", func() bool { return rt.awake.Load() == 0 })
	st := rt.Stats()
	if st.Wakes != st.Hibernations+st.Evictions+int64(st.Rooms) {
		t.Fatalf("after Delete: %d wakes, but %d hibernations + %d evictions + %d awake", st.Wakes, st.Hibernations, st.Evictions, st.Rooms)
	}
}

type deferKind struct {
	in, gate chan struct{}
	ran      atomic.Bool
}
type deferRoom struct {
	Base
	k  *deferKind
	st *State
}

func (k *deferKind) kind() Kind {
	return Kind{Name: "def", New: func(st *State) Handler { return &deferRoom{k: k, st: st} }}
}
func (d *deferRoom) Message(s *Sock, text bool, data []byte) error {
	d.k.in <- struct{}{}
	<-d.k.gate
	d.st.Defer(func() error { d.k.ran.Store(true); return nil })
	return nil
}

// Work a handler deferred in the last batch before Shutdown still runs:
// a stopping room takes its own deferred work.
func TestRegressDeferredLostAtShutdown(t *testing.T) {
	k := &deferKind{in: make(chan struct{}), gate: make(chan struct{})}
	rt, _, _ := fakeRuntime(t, k.kind())
	a := join(t, rt, "def", "x")
	rt.Message(a, true, []byte("go"))
	<-k.in
	done := make(chan error)
	go func() { done <- rt.Shutdown(t.Context()) }()
	r := rt.entry("def", "x")
	waitUntil(t, "stopped", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.stopped })
	close(k.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !k.ran.Load() {
		t.Fatal("the deferred work of a committed event never ran: Shutdown returned without it")
	}
}

// alarmSetter sets an alarm two minutes ahead at each request.
type alarmSetter struct {
	Base
	st *State
}

func (a *alarmSetter) Request(w http.ResponseWriter, r *http.Request) error {
	return a.st.SetAlarm(a.st.Now().Add(2 * time.Minute))
}

// A room that cannot wake (its constructor panics on its data) with an
// alarm to deliver is retried after waits that double, not every second
// for ever: over two minutes, a handful of times.
func TestFailedWakesBackOff(t *testing.T) {
	var fail atomic.Bool
	var tries atomic.Int64
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
	rt, err := New(Config{Store: store, Clock: fake, HibernateAfter: time.Hour, EvictAfter: time.Minute,
		Kinds: []Kind{{Name: "k", New: func(st *State) Handler {
			if fail.Load() {
				tries.Add(1)
				panic("broken room")
			}
			return &alarmSetter{st: st}
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Shutdown(t.Context()); store.Close() })
	rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/rooms/k/c", nil), "k", "c")
	waitUntil(t, "c evicted", func() bool { fake.Advance(time.Second); return rt.entry("k", "c") == nil })
	fail.Store(true)
	fake.Advance(2 * time.Minute) // the alarm fires, the wake fails, the alarm is held
	waitUntil(t, "the first failed wake", func() bool { return tries.Load() >= 1 })
	r := rt.entry("k", "c")
	asleep := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.running
	}
	for range 120 { // two minutes, a second at a time, each the sweep's chance to retry
		fake.Advance(time.Second)
		r.offerSleep(fake.Now())
		waitUntil(t, "the retry over", asleep)
	}
	if n := tries.Load(); n < 4 || n > 10 {
		t.Fatalf("a room that cannot wake was tried %d times in two minutes; want a few, waits doubling", n)
	}
	if got := wakeWait(100); got != maxWakeWait {
		t.Errorf("the wait after 100 failed wakes is %v, want at most %v", got, maxWakeWait)
	}
}

// A room evicted, whose alarm comes due while the node is at its room
// limit, holds the alarm without sockets: the admin API calls it evicted,
// not hibernated (asleep with its sockets open), and Stats does not count
// it hibernated either.
func TestRoomHoldingOnlyAnAlarmIsNotHibernated(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
	rt, err := New(Config{Store: store, Clock: fake, MaxActive: 1, HibernateAfter: time.Hour, EvictAfter: time.Minute,
		Kinds: []Kind{{Name: "k", New: func(st *State) Handler { return &alarmSetter{st: st} }}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Shutdown(t.Context()); store.Close() })
	rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/rooms/k/c", nil), "k", "c")
	waitUntil(t, "c evicted", func() bool { fake.Advance(time.Second); return rt.entry("k", "c") == nil })
	join(t, rt, "k", "a") // the one slot: a stays awake
	fake.Advance(2 * time.Minute)
	waitUntil(t, "c's alarm held", func() bool {
		r := rt.entry("k", "c")
		if r == nil {
			return false
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.held) == 1
	})
	if info, err := rt.Info("k", "c"); err != nil || info.State != "evicted" {
		t.Fatalf("a room holding only its alarm: %+v (%v), want evicted", info, err)
	}
	if st := rt.Stats(); st.Hibernated != 0 || st.Rooms != 1 {
		t.Fatalf("a room holding only its alarm beside one awake: %d hibernated, %d awake; want 0 and 1", st.Hibernated, st.Rooms)
	}
}

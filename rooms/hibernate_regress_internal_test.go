package rooms

import (
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

// flaky's constructor panics while fail is set; its handler records closes.
type flakyKind struct {
	fail   atomic.Bool
	closes atomic.Int32
}

type flakyRoom struct {
	Base
	k *flakyKind
}

func (k *flakyKind) kind() Kind {
	return Kind{Name: "flaky", New: func(st *State) Handler {
		if k.fail.Load() {
			panic("transient failure")
		}
		return &flakyRoom{k: k}
	}}
}

func (f *flakyRoom) Close(*Sock, int, string, bool) error { f.k.closes.Add(1); return nil }

func (f *flakyRoom) Message(s *Sock, text bool, data []byte) error {
	s.SendText("ok")
	return nil
}

func sleepRoom(t *testing.T, rt *Runtime, fake interface{ Advance(time.Duration) }, kind, name string) {
	t.Helper()
	waitUntil(t, kind+"/"+name+" asleep", func() bool {
		fake.Advance(11 * time.Second)
		r := rt.entry(kind, name)
		return r != nil && !r.isRunning()
	})
}

// A close that arrives while the room cannot be woken waits for the next
// wake: Handler.Close comes exactly once per socket, even then.
func TestRegressCloseLostOnFailedWake(t *testing.T) {
	k := &flakyKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	a := join(t, rt, "flaky", "f")
	b := join(t, rt, "flaky", "f")
	sleepRoom(t, rt, fake, "flaky", "f")

	k.fail.Store(true) // e.g. the storage pool or the disk fails for a moment
	a.clientClose()
	waitUntil(t, "the failed wake", func() bool {
		r := rt.entry("flaky", "f")
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.running && len(r.held) == 1
	})
	k.fail.Store(false)

	rt.Message(b, true, []byte("hi"))
	waitUntil(t, "b's answer", func() bool { return len(b.msgs()) == 1 })
	if n := k.closes.Load(); n != 1 {
		t.Fatalf("socket a left while the room failed to wake: Close ran %d times, want 1", n)
	}
}

// A failed wake brought nothing into memory: it counts as neither a wake
// nor a sleep.
func TestRegressFailedWakeCountedAsHibernation(t *testing.T) {
	k := &flakyKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	a := join(t, rt, "flaky", "g")
	sleepRoom(t, rt, fake, "flaky", "g")
	before := rt.Stats()
	k.fail.Store(true)
	rt.Message(a, true, []byte("hi"))
	waitUntil(t, "a closed 1011", func() bool { return a.code() == 1011 })
	waitUntil(t, "the room out of memory", func() bool { r := rt.entry("flaky", "g"); return r == nil || !r.isRunning() })
	after := rt.Stats()
	if after.Hibernations != before.Hibernations || after.Evictions != before.Evictions || after.Wakes != before.Wakes {
		t.Fatalf("a failed wake changed the counts:\nbefore %+v\nafter  %+v", before, after)
	}
}

// After Shutdown, a room without sockets is not "hibernated": it left
// memory.
func TestRegressInfoAfterShutdown(t *testing.T) {
	k := &flakyKind{}
	rt, _, _ := fakeRuntime(t, k.kind())
	a := join(t, rt, "flaky", "h")
	a.clientClose()
	waitUntil(t, "the close", func() bool { return rt.entry("flaky", "h").nsocks.Load() == 0 })
	if err := rt.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	info, _ := rt.Info("flaky", "h")
	st := rt.Stats()
	if info.State == "hibernated" || st.Hibernated != 0 {
		t.Fatalf("a room without sockets after Shutdown: info %+v, stats %+v", info, st)
	}
}

// Every wake but those of the rooms awake now ended in a hibernation or an
// eviction, also when events came while the room was going to sleep.
func TestRegressWakesWithoutSleeps(t *testing.T) {
	k := &flakyKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	a := join(t, rt, "flaky", "w")
	for i := range 200 {
		fake.Advance(11 * time.Second)
		time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		rt.Message(a, true, []byte("x"))
		waitUntil(t, "the answer", func() bool { return len(a.msgs()) == i+1 })
	}
	sleepRoom(t, rt, fake, "flaky", "w")
	st := rt.Stats()
	if st.Wakes != st.Hibernations+st.Evictions+int64(st.Rooms) {
		t.Fatalf("asleep: %d wakes, but %d hibernations + %d evictions + %d awake", st.Wakes, st.Hibernations, st.Evictions, st.Rooms)
	}
}

// ctorDeferKind's constructor defers one piece of work each time it runs.
type ctorDeferKind struct {
	built, ran atomic.Int32
}

func (k *ctorDeferKind) kind() Kind {
	return Kind{Name: "dk", New: func(st *State) Handler {
		k.built.Add(1)
		st.Defer(func() error { k.ran.Add(1); return nil })
		return Base{}
	}}
}

// A wake whose first batch fails to commit rebuilds the object, and the
// work its constructor defers runs before the room leaves memory: no
// room sleeps with deferred work, however it was built.
func TestConstructorDeferRunsAfterAFailedCommit(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	k := &ctorDeferKind{}
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
	rt, err := New(Config{Store: store, Kinds: []Kind{k.kind()}, Clock: fake,
		HibernateAfter: 10 * time.Second, EvictAfter: time.Minute,
		CommitHook: func(ID) error {
			if fail.CompareAndSwap(true, false) {
				return errors.New("injected disk failure")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Shutdown(t.Context()); store.Close() })
	// An HTTP request, so that no socket's close starts a later batch.
	req := func() int {
		w := httptestRecorder()
		rt.ServeHTTP(w, httptestRequest(), "dk", "a")
		return w.Code
	}
	evicted := func() bool {
		fake.Advance(time.Minute + time.Second)
		return rt.entry("dk", "a") == nil
	}
	req()
	waitUntil(t, "the first object's deferred work", func() bool { return k.ran.Load() == 1 })
	waitUntil(t, "the room evicted", evicted)
	fail.Store(true)
	if code := req(); code != http.StatusServiceUnavailable {
		t.Fatalf("the request whose batch failed to commit: %d, want 503", code)
	}
	waitUntil(t, "the rebuild after the failed commit", func() bool { return k.built.Load() == 3 })
	waitUntil(t, "the room evicted again", evicted)
	if got := k.ran.Load(); got != 2 {
		t.Fatalf("objects built %d, deferred work run %d times: want 2, the rebuilt object's before the room left", k.built.Load(), got)
	}
}

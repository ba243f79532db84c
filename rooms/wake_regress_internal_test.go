package rooms

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
)

// autoCtorKind's constructor sets the auto-response "ping" → "pong-N",
// N counting its runs, and then panics while fail is set.
type autoCtorKind struct {
	fail  atomic.Bool
	built atomic.Int32
}

func (k *autoCtorKind) kind() Kind {
	return Kind{Name: "autoctor", New: func(st *State) Handler {
		n := k.built.Add(1)
		_ = st.SetAutoResponse("ping", "pong-"+strconv.Itoa(int(n)))
		if k.fail.Load() {
			panic("broken room")
		}
		return Base{}
	}}
}

// A constructor that sets an auto-response and then panics leaves the pair
// the room had: the gateway must not answer for an object that never came
// up.
func TestRegressFailedConstructorKeepsNoAutoResponse(t *testing.T) {
	k := &autoCtorKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	a := join(t, rt, "autoctor", "r")
	sleepRoom(t, rt, fake, "autoctor", "r")
	k.fail.Store(true)
	w := httptestRecorder()
	rt.ServeHTTP(w, httptestRequest(), "autoctor", "r")
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("a request to a room that cannot wake: %d, want 503", w.Code)
	}
	waitUntil(t, "the failed wake over", func() bool { return !rt.entry("autoctor", "r").isRunning() })
	rt.Message(a, true, []byte("ping"))
	if got := a.msgs(); !slices.Equal(got, []string{"pong-1"}) {
		t.Fatalf("ping answered %q after the second constructor panicked, want the first one's [pong-1]", got)
	}
}

// ctxKind answers each message with "ok" and keeps the Context of the
// object it built last, which retire cancels as it tears the object down.
type ctxKind struct {
	ctx  atomic.Pointer[context.Context]
	fail atomic.Bool // the constructor panics
}

type okRoom struct{ Base }

func (okRoom) Message(s *Sock, _ bool, _ []byte) error {
	s.SendText("ok")
	return nil
}

func (k *ctxKind) kind() Kind {
	return Kind{Name: "ctx", New: func(st *State) Handler {
		if k.fail.Load() {
			panic("broken room")
		}
		ctx := st.Context()
		k.ctx.Store(&ctx)
		return okRoom{}
	}}
}

// A message that comes while the room tears its object down wakes it
// again at once (wakeAgain): the room never left memory, so that counts
// as neither a hibernation nor a wake.
func TestRegressCutSleepNotCounted(t *testing.T) {
	k := &ctxKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	a := join(t, rt, "ctx", "r")
	cutSleep(t, rt, fake, k, func() { rt.Message(a, true, []byte("x")) })
	waitUntil(t, "the answer", func() bool { return len(a.msgs()) == 1 })
	if st := rt.Stats(); st.Hibernations != 0 || st.Wakes != 1 || st.Rooms != 1 {
		t.Fatalf("after a sleep cut short: %d hibernations, %d wakes, %d awake; want 0, 1, 1", st.Hibernations, st.Wakes, st.Rooms)
	}
	sleepRoom(t, rt, fake, "ctx", "r")
	if st := rt.Stats(); st.Hibernations != 1 || st.Wakes != 1 || st.Rooms != 0 || st.Hibernated != 1 {
		t.Fatalf("asleep: %d hibernations, %d wakes, %d awake, %d hibernated; want 1, 1, 0, 1", st.Hibernations, st.Wakes, st.Rooms, st.Hibernated)
	}
	rt.Message(a, true, []byte("y"))
	waitUntil(t, "the second answer", func() bool { return len(a.msgs()) == 2 })
	if st := rt.Stats(); st.Rooms != 1 || st.Hibernated != 0 {
		t.Fatalf("woken: %d awake, %d hibernated; want 1 and 0", st.Rooms, st.Hibernated)
	}
}

// cutSleep lets the room of k's last object sleep, and runs send once the
// object is torn down but before the room can leave memory: retire takes
// rt.mu for that, and it is held here meanwhile.
func cutSleep(t *testing.T, rt *Runtime, fake *clock.Fake, k *ctxKind, send func()) {
	t.Helper()
	torn := *k.ctx.Load()
	rt.mu.Lock()
	locked := true
	defer func() {
		if locked {
			rt.mu.Unlock()
		}
	}()
	waitUntil(t, "the object torn down", func() bool {
		fake.Advance(11 * time.Second)
		return torn.Err() != nil
	})
	send()
	rt.mu.Unlock()
	locked = false
}

// A sleep cut short whose wake then fails leaves the room out of memory
// after all: that sleep is counted, and no wake for the failed one.
func TestCutSleepCountedWhenTheWakeFails(t *testing.T) {
	k := &ctxKind{}
	rt, _, fake := fakeRuntime(t, k.kind())
	a := join(t, rt, "ctx", "f")
	cutSleep(t, rt, fake, k, func() {
		k.fail.Store(true)
		rt.Message(a, true, []byte("x"))
	})
	r := rt.entry("ctx", "f")
	waitUntil(t, "a's close held by the failed wake", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.running && len(r.held) == 1
	})
	if st := rt.Stats(); st.Hibernations != 1 || st.Wakes != 1 || st.Rooms != 0 || st.Hibernated != 1 {
		t.Fatalf("asleep after the failed wake: %d hibernations, %d wakes, %d awake, %d hibernated; want 1, 1, 0, 1", st.Hibernations, st.Wakes, st.Rooms, st.Hibernated)
	}
}

// countingJoin notes, as it is accepted, how many sockets the room counts.
type countingJoin struct {
	*fjoin
	r      func() *room
	nsocks int32
}

func (j *countingJoin) Accept(v any) Socket {
	j.nsocks = j.r().nsocks.Load()
	return j.fjoin.Accept(v)
}

// A join is answered once the room counts its socket: a sweep that came
// between took the room for one without sockets, and put it to sleep
// after EvictAfter rather than HibernateAfter.
func TestJoinAnsweredOnceItsSocketIsCounted(t *testing.T) {
	k := &ctxKind{}
	rt, _, _ := fakeRuntime(t, k.kind())
	j := &countingJoin{fjoin: newFjoin(rt, "/rooms/ctx/n"), r: func() *room { return rt.entry("ctx", "n") }}
	rt.Join("ctx", "n", j)
	select {
	case s := <-j.answer:
		if s == nil {
			t.Fatalf("refused: %d", j.status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	if j.nsocks != 1 {
		t.Fatalf("the room counted %d sockets as its first join was accepted, want 1", j.nsocks)
	}
}

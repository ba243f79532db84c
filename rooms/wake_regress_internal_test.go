package rooms

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
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
	ctx atomic.Pointer[context.Context]
}

type okRoom struct{ Base }

func (okRoom) Message(s *Sock, _ bool, _ []byte) error {
	s.SendText("ok")
	return nil
}

func (k *ctxKind) kind() Kind {
	return Kind{Name: "ctx", New: func(st *State) Handler {
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
	torn := *k.ctx.Load()
	// retire takes rt.mu after the teardown, to leave the index or wake
	// again: held here, the message surely comes in between.
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
	rt.Message(a, true, []byte("x"))
	rt.mu.Unlock()
	locked = false
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

package rooms

import (
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
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

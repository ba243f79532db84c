package rooms

import (
	"fmt"
	"testing"
	"time"
)

// The sweep visits only rooms that are awake or hold events: a node with
// many sleeping rooms must not pay for them on every sweep, and a room
// that wakes must be visited again, or it would never sleep.
func TestSweepVisitsOnlyAwakeRooms(t *testing.T) {
	rt, _, fake := fakeRuntime(t, Kind{Name: "plain", New: func(*State) Handler { return &Base{} }})
	socks := make([]*fsock, 20)
	for i := range socks {
		socks[i] = join(t, rt, "plain", fmt.Sprintf("r%d", i))
	}
	watched := func() int {
		rt.watchMu.Lock()
		defer rt.watchMu.Unlock()
		return len(rt.watched)
	}
	if n := watched(); n != len(socks) {
		t.Fatalf("%d rooms awake, the sweep visits %d", len(socks), n)
	}
	waitUntil(t, "every room asleep", func() bool {
		fake.Advance(11 * time.Second)
		return rt.Stats().Rooms == 0
	})
	waitUntil(t, "the sweep to let go of sleeping rooms", func() bool {
		fake.Advance(time.Second)
		return watched() == 0
	})
	rt.Message(socks[3], true, []byte("wake"))
	waitUntil(t, "the room to wake", func() bool { return rt.Stats().Rooms == 1 })
	if n := watched(); n != 1 {
		t.Fatalf("one room awake, the sweep visits %d", n)
	}
	waitUntil(t, "the woken room to sleep again", func() bool {
		fake.Advance(11 * time.Second)
		return rt.Stats().Rooms == 0
	})
}

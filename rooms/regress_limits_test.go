package rooms_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
)

// TestRegressNodeFullLeavesNoPhantomRooms: a join or request refused
// because MaxActive rooms are awake leaves no entry for its room in the
// runtime's index, so a client naming fresh rooms cannot grow it, and the
// room stays absent.
func TestRegressNodeFullLeavesNoPhantomRooms(t *testing.T) {
	fake := clock.NewFake(time.Now())
	n := startNode(t, t.TempDir(), rooms.Config{MaxActive: 1, Clock: fake, HibernateAfter: time.Hour, EvictAfter: time.Hour})
	a, code := dialStatus(t, n, "/rooms/chat/a?user=ann")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("join a: %d", code)
	}
	read(t, a)
	read(t, a)
	const refused = 50
	for i := range refused {
		if code, _ := httpDo(t, "GET", n.url(fmt.Sprintf("/rooms/chat/ghost-%d/messages", i)), ""); code != http.StatusServiceUnavailable {
			t.Fatalf("request %d at the limit: %d, want 503", i, code)
		}
	}
	if st := n.rt.Stats(); st.NodeFull != refused || st.Hibernated != 0 {
		t.Errorf("after %d refusals: NodeFull %d, Hibernated %d, want %d and 0", refused, st.NodeFull, st.Hibernated, refused)
	}
	info, err := n.rt.Info("chat", "ghost-0")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != "absent" {
		t.Errorf("a room only ever refused: state %q, want absent", info.State)
	}
}

// TestRegressNodeFullCloseWaits: a message to a sleeping room at
// MaxActive closes its socket with 1013, and that close must not wake the
// room past the limit: it waits until the awake room sleeps, then the
// sleeping room wakes to handle it.
func TestRegressNodeFullCloseWaits(t *testing.T) {
	fake := clock.NewFake(time.Now())
	n := startNode(t, t.TempDir(), rooms.Config{MaxActive: 1, Clock: fake, HibernateAfter: 10 * time.Second, EvictAfter: 10 * time.Second})
	a, _ := dialStatus(t, n, "/rooms/chat/a?user=ann")
	read(t, a)
	read(t, a)
	waitFor(t, "a to hibernate", func() bool {
		fake.Advance(time.Second)
		return n.rt.Stats().Rooms == 0
	})
	b, code := dialStatus(t, n, "/rooms/chat/b?user=bob")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("join b: %d", code)
	}
	read(t, b)
	read(t, b)
	send(t, a, `{"type":"message","text":"hi"}`)
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := a.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		t.Fatalf("a message to a sleeping room at the limit: %v, want close 1013", err)
	}
	// a wakes for its close only once b has gone to sleep.
	var st rooms.Stats
	waitFor(t, "a's close handled", func() bool {
		if st = n.rt.Stats(); st.Rooms > 1 {
			t.Fatalf("MaxActive 1, but %d rooms awake", st.Rooms)
		}
		if st.Wakes >= 3 {
			return true
		}
		fake.Advance(time.Second)
		return false
	})
	if st.Hibernations < 2 {
		t.Fatalf("a woke for its close while b was awake: %+v", st)
	}
}

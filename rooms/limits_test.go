package rooms_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
)

// dialStatus tries a handshake and returns the HTTP status den answered.
func dialStatus(t *testing.T, n *node, path string) (*websocket.Conn, int) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+n.addr+path, nil)
	if err != nil && resp == nil {
		t.Fatal(err)
	}
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp.StatusCode
}

// TestMaxSocketsPerRoom: a room holding MaxSockets turns the next join
// away with 503; another room does not.
func TestMaxSocketsPerRoom(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{MaxSockets: 2})
	for range 2 {
		if _, code := dialStatus(t, n, "/rooms/echo/full"); code != http.StatusSwitchingProtocols {
			t.Fatalf("join: %d", code)
		}
	}
	if _, code := dialStatus(t, n, "/rooms/echo/full"); code != http.StatusServiceUnavailable {
		t.Fatalf("a third join: %d, want 503", code)
	}
	if _, code := dialStatus(t, n, "/rooms/echo/other"); code != http.StatusSwitchingProtocols {
		t.Fatalf("another room: %d", code)
	}
	if st := n.rt.Stats(); st.RoomFull != 1 {
		t.Fatalf("RoomFull %d, want 1", st.RoomFull)
	}
}

// TestMaxActiveRooms: with one room awake at the limit, a join and a
// request to another are refused with 503; once the awake room hibernates
// the join succeeds, and then a message to the sleeping first room closes
// its socket with 1013 instead of waking it past the limit. That close
// must not wake the room past the limit either: it waits until the awake
// room sleeps, then the sleeping room wakes to handle it.
func TestMaxActiveRooms(t *testing.T) {
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
	n := startNode(t, t.TempDir(), rooms.Config{MaxActive: 1, Clock: fake, HibernateAfter: 10 * time.Second, EvictAfter: 10 * time.Second})
	a, code := dialStatus(t, n, "/rooms/chat/a?user=ann")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("join a: %d", code)
	}
	read(t, a) // history
	read(t, a) // join
	if _, code := dialStatus(t, n, "/rooms/chat/b?user=bob"); code != http.StatusServiceUnavailable {
		t.Fatalf("join b with a awake: %d, want 503", code)
	}
	if code, _ := httpDo(t, "GET", n.url("/rooms/chat/b/messages"), ""); code != http.StatusServiceUnavailable {
		t.Fatalf("request to b with a awake: %d, want 503", code)
	}
	if st := n.rt.Stats(); st.NodeFull != 2 {
		t.Fatalf("NodeFull %d, want 2", st.NodeFull)
	}
	waitFor(t, "a to hibernate", func() bool {
		fake.Advance(time.Second)
		return n.rt.Stats().Rooms == 0
	})
	b, code := dialStatus(t, n, "/rooms/chat/b?user=bob")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("join b once a sleeps: %d", code)
	}
	read(t, b)
	read(t, b)
	// a's member speaks while b is awake: a cannot wake, so the socket is
	// told to come back later.
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

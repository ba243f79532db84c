package rooms_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
)

// TestRegressNodeFullLeavesNoPhantomRooms: a join or request refused
// because MaxActive rooms are awake leaves no entry for its room in the
// runtime's index, so a client naming fresh rooms cannot grow it, and the
// room stays absent.
func TestRegressNodeFullLeavesNoPhantomRooms(t *testing.T) {
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
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

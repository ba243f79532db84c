package rooms_test

import (
	"encoding/json"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/storage"
)

// An anonymous user's scheduled message holds its name as a posted one
// does: an anonymous user who joins after the scheduler left and the room
// left memory is not given the name the message will be posted under.
func TestAnonymousNameOfScheduledMessageStaysUnique(t *testing.T) {
	n, fake := reclaimNode(t, storage.Options{}, false, alarmedKind(nil, nil), nil)
	joinAnon := func() (*websocket.Conn, string) {
		t.Helper()
		c := n.dial(t, "/rooms/chat/anon-sched")
		read(t, c)
		var join struct{ User string }
		if err := json.Unmarshal([]byte(read(t, c)), &join); err != nil || join.User == "" {
			t.Fatalf("join frame: %v", err)
		}
		return c, join.User
	}
	c, scheduler := joinAnon()
	send(t, c, `{"type":"schedule","delay_ms":86400000,"text":"later"}`)
	leave(t, n, c, "chat", "anon-sched")
	if got := evict(t, n, fake, "chat", "anon-sched"); got != "evicted" {
		t.Fatalf("a room with a scheduled message is %s after its eviction, want evicted", got)
	}
	if _, later := joinAnon(); later == scheduler {
		t.Errorf("an anonymous user joining later is %s, the name a scheduled message will be posted under", later)
	}
}

package rooms_test

import (
	"strings"
	"testing"
	"time"

	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// A chat room made before schedule existed (no scheduled column) keeps
// working after the upgrade.
func TestRegressChatOldTable(t *testing.T) {
	dir := t.TempDir()
	st, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	id := rooms.IDFromName("chat", "old")
	r, err := st.Room(id.String(), "chat", "old")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(`CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(`INSERT INTO messages (user, text, ts) VALUES ('x','old',1)`); err != nil {
		t.Fatal(err)
	}
	r.Close()
	st.Close()
	n := startNode(t, dir, rooms.Config{})
	c := n.dial(t, "/rooms/chat/old?user=a")
	if got := read(t, c); !strings.Contains(got, `"text":"old"`) {
		t.Fatalf("history %s", got)
	}
	read(t, c)
	send(t, c, `{"type":"schedule","delay_ms":0,"text":"s"}`)
	if got := read(t, c); !strings.Contains(got, `"scheduled":true`) {
		t.Fatalf("%s", got)
	}
}

func TestRegressChatDelayTypes(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{})
	c := n.dial(t, "/rooms/chat/d?user=a")
	read(t, c)
	read(t, c)
	for _, in := range []string{`1.5`, `"100"`, `1e3`, `31536000001`, `9223372036854775807`, `true`} {
		send(t, c, `{"type":"schedule","delay_ms":`+in+`,"text":"x"}`)
		got := read(t, c)
		t.Logf("delay_ms %s -> %s", in, got)
	}
	_ = time.Second
}

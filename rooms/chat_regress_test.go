package rooms_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

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

// A schedule whose delay_ms is not a whole number of milliseconds in
// range gets an error frame that names delay_ms, and schedules nothing;
// so does a text of the wrong type, naming text.
func TestRegressChatDelayTypes(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{})
	c := n.dial(t, "/rooms/chat/d?user=a")
	read(t, c)
	read(t, c)
	for _, in := range []string{`1.5`, `"100"`, `1e3`, `31536000001`, `9223372036854775807`, `-1`, `true`} {
		send(t, c, `{"type":"schedule","delay_ms":`+in+`,"text":"x"}`)
		if got := read(t, c); !strings.Contains(got, `"type":"error"`) || !strings.Contains(got, "delay_ms") {
			t.Errorf("delay_ms %s: %s, want an error naming delay_ms", in, got)
		}
	}
	send(t, c, `{"type":"message","text":5}`)
	if got := read(t, c); !strings.Contains(got, `"type":"error"`) || !strings.Contains(got, "text") {
		t.Errorf("a number for text: %s, want an error naming text", got)
	}
}

// However long its messages, a chat room stays joinable: a joiner gets
// the newest of the last 100 that fit a bounded history frame, then its
// join, and is not closed as a slow consumer for a frame den made.
func TestChatHistoryOfLongMessagesStaysJoinable(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{})
	for _, c := range []struct {
		room, text string
		all        bool // all 100 fit
	}{
		{"angle", strings.Repeat("<", 4096), true},    // plain in den's JSON
		{"ctrl", strings.Repeat("\x01", 4096), false}, // \u0001: six bytes each
	} {
		body, _ := json.Marshal(map[string]string{"user": "u", "text": c.text})
		for i := range 100 {
			if code, b := httpDo(t, http.MethodPost, n.url("/rooms/chat/"+c.room+"/messages"), string(body)); code != http.StatusCreated {
				t.Fatalf("%s: POST %d: %d %.80s", c.room, i, code, b)
			}
		}
		ws := n.dial(t, "/rooms/chat/"+c.room+"?user=joiner")
		var h struct {
			Type     string
			Messages []struct {
				ID   int64
				Text string
			}
		}
		got := read(t, ws)
		if err := json.Unmarshal([]byte(got), &h); err != nil || h.Type != "history" || len(h.Messages) == 0 {
			t.Fatalf("%s: history frame of %d bytes: %v", c.room, len(got), err)
		}
		if last := h.Messages[len(h.Messages)-1]; last.ID != 100 || last.Text != c.text {
			t.Errorf("%s: the history ends with message %d, want the newest, 100", c.room, last.ID)
		}
		if all := len(h.Messages) == 100; all != c.all || len(got) > 512<<10 {
			t.Errorf("%s: %d messages in %d bytes", c.room, len(h.Messages), len(got))
		}
		if got := read(t, ws); !strings.Contains(got, `"type":"join"`) {
			t.Fatalf("%s: after the history: %.80s", c.room, got)
		}
	}
}

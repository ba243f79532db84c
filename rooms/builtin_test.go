package rooms_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/rooms"
)

func TestChatProtocol(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{})
	alice := n.dial(t, "/rooms/chat/lobby?user=alice")
	if got := read(t, alice); got != `{"messages":[],"type":"history"}` {
		t.Fatalf("alice's first frame %s: want the empty history", got)
	}
	if got := read(t, alice); got != `{"online":1,"type":"join","user":"alice"}` {
		t.Fatalf("alice's join: %s", got)
	}
	anon := n.dial(t, "/rooms/chat/lobby")
	if got := read(t, anon); got != `{"messages":[],"type":"history"}` {
		t.Fatalf("anon's history %s", got)
	}
	if got := read(t, anon); got != `{"online":2,"type":"join","user":"anon-1"}` {
		t.Fatalf("anon's join %s", got)
	}
	if got := read(t, alice); got != `{"online":2,"type":"join","user":"anon-1"}` {
		t.Fatalf("alice sees %s", got)
	}

	send(t, alice, `{"type":"message","text":"hi"}`)
	var m struct {
		Type, User, Text string
		ID, TS           int64
	}
	for _, c := range []*websocket.Conn{alice, anon} {
		if err := json.Unmarshal([]byte(read(t, c)), &m); err != nil || m.Type != "message" || m.ID != 1 || m.User != "alice" || m.Text != "hi" || m.TS == 0 {
			t.Fatalf("message frame %+v %v", m, err)
		}
	}

	send(t, anon, "ping")
	if got := read(t, anon); got != "pong" {
		t.Fatalf("ping got %q", got)
	}
	for _, bad := range []string{`nope`, `{"type":"message","text":""}`, `{"type":"message","text":"` + strings.Repeat("x", 4097) + `"}`, `{"type":"dance"}`} {
		send(t, anon, bad)
		var e struct{ Type, Error string }
		if err := json.Unmarshal([]byte(read(t, anon)), &e); err != nil || e.Type != "error" || e.Error == "" {
			t.Fatalf("%.40s: got %+v %v, want an error frame", bad, e, err)
		}
	}

	code, body := httpDo(t, http.MethodPost, n.url("/rooms/chat/lobby/messages"), `{"user":"backend","text":"from HTTP"}`)
	if code != http.StatusCreated || !strings.Contains(body, `"id":2`) {
		t.Fatalf("POST: %d %s", code, body)
	}
	if got := read(t, alice); !strings.Contains(got, `"from HTTP"`) {
		t.Fatalf("alice did not get the posted message: %s", got)
	}
	code, body = httpDo(t, http.MethodGet, n.url("/rooms/chat/lobby/messages?after=1&limit=5"), "")
	var ms []map[string]any
	if code != http.StatusOK || json.Unmarshal([]byte(body), &ms) != nil || len(ms) != 1 || ms[0]["text"] != "from HTTP" {
		t.Fatalf("GET after=1: %d %s", code, body)
	}
	for _, q := range []string{"limit=1001", "limit=0", "after=x"} {
		if code, _ := httpDo(t, http.MethodGet, n.url("/rooms/chat/lobby/messages?"+q), ""); code != http.StatusBadRequest {
			t.Errorf("GET ?%s: %d, want 400", q, code)
		}
	}
	if code, _ := httpDo(t, http.MethodPost, n.url("/rooms/chat/lobby/messages"), `{"user":"","text":"x"}`); code != http.StatusBadRequest {
		t.Errorf("POST without a user: %d", code)
	}

	anon.Close()
	if got := read(t, alice); got != `{"online":1,"type":"leave","user":"anon-1"}` {
		t.Fatalf("leave: %s", got)
	}
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/chat/lobby?user="+strings.Repeat("u", 65), nil); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a 65-byte user: %v", err)
	}
}

func TestCounterProtocol(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, rooms.Config{})
	a := n.dial(t, "/rooms/counter/c1")
	if got := read(t, a); got != `{"type":"count","value":0}` {
		t.Fatalf("join: %s", got)
	}
	send(t, a, `{"type":"increment"}`)
	if got := read(t, a); got != `{"type":"count","value":1}` {
		t.Fatalf("after increment: %s", got)
	}
	if code, body := httpDo(t, http.MethodPost, n.url("/rooms/counter/c1/increment"), ""); code != 200 || body != `{"value":2}` {
		t.Fatalf("POST increment: %d %s", code, body)
	}
	if got := read(t, a); got != `{"type":"count","value":2}` {
		t.Fatalf("socket after POST: %s", got)
	}
	send(t, a, `{"type":"decrement"}`)
	if got := read(t, a); !strings.Contains(got, `"type":"error"`) {
		t.Fatalf("bad message: %s", got)
	}
	if code, _ := httpDo(t, http.MethodGet, n.url("/rooms/counter/c1/increment"), ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET increment: %d", code)
	}
	// Restart: the value and the chat history are on disk.
	_, _ = httpDo(t, http.MethodPost, n.url("/rooms/chat/r/messages"), `{"user":"u","text":"kept"}`)
	n.stop()
	n2 := startNode(t, dir, rooms.Config{})
	if code, body := httpDo(t, http.MethodGet, n2.url("/rooms/counter/c1"), ""); code != 200 || body != `{"value":2}` {
		t.Fatalf("after restart: %d %s", code, body)
	}
	if _, body := httpDo(t, http.MethodGet, n2.url("/rooms/chat/r/messages"), ""); !strings.Contains(body, `"kept"`) {
		t.Fatalf("chat history after restart: %s", body)
	}
	if code, _ := httpDo(t, http.MethodGet, n2.url("/rooms/nope/x"), ""); code != http.StatusNotFound {
		t.Fatalf("unknown kind: %d", code)
	}
}

package rooms_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/rooms/builtin"
)

// Regressions found in review.

// A join refused because the room is full must not run its handler: the
// others never hear of it.
func TestRegressFullRoomJoinHasNoEffect(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{MaxSockets: 1})
	alice := n.dial(t, "/rooms/chat/full?user=alice")
	read(t, alice) // history
	read(t, alice) // her join
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/chat/full?user=bob", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("bob: %v, want 503", err)
	}
	send(t, alice, `{"type":"message","text":"still alone"}`)
	if got := read(t, alice); !strings.Contains(got, "still alone") {
		t.Fatalf("alice got %s: a refused join was announced", got)
	}
}

// deferrer defers work, then fails if asked.
type deferrer struct {
	rooms.Base
	st *rooms.State
}

func (d *deferrer) Message(s *rooms.Sock, _ bool, data []byte) error {
	d.st.Defer(func() error { s.SendText("deferred from " + string(data)); return nil })
	if string(data) == "fail" {
		return errors.New("fail")
	}
	return nil
}

func TestRegressFailedEventDefersNothing(t *testing.T) {
	kind := rooms.Kind{Name: "deferrer", New: func(st *rooms.State) rooms.Handler { return &deferrer{st: st} }}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{kind}})
	c := n.dial(t, "/rooms/deferrer/x")
	send(t, c, "fail")
	send(t, c, "ok")
	if got := read(t, c); got != "deferred from ok" {
		t.Fatalf("got %q: work deferred by a failed event ran", got)
	}
}

func TestRegressEchoStoresNothing(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{})
	c := n.dial(t, "/rooms/echo/e1")
	send(t, c, "hi")
	read(t, c)
	recs, err := n.store.Rooms("echo")
	if err != nil || len(recs) != 0 {
		t.Fatalf("echo made storage: %+v %v", recs, err)
	}
}

func TestRegressConstructorPanicRefuses(t *testing.T) {
	kind := rooms.Kind{Name: "broken", New: func(*rooms.State) rooms.Handler { panic("no") }}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: append(builtin.Kinds(), kind)})
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/broken/x", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("dial: %v; want 503 from a kind whose constructor panics", err)
	}
	// The node is still up.
	c := n.dial(t, "/rooms/echo/x")
	send(t, c, "alive")
	if got := read(t, c); got != "alive" {
		t.Fatal(got)
	}
}

// marker sets its socket's attachment and the auto-response, then fails
// if asked: a failed event must leave both as they were.
type marker struct {
	rooms.Base
	st *rooms.State
}

func (m *marker) Connect(c *rooms.Connect) error {
	return c.Accept().SetAttachment([]byte("first"))
}

func (m *marker) Message(s *rooms.Sock, _ bool, data []byte) error {
	switch string(data) {
	case "show":
		s.SendText(string(s.Attachment()))
		return nil
	case "change and fail":
		_ = s.SetAttachment([]byte("second"))
		_ = m.st.SetAutoResponse("hello", "auto")
		return errors.New("fail")
	}
	s.SendText("handled " + string(data))
	return nil
}

func TestRegressFailedEventRestoresAttachmentAndAutoResponse(t *testing.T) {
	kind := rooms.Kind{Name: "marker", New: func(st *rooms.State) rooms.Handler { return &marker{st: st} }}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{kind}})
	c := n.dial(t, "/rooms/marker/x")
	send(t, c, "change and fail")
	send(t, c, "show")
	if got := read(t, c); got != "first" {
		t.Fatalf("attachment %q after a failed event changed it", got)
	}
	send(t, c, "hello")
	if got := read(t, c); got != "handled hello" {
		t.Fatalf("got %q: the failed event's auto-response stayed", got)
	}
}

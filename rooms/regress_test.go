package rooms_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// autoSetter sets the auto-response from "set:RESPONSE" messages, with a
// durable write beside it so that its batch's commit matters; its
// constructor sets none. Other messages get "room:" and the message.
type autoSetter struct {
	rooms.Base
	st *rooms.State
}

func autoSetterKind() rooms.Kind {
	return rooms.Kind{Name: "autoset", New: func(st *rooms.State) rooms.Handler { return &autoSetter{st: st} }}
}

func (a *autoSetter) Message(s *rooms.Sock, _ bool, data []byte) error {
	if resp, ok := strings.CutPrefix(string(data), "set:"); ok {
		if err := a.st.Storage.Put("auto", []byte(resp)); err != nil {
			return err
		}
		return a.st.SetAutoResponse("ping", resp)
	}
	s.SendText("room:" + string(data))
	return nil
}

// An auto-response is output: one set in a batch whose commit fails must
// never answer a client.
func TestRegressFailedCommitDropsAutoResponse(t *testing.T) {
	var failing atomic.Bool
	hook := func(rooms.ID) error {
		if failing.Load() {
			return errors.New("injected disk failure")
		}
		return nil
	}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{autoSetterKind()}, CommitHook: hook})
	a := n.dial(t, "/rooms/autoset/x")
	send(t, a, "hello")
	if got := read(t, a); got != "room:hello" {
		t.Fatalf("got %q", got)
	}
	failing.Store(true)
	send(t, a, "set:LOST")
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ce *websocket.CloseError
	if _, _, err := a.ReadMessage(); !errors.As(err, &ce) || ce.Code != 1011 {
		t.Fatalf("after the failed commit: %v, want close 1011", err)
	}
	failing.Store(false)
	b := n.dial(t, "/rooms/autoset/x")
	send(t, b, "ping")
	if got := read(t, b); got != "room:ping" {
		t.Fatalf("ping answered %q after the batch that set it failed to commit, want room:ping", got)
	}
}

// An auto-response an event sets answers nobody until the event commits.
func TestRegressAutoResponseWaitsForCommit(t *testing.T) {
	var holding atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo)
	hook := func(rooms.ID) error {
		if holding.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
		return nil
	}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{autoSetterKind()}, CommitHook: hook})
	a := n.dial(t, "/rooms/autoset/y")
	b := n.dial(t, "/rooms/autoset/y")
	send(t, b, "hello")
	if got := read(t, b); got != "room:hello" {
		t.Fatalf("got %q", got)
	}
	holding.Store(true)
	send(t, a, "set:EARLY")
	recv(t, entered, "the batch setting the auto-response never reached its commit")
	// b's frames are read in order: once its protocol ping is answered, the
	// gateway has dealt with the text before it.
	barrier := pingBarrier(b)
	msgs := make(chan string, 4)
	go func() {
		defer close(msgs)
		for {
			_, m, err := b.ReadMessage()
			if err != nil {
				return
			}
			msgs <- string(m)
		}
	}()
	send(t, b, "ping")
	barrier(t)
	letGo()
	if got := recv(t, msgs, "no answer to ping"); got != "room:ping" {
		t.Fatalf("ping answered %q before the batch that set it committed, want room:ping", got)
	}
}

// misbehaving fails, closes and answers HTTP as it is asked to; its
// Error tells the socket and closes it, as a room cleaning up would.
type misbehaving struct{ rooms.Base }

func misbehavingKind() rooms.Kind {
	return rooms.Kind{Name: "misbehaving", New: func(*rooms.State) rooms.Handler { return &misbehaving{} }}
}

func (m *misbehaving) Message(s *rooms.Sock, _ bool, data []byte) error {
	switch string(data) {
	case "fail":
		return errors.New("probe failure")
	case "bad reason":
		s.Close(4000, "bad\xff\xfe")
	}
	return nil
}

func (m *misbehaving) Error(s *rooms.Sock, err error) {
	if s != nil {
		s.SendText("error: " + err.Error())
		s.Close(4001, "cleanup")
	}
}

func (m *misbehaving) Request(w http.ResponseWriter, r *http.Request) error {
	switch r.URL.Query().Get("do") {
	case "early hints":
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("made"))
	case "bad status":
		w.WriteHeader(1000)
		_, _ = w.Write([]byte("x"))
	}
	return nil
}

// What Error sends and closes goes out with the failed event's batch:
// no later event may come to carry it before the room sleeps.
func TestRegressErrorHandlerOutputGoesOut(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{misbehavingKind()}})
	c := n.dial(t, "/rooms/misbehaving/a")
	send(t, c, "fail")
	if got := read(t, c); got != "error: probe failure" {
		t.Fatalf("got %q", got)
	}
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 {
		t.Fatalf("after Error's frame: %v, want close 4001", err)
	}
}

// A close reason that is not UTF-8 is mended, not sent as it is: the
// client would fail the connection instead of reading the close.
func TestRegressCloseReasonIsUTF8(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{misbehavingKind()}})
	c := n.dial(t, "/rooms/misbehaving/a")
	send(t, c, "bad reason")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4000 || !strings.HasPrefix(ce.Text, "bad") {
		t.Fatalf("got %v, want close 4000 with the reason mended", err)
	}
}

// A room's HTTP answer: an informational status is not the final one,
// and a status no status line can carry becomes a 500.
func TestRegressRoomResponseStatus(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{misbehavingKind()}})
	if code, body := httpDo(t, http.MethodGet, n.url("/rooms/misbehaving/a?do=early+hints"), ""); code != http.StatusCreated || body != "made" {
		t.Fatalf("after 103 then 201: %d %q", code, body)
	}
	if code, _ := httpDo(t, http.MethodGet, n.url("/rooms/misbehaving/a?do=bad+status"), ""); code != http.StatusInternalServerError {
		t.Fatalf("status 1000: %d, want 500", code)
	}
}

// chat's POST takes one JSON value, as its socket protocol does.
func TestRegressChatPostRejectsTrailingData(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{})
	if code, body := httpDo(t, http.MethodPost, n.url("/rooms/chat/g/messages"), `{"user":"u","text":"t"} not JSON`); code != http.StatusBadRequest {
		t.Fatalf("POST with trailing data: %d %s, want 400", code, body)
	}
}

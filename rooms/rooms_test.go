package rooms_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/rooms/builtin"
)

func TestIDs(t *testing.T) {
	a, b := rooms.IDFromName("chat", "x"), rooms.IDFromName("chat", "x")
	if a != b || a == rooms.IDFromName("chat", "y") || a == rooms.IDFromName("counter", "x") {
		t.Fatal("IDFromName must be deterministic and distinct per kind and name")
	}
	if rooms.IDFromName("a", "b\x00c") == rooms.IDFromName("a\x00b", "c") {
		t.Fatal("kind and name must not run into each other")
	}
	u := rooms.NewUniqueID()
	if u == rooms.NewUniqueID() {
		t.Fatal("two unique IDs are equal")
	}
	for _, id := range []rooms.ID{a, u} {
		back, err := rooms.ParseID(id.String())
		if err != nil || back != id {
			t.Fatalf("%s does not parse back: %v", id, err)
		}
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 64), a.String()[:63]} {
		if _, err := rooms.ParseID(bad); !errors.Is(err, rooms.ErrBadID) {
			t.Errorf("ParseID(%q): %v", bad, err)
		}
	}
}

// A name is any UTF-8 without control characters, but for "." and "..",
// which HTTP resolves away, so such a room's HTTP routes could not reach
// it; the refusal reaches a join as 404.
func TestValidName(t *testing.T) {
	for _, good := range []string{"a", "a.b", "...", ".x", "ä b", strings.Repeat("n", rooms.MaxNameLen)} {
		if !rooms.ValidName(good) {
			t.Errorf("ValidName(%q) = false", good)
		}
	}
	for _, bad := range []string{"", ".", "..", "a\x00", "a\x7f", "a\u0085", "\xff", strings.Repeat("n", rooms.MaxNameLen+1)} {
		if rooms.ValidName(bad) {
			t.Errorf("ValidName(%q) = true", bad)
		}
	}
	n := startNode(t, t.TempDir(), rooms.Config{})
	for _, path := range []string{"/rooms/counter/..", "/rooms/counter/%2E", "/rooms/counter/%C2%85"} {
		if _, resp, err := websocket.DefaultDialer.Dial("ws://"+n.addr+path, nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("join %s: %v, want 404", path, err)
		}
	}
}

// serial is a kind that checks, inside its handler, that no two of its
// events ever overlap, and records each socket's messages in order.
type serial struct {
	rooms.Base
	inside  *atomic.Int32
	overlap *atomic.Int32
	mu      *sync.Mutex
	seen    map[string][]int // by sender
	total   *atomic.Int32
}

func (s *serial) Message(sk *rooms.Sock, _ bool, data []byte) error {
	if s.inside.Add(1) != 1 {
		s.overlap.Add(1)
	}
	defer s.inside.Add(-1)
	from, seq, _ := strings.Cut(string(data), ":")
	n, _ := strconv.Atoi(seq)
	runtime.Gosched() // give any other handler of the room its chance to overlap
	s.mu.Lock()
	s.seen[from] = append(s.seen[from], n)
	s.mu.Unlock()
	s.total.Add(1)
	return nil
}

func TestSerialExecution(t *testing.T) {
	var inside, overlap, total atomic.Int32
	var mu sync.Mutex
	seen := map[string][]int{}
	kind := rooms.Kind{Name: "serial", New: func(*rooms.State) rooms.Handler {
		return &serial{inside: &inside, overlap: &overlap, mu: &mu, seen: seen, total: &total}
	}}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{kind}, Mailbox: 10000})
	const sockets, each = 1000, 5
	conns := make([]*websocket.Conn, sockets)
	for i := range conns {
		conns[i] = n.dial(t, "/rooms/serial/one")
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				_ = c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("%d:%d", i, k)))
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for total.Load() < sockets*each {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages handled", total.Load(), sockets*each)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if overlap.Load() != 0 {
		t.Fatalf("handlers overlapped %d times", overlap.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	for from, got := range seen {
		for i, n := range got {
			if n != i {
				t.Fatalf("socket %s: messages handled in the order %v", from, got)
			}
		}
	}
}

// faulty is a kind whose events fail on request: an error or a panic.
type faulty struct {
	rooms.Base
	st *rooms.State
}

func (f *faulty) Message(s *rooms.Sock, _ bool, data []byte) error {
	cmd, arg, _ := strings.Cut(string(data), " ")
	if cmd == "get" {
		v, ok, err := f.st.Storage.Get(arg)
		s.SendText(fmt.Sprintf("%s=%s %v %v", arg, v, ok, err))
		return nil
	}
	if err := f.st.Storage.Put(arg, []byte(cmd)); err != nil {
		return err
	}
	s.SendText("wrote " + arg)
	switch cmd {
	case "fail":
		return errors.New("asked to fail")
	case "panic":
		panic("asked to panic")
	}
	return nil
}

func TestFailedEventRollsBackAlone(t *testing.T) {
	kind := rooms.Kind{Name: "faulty", New: func(st *rooms.State) rooms.Handler { return &faulty{st: st} }}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{kind}})
	c := n.dial(t, "/rooms/faulty/x")
	send(t, c, "ok a")
	send(t, c, "fail b")
	send(t, c, "panic c")
	send(t, c, "ok d")
	for _, want := range []string{"wrote a", "wrote d"} {
		if got := read(t, c); got != want {
			t.Fatalf("got %q, want %q: a failed event's output must be dropped", got, want)
		}
	}
	for key, want := range map[string]string{"a": "true", "b": "false", "c": "false", "d": "true"} {
		send(t, c, "get "+key)
		if got := read(t, c); !strings.Contains(got, " "+want+" ") {
			t.Errorf("after the failures: %s, want %s set=%s", got, key, want)
		}
	}
	if st := n.rt.Stats(); st.EventsFailed != 2 {
		t.Fatalf("stats %+v: want 2 failed events", st)
	}
}

// TestOutputGate posts chat messages while commits fail now and then: a
// client sees a message (a 201, or a frame) only if it is durable, and
// after a restart the history is exactly the messages clients were shown.
func TestOutputGate(t *testing.T) {
	dir := t.TempDir()
	var commits atomic.Int64
	hook := func(rooms.ID) error {
		if commits.Add(1)%4 == 0 {
			return errors.New("injected disk failure")
		}
		return nil
	}
	n := startNode(t, dir, rooms.Config{CommitHook: hook})
	shown := map[string]bool{}
	var failures int
	for i := range 40 {
		text := fmt.Sprintf("m%d", i)
		code, body := httpDo(t, http.MethodPost, n.url("/rooms/chat/gate/messages"), `{"user":"u","text":"`+text+`"}`)
		switch code {
		case http.StatusCreated:
			shown[text] = true
		case http.StatusServiceUnavailable:
			failures++
		default:
			t.Fatalf("POST: %d %s", code, body)
		}
	}
	if failures == 0 || len(shown) == 0 {
		t.Fatalf("%d failures, %d shown: the hook did not bite", failures, len(shown))
	}
	// A socket is closed with 1011 by the next failed commit.
	c := n.dial(t, "/rooms/chat/gate?user=w")
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != 1011 {
				t.Fatalf("closed with %d, want 1011", ce.Code)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var m struct{ Type, Text string }
		_ = json.Unmarshal(b, &m)
		if m.Type == "message" && !shown[m.Text] {
			shown[m.Text] = true
		}
		send(t, c, `{"type":"message","text":"w`+strconv.Itoa(len(shown))+`"}`)
	}
	n.stop()
	n2 := startNode(t, dir, rooms.Config{})
	_, body := httpDo(t, http.MethodGet, n2.url("/rooms/chat/gate/messages?limit=1000"), "")
	var history []struct{ Text string }
	if err := json.Unmarshal([]byte(body), &history); err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, m := range history {
		stored[m.Text] = true
	}
	for text := range shown {
		if !stored[text] {
			t.Errorf("%s was shown to a client but is not in the history", text)
		}
	}
	for text := range stored {
		if strings.HasPrefix(text, "m") && !shown[text] {
			t.Errorf("%s is in the history but its POST failed", text)
		}
	}
}

func TestMailboxFull(t *testing.T) {
	release := make(chan struct{})
	kind := rooms.Kind{Name: "slow", Stateless: true, New: func(*rooms.State) rooms.Handler { return slow{release} }}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{kind}, Mailbox: 2, MaxBatch: 1})
	c := n.dial(t, "/rooms/slow/x")
	for range 10 {
		_ = c.WriteMessage(websocket.TextMessage, []byte("x"))
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.ReadMessage()
	close(release)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1013 {
		t.Fatalf("read %v, want close 1013 for a full mailbox", err)
	}
	if n.rt.Stats().Refused == 0 {
		t.Fatal("the refusal was not counted")
	}
}

type slow struct{ release chan struct{} }

func (slow) Connect(c *rooms.Connect) error { c.Accept(); return nil }
func (s slow) Message(*rooms.Sock, bool, []byte) error {
	<-s.release
	return nil
}
func (slow) Close(*rooms.Sock, int, string, bool) error           { return nil }
func (slow) Request(w http.ResponseWriter, r *http.Request) error { return nil }
func (slow) Error(*rooms.Sock, error)                             {}
func (slow) Alarm(rooms.AlarmInfo) error                          { return nil }

func TestStorageFailureRefuses(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, rooms.Config{})
	// A folder where the room's database file belongs: it cannot open.
	id := rooms.IDFromName("chat", "broken").String()
	if err := os.MkdirAll(filepath.Join(dir, "rooms", id[:2], id+".db"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/chat/broken", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial: %v; want 503 for a room whose storage fails", err)
	}
	if code, _ := httpDo(t, http.MethodGet, n.url("/rooms/chat/broken/messages"), ""); code != http.StatusServiceUnavailable {
		t.Fatalf("GET: %d, want 503", code)
	}
}

// tagged exercises the socket API: tags, attachments, broadcast with
// exclusions and deferred work.
type tagged struct {
	rooms.Base
	st *rooms.State
}

func (h *tagged) Connect(c *rooms.Connect) error {
	team := c.Request.URL.Query().Get("team")
	s := c.Accept("team:" + team)
	return s.SetAttachment([]byte(team))
}

func (h *tagged) Message(s *rooms.Sock, _ bool, data []byte) error {
	switch string(data) {
	case "team":
		for _, o := range h.st.Sockets("team:" + string(s.Attachment())) {
			o.SendText("to my team")
		}
	case "others":
		h.st.Broadcast(true, []byte("to the others"), s)
	case "later":
		h.st.Defer(func() error {
			s.SendText("deferred")
			return nil
		})
	}
	return nil
}

func TestSocketsTagsAndBroadcast(t *testing.T) {
	kind := rooms.Kind{Name: "tagged", New: func(st *rooms.State) rooms.Handler { return &tagged{st: st} }}
	n := startNode(t, t.TempDir(), rooms.Config{Kinds: []rooms.Kind{kind}})
	red1 := n.dial(t, "/rooms/tagged/x?team=red")
	red2 := n.dial(t, "/rooms/tagged/x?team=red")
	blue := n.dial(t, "/rooms/tagged/x?team=blue")
	send(t, red1, "team")
	for _, c := range []*websocket.Conn{red1, red2} {
		if got := read(t, c); got != "to my team" {
			t.Fatalf("red got %q", got)
		}
	}
	send(t, blue, "others")
	for _, c := range []*websocket.Conn{red1, red2} {
		if got := read(t, c); got != "to the others" {
			t.Fatalf("got %q", got)
		}
	}
	send(t, blue, "later")
	if got := read(t, blue); got != "deferred" {
		t.Fatalf("blue got %q: the broadcast excluded it, then the deferred frame", got)
	}
}

func TestBuiltinKinds(t *testing.T) {
	names := map[string]bool{}
	for _, k := range builtin.Kinds() {
		names[k.Name] = true
	}
	if !names["echo"] || !names["chat"] || !names["counter"] {
		t.Fatalf("builtin kinds %v", names)
	}
	if _, err := rooms.New(rooms.Config{Kinds: builtin.Kinds()}); err == nil {
		t.Fatal("a runtime without a store must be an error")
	}
}

func TestAdminAPI(t *testing.T) {
	n := startNode(t, t.TempDir(), rooms.Config{})
	admin := httptest.NewServer(n.rt.Admin("s3cret"))
	defer admin.Close()
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, admin.URL+path, nil)
		if token != "" && !strings.HasPrefix(token, "bearer") {
			token = "Bearer " + token
		}
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, _ := get("/admin/rooms", ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := get("/admin/rooms", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	// RFC 6750: the scheme in any case, then one or more spaces or tabs.
	for _, h := range []string{"bearer s3cret", "bearer  s3cret", "bearer\ts3cret"} {
		if code, body := get("/admin/rooms", h); code != http.StatusOK {
			t.Errorf("Authorization %q: %d %s", h, code, body)
		}
	}
	if code, _ := get("/admin/rooms", "bearer s3cret x"); code != http.StatusUnauthorized {
		t.Errorf("a token followed by more: %d, want 401", code)
	}
	c := n.dial(t, "/rooms/counter/a")
	_ = read(t, c)
	_, _ = httpDo(t, http.MethodPost, n.url("/rooms/counter/a/increment"), "")
	_ = read(t, c)
	var info rooms.RoomInfo
	code, body := get("/admin/rooms/counter/a", "s3cret")
	if code != 200 || json.Unmarshal([]byte(body), &info) != nil || info.State != "active" || info.Sockets != 1 ||
		info.ID != rooms.IDFromName("counter", "a").String() || info.StorageBytes == 0 || info.Alarm != nil {
		t.Fatalf("info: %d %s", code, body)
	}
	if _, body := get("/admin/rooms/counter/never", "s3cret"); !strings.Contains(body, `"state":"absent"`) {
		t.Fatalf("a room never made: %s", body)
	}
	for _, p := range []string{"/admin/rooms/nokind/x", "/admin/rooms/counter/" + strings.Repeat("a", rooms.MaxNameLen+1), "/admin/rooms/counter/%01"} {
		if code, _ := get(p, "s3cret"); code != http.StatusNotFound {
			t.Fatalf("GET %.40s, a room no path can reach: %d, want 404", p, code)
		}
	}
	// The scheme is case-insensitive; the token is not.
	for auth, want := range map[string]int{"bearer s3cret": 200, "BEARER s3cret": 200, "Bearer S3CRET": 401} {
		req, _ := http.NewRequest(http.MethodGet, admin.URL+"/admin/rooms", nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("Authorization %q: %d, want %d", auth, resp.StatusCode, want)
		}
	}
	var list []rooms.RoomInfo
	if _, body := get("/admin/rooms?kind=counter", "s3cret"); json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 || list[0].Name != "a" {
		t.Fatalf("list: %s", body)
	}
	// A stateless kind's room has no record in node.db; it is listed while
	// it is in memory.
	e := n.dial(t, "/rooms/echo/e")
	send(t, e, "hi")
	_ = read(t, e)
	list = nil
	if _, body := get("/admin/rooms", "s3cret"); json.Unmarshal([]byte(body), &list) != nil || len(list) != 2 ||
		list[0].Name != "a" || list[1].Kind != "echo" || list[1].Name != "e" || list[1].State != "active" || list[1].Sockets != 1 {
		t.Fatalf("list with an echo room: %s", body)
	}
	req, _ := http.NewRequest(http.MethodDelete, admin.URL+"/admin/rooms/counter/a", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %v %v", err, resp)
	}
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1000 {
		t.Fatalf("the deleted room's socket: %v, want close 1000", err)
	}
	if _, body := get("/admin/rooms/counter/a", "s3cret"); !strings.Contains(body, `"state":"absent"`) {
		t.Fatalf("after delete: %s", body)
	}
	if _, body := httpDo(t, http.MethodGet, n.url("/rooms/counter/a"), ""); body != `{"value":0}` {
		t.Fatalf("the deleted counter reads %s, want a fresh one", body)
	}
}

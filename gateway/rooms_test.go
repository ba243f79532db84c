package gateway

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/den-rooms/den/internal/wsframe"
)

// hub is a test Rooms: joins are answered from another goroutine, as the
// rooms runtime will answer them, and every message is broadcast.
type hub struct {
	mu      sync.Mutex
	sockets map[*Socket]bool
	closed  chan closeEvent
	refuse  int // answer joins with this status instead
}

type closeEvent struct {
	code   int
	reason string
	clean  bool
}

func newHub() *hub { return &hub{sockets: map[*Socket]bool{}, closed: make(chan closeEvent, 16)} }

func (h *hub) Join(j *Join) {
	// The request is only readable during Join; the answer comes later
	// from another goroutine, as the rooms runtime's will.
	user := j.Request().URL.Query().Get("user")
	go func() {
		if h.refuse != 0 {
			j.Refuse(h.refuse, "not today")
			return
		}
		s := j.Accept()
		s.SetTags([]string{user})
		// A member before the welcome: a client that closes once it has
		// the welcome must find itself in sockets for Closed to remove.
		h.mu.Lock()
		h.sockets[s] = true
		h.mu.Unlock()
		// Sent right after Accept: must reach the client after the 101,
		// not before.
		_ = s.Send(true, []byte("welcome "+s.Tags()[0]))
	}()
}

func (h *hub) Message(s *Socket, text bool, payload []byte) {
	f := NewFrame(text, payload)
	h.mu.Lock()
	to := make([]*Socket, 0, len(h.sockets))
	for m := range h.sockets {
		to = append(to, m)
	}
	h.mu.Unlock()
	Broadcast(f, to)
}

func (h *hub) Closed(s *Socket, code int, reason string, clean bool) {
	h.mu.Lock()
	delete(h.sockets, s)
	h.mu.Unlock()
	h.closed <- closeEvent{code, reason, clean}
}

func (h *hub) ServeHTTP(w http.ResponseWriter, r *http.Request, kind, name string) {
	w.Write([]byte(kind + "/" + name))
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sockets)
}

func TestAsyncJoinAndBroadcast(t *testing.T) {
	h := newHub()
	srv := startServer(t, Config{Rooms: h})
	var clients []*websocket.Conn
	for _, user := range []string{"ann", "bob", "cy"} {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/rooms/hub/r?user="+user), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "welcome "+user {
			t.Fatalf("first message %q %v, want the welcome sent right after Accept", msg, err)
		}
		clients = append(clients, c)
	}
	waitFor(t, "hub membership", func() bool { return h.count() == 3 })
	if err := clients[0].WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		typ, msg, err := c.ReadMessage()
		if err != nil || typ != websocket.BinaryMessage || string(msg) != "\x01\x02\x03" {
			t.Fatalf("client %d: %d %q %v", i, typ, msg, err)
		}
	}
	// The room's HTTP handler gets kind and name.
	resp, err := http.Get("http://" + srv.Addr().String() + "/rooms/hub/a%2Fb/extra")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := resp.Body.Read(buf)
	resp.Body.Close()
	if string(buf[:n]) != "hub/a/b" {
		t.Fatalf("room HTTP handler saw %q", buf[:n])
	}
}

func TestJoinRefused(t *testing.T) {
	h := newHub()
	h.refuse = http.StatusTooManyRequests
	srv := startServer(t, Config{Rooms: h})
	_, resp, err := websocket.DefaultDialer.Dial(wsURL(srv, "/rooms/hub/r"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("refused join: %v %v", resp, err)
	}
}

func TestClosedEvents(t *testing.T) {
	h := newHub()
	srv := startServer(t, Config{Rooms: h})

	// The peer's code and reason, clean.
	c := dialRaw(t, srv)
	c.upgrade("/rooms/hub/r?user=a")
	c.mustRead() // welcome
	c.frame(true, 0, wsframe.OpClose, closePayload(4000, "leaving"))
	if ev := <-h.closed; ev != (closeEvent{4000, "leaving", true}) {
		t.Fatalf("peer close: %+v", ev)
	}
	// A dropped connection: 1006, not clean.
	c = dialRaw(t, srv)
	c.upgrade("/rooms/hub/r?user=b")
	c.mustRead()
	c.conn.Close()
	if ev := <-h.closed; ev.code != 1006 || ev.clean {
		t.Fatalf("dropped connection: %+v", ev)
	}
	// A protocol error: den's code.
	c = dialRaw(t, srv)
	c.upgrade("/rooms/hub/r?user=c")
	c.mustRead()
	c.frame(true, 0, 5, nil)
	c.expectClose(wsframe.CloseProtocolError) // den's close frame, then its FIN
	c.conn.Close()                            // as a client does on both
	if ev := <-h.closed; ev.code != 1002 || ev.clean {
		t.Fatalf("protocol error: %+v", ev)
	}
	// The room closes the socket; the peer answers: clean.
	c = dialRaw(t, srv)
	c.upgrade("/rooms/hub/r?user=d")
	c.mustRead()
	waitFor(t, "member", func() bool { return h.count() == 1 })
	h.mu.Lock()
	for s := range h.sockets {
		s.Close(4100, "kicked")
	}
	h.mu.Unlock()
	f := c.mustRead()
	if code, reason := wsframe.ParseClose(f.payload); f.op != wsframe.OpClose || code != 4100 || string(reason) != "kicked" {
		t.Fatalf("room close: %v %d %q", f.op, code, reason)
	}
	c.frame(true, 0, wsframe.OpClose, closePayload(4100, ""))
	c.expectEOF()
	if ev := <-h.closed; ev.code != 4100 || !ev.clean {
		t.Fatalf("room close: %+v", ev)
	}
}

// TestShutdown: readiness turns 503 on a kept-alive connection, open
// sockets get 1012, and Shutdown returns once every connection is gone.
func TestShutdown(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var clients []*websocket.Conn
	for range 3 {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/rooms/echo/s"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	raw := dialRaw(t, srv) // answers den's close only when told
	raw.upgrade("/rooms/echo/s")
	health := dialRaw(t, srv) // a load balancer's kept-alive connection
	health.send(request("/readyz"))
	if resp := health.response(); resp.StatusCode != 200 {
		t.Fatalf("readyz before shutdown: %d", resp.StatusCode)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	for i, c := range clients {
		// gorilla answers the close frame; den then ends the connection.
		if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseServiceRestart) {
			t.Fatalf("client %d: %v, want close 1012", i, err)
		}
	}
	f := raw.mustRead()
	if code, _ := wsframe.ParseClose(f.payload); f.op != wsframe.OpClose || code != wsframe.CloseServiceRestart {
		t.Fatalf("raw client got %v %d, want close 1012", f.op, code)
	}
	health.send(request("/readyz"))
	if resp := health.response(); resp.StatusCode != http.StatusServiceUnavailable || !resp.Close {
		t.Fatalf("readyz during shutdown: %d close=%v, want 503 and Connection: close", resp.StatusCode, resp.Close)
	}
	health.expectEOF()
	raw.frame(true, 0, wsframe.OpClose, closePayload(1012, ""))
	raw.expectEOF()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := srv.Stats().Conns; n != 0 {
		t.Fatalf("%d connections after shutdown", n)
	}
}

// TestSocketRecordSize keeps an idle socket's record at 128 bytes: with a
// million sockets every field costs megabytes.
func TestSocketRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(Socket{}); n > 128 {
		t.Fatalf("Socket is %d bytes, want at most 128", n)
	}
}

// panicky is a Rooms whose code panics on demand.
type panicky struct{ Echo }

func (panicky) Join(j *Join) {
	if j.Name == "bad-join" {
		panic("join bug")
	}
	s := j.Accept()
	if j.Name == "kick" {
		// Closed before the loop has even written the 101: the close
		// must still happen, after it.
		s.Close(4001, "go away")
	}
}

func (panicky) Message(s *Socket, text bool, p []byte) {
	if string(p) == "boom" {
		panic("message bug")
	}
	_ = s.Send(text, p)
}

// TestRoomPanics: a panic in room code fails that socket (1011) or that
// join (500); the loop and its other sockets go on.
func TestRoomPanics(t *testing.T) {
	srv := startServer(t, Config{Rooms: panicky{}, EventLoops: 1, Logger: zap.NewNop()})
	other := dialRaw(t, srv)
	other.upgrade("/rooms/echo/ok")

	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/ok")
	c.frame(true, 0, wsframe.OpText, []byte("boom"))
	c.expectClose(wsframe.CloseInternalError)

	bad := dialRaw(t, srv)
	bad.send(request("/rooms/echo/bad-join", hUpgrade, hConn, hKey, hVersion))
	if resp := bad.response(); resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("panicking join: %d", resp.StatusCode)
	}

	other.frame(true, 0, wsframe.OpText, []byte("fine"))
	if f := other.mustRead(); string(f.payload) != "fine" {
		t.Fatalf("other socket: %q", f.payload)
	}
}

func TestCloseRightAfterAccept(t *testing.T) {
	srv := startServer(t, Config{Rooms: panicky{}})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/kick")
	f := c.mustRead()
	if code, reason := wsframe.ParseClose(f.payload); f.op != wsframe.OpClose || code != 4001 || string(reason) != "go away" {
		t.Fatalf("got %v %d %q, want close 4001", f.op, code, reason)
	}
}

package rooms_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// seqKind records the messages each user's socket delivered to its room.
type seqKind struct {
	mu   sync.Mutex
	seen map[string][]string
}

type seqRoom struct {
	rooms.Base
	k *seqKind
}

func (k *seqKind) kind() rooms.Kind {
	return rooms.Kind{Name: "seq", New: func(*rooms.State) rooms.Handler { return &seqRoom{k: k} }}
}

func (s *seqRoom) Connect(c *rooms.Connect) error {
	return c.Accept().SetAttachment([]byte(c.Request.URL.Query().Get("user")))
}

func (s *seqRoom) Message(sk *rooms.Sock, text bool, data []byte) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	u := string(sk.Attachment())
	s.k.seen[u] = append(s.k.seen[u], string(data))
	sk.SendText("got " + string(data))
	return nil
}

func (k *seqKind) get(u string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.seen[u]...)
}

// hookRooms runs after(payload) on the event loop once the runtime has
// taken a message: a loop that is merely slow between two frames.
type hookRooms struct {
	gateway.Rooms
	after func(payload string)
}

func (h hookRooms) Message(s *gateway.Socket, text bool, payload []byte) {
	h.Rooms.Message(s, text, payload)
	h.after(string(payload))
}

// maskedText is one masked client text frame.
func maskedText(p string) []byte {
	key := [4]byte{1, 2, 3, 4}
	b := []byte{0x81, 0x80 | byte(len(p)), key[0], key[1], key[2], key[3]}
	for i := range len(p) {
		b = append(b, p[i]^key[i%4])
	}
	return b
}

// A message refused because waking its sleeping room would pass
// --max-active-rooms closes the socket with 1013; a later message of the
// same socket must not reach the room (the room would see 2 without 1).
func TestRefusedMessageLeavesNoGap(t *testing.T) {
	k := &seqKind{seen: map[string][]string{}}
	fake := clock.NewFake(time.Now())
	var n *node
	roomState := func(name string) string {
		info, err := n.rt.Info("seq", name)
		if err != nil {
			t.Fatal(err)
		}
		return info.State
	}
	sleep := func(name string) {
		waitFor(t, name+" asleep", func() bool {
			fake.Advance(11 * time.Second)
			return roomState(name) == "hibernated"
		})
	}
	var armed sync.Once
	var arm atomic.Bool
	after := func(p string) {
		if p == "1" && arm.Load() {
			// Between the two frames, the node's one awake room sleeps.
			armed.Do(func() { sleep("b") })
		}
	}
	n = startNodeWrapped(t, t.TempDir(), storage.SyncFull, rooms.Config{Kinds: []rooms.Kind{k.kind()}, Clock: fake, MaxActive: 1,
		HibernateAfter: 10 * time.Second, EvictAfter: time.Minute}, func(r gateway.Rooms) gateway.Rooms { return hookRooms{r, after} })
	dial := func(path string) *websocket.Conn { return n.dial(t, path) }
	a := dial("/rooms/seq/a?user=alice")
	sleep("a")
	dial("/rooms/seq/b?user=bob") // the one room awake
	if s := roomState("b"); s != "active" {
		t.Fatalf("b is %s", s)
	}

	// Two messages from alice in one TCP write: the first finds the node
	// full and is refused; b sleeps before the second is handed over.
	arm.Store(true)
	if _, err := a.UnderlyingConn().Write(append(maskedText("1"), maskedText("2")...)); err != nil {
		t.Fatal(err)
	}
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ce *websocket.CloseError
	for {
		_, _, err := a.ReadMessage()
		if errors.As(err, &ce) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if ce.Code != 1013 {
		t.Fatalf("alice's socket closed with %d %q, want 1013", ce.Code, ce.Text)
	}
	// The socket's close event is the last thing the room hears of it.
	waitFor(t, "alice's close handled", func() bool {
		info, _ := n.rt.Info("seq", "a")
		return info.Sockets == 0
	})
	if got := k.get("alice"); len(got) > 0 {
		t.Fatalf("room a saw alice's messages %q: message 1 was refused, a later one went through", got)
	}
}

package rooms_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/rooms/builtin"
	"github.com/den-rooms/den/storage"
)

// sleepy is a kind that shows what survives a wake. Its constructor
// counts itself and waits at gate while a test holds it.
type sleepy struct {
	rooms.Base
	st    *rooms.State
	built int64
	fresh bool // in-memory only: true until the first message
	k     *sleepyKind
}

type sleepyKind struct {
	built atomic.Int64
	gate  chan struct{} // nil: constructors do not wait
	hold  chan struct{} // "defer" messages defer work that waits on it
	mu    sync.Mutex
}

func (k *sleepyKind) kind() rooms.Kind {
	return rooms.Kind{Name: "sleepy", New: func(st *rooms.State) rooms.Handler {
		n := k.built.Add(1)
		k.mu.Lock()
		gate := k.gate
		k.mu.Unlock()
		if gate != nil {
			<-gate
		}
		_ = st.SetAutoResponse("ping", "pong")
		return &sleepy{st: st, built: n, fresh: true, k: k}
	}}
}

func (s *sleepy) Connect(c *rooms.Connect) error {
	q := c.Request.URL.Query()
	sk := c.Accept(q["tag"]...)
	if err := sk.SetAttachment([]byte(q.Get("att"))); err != nil {
		return err
	}
	// Durable state: the room counts its joins in storage.
	n, _, err := s.st.Storage.Get("joins")
	if err != nil {
		return err
	}
	return s.st.Storage.Put("joins", append(n, '+'))
}

func (s *sleepy) Message(sk *rooms.Sock, text bool, data []byte) error {
	msg := string(data)
	switch {
	case msg == "state":
		joins, _, err := s.st.Storage.Get("joins")
		if err != nil {
			return err
		}
		auto := "never"
		if !sk.AutoResponseAt().IsZero() {
			auto = "seen"
		}
		sk.SendText(fmt.Sprintf("built=%d fresh=%v tags=%s att=%s joins=%s online=%d auto=%s",
			s.built, s.fresh, strings.Join(sk.Tags(), ","), sk.Attachment(), joins, len(s.st.Sockets("")), auto))
	case msg == "defer":
		s.st.Defer(func() error {
			<-s.k.hold
			return nil
		})
		sk.SendText("deferred")
	case strings.HasPrefix(msg, "all:"):
		s.st.Broadcast(true, data)
	default:
		sk.SendText(msg)
	}
	s.fresh = false
	return nil
}

// sleepyNode is a node with the sleepy kind and chat, on a fake clock.
func sleepyNode(t *testing.T) (*node, *clock.Fake, *sleepyKind) {
	t.Helper()
	return sleepyNodeSync(t, storage.SyncFull)
}

func sleepyNodeSync(t *testing.T, sync string) (*node, *clock.Fake, *sleepyKind) {
	t.Helper()
	k := &sleepyKind{hold: make(chan struct{})}
	fake := clock.NewFake(time.Now().Truncate(time.Millisecond))
	n := startNodeSync(t, t.TempDir(), sync, rooms.Config{
		Kinds: append(builtin.Kinds(), k.kind()), Clock: fake, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		HibernateAfter: 10 * time.Second, EvictAfter: time.Minute,
	})
	return n, fake, k
}

// recv waits for ch to deliver and returns what it did, failing the test
// with msg after 10 s.
func recv[T any](t *testing.T, ch <-chan T, msg string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal(msg)
		panic("unreachable")
	}
}

// pingBarrier has c's pongs noted and returns a function that pings and
// waits for the pong: c's frames are read in order, so once it comes the
// gateway has handed the room every frame c sent before the ping.
// Something must be reading c, as gorilla runs the pong handler from its
// reads.
func pingBarrier(c *websocket.Conn) func(*testing.T) {
	pong := make(chan struct{}, 1)
	c.SetPongHandler(func(string) error {
		pong <- struct{}{}
		return nil
	})
	return func(t *testing.T) {
		t.Helper()
		if err := c.WriteControl(websocket.PingMessage, nil, time.Now().Add(10*time.Second)); err != nil {
			t.Fatal(err)
		}
		recv(t, pong, "no pong")
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitLong(t, 10*time.Second, what, cond)
}

func waitLong(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func roomState(t *testing.T, n *node, kind, name string) string {
	t.Helper()
	info, err := n.rt.Info(kind, name)
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

// sleepUntil moves the clock past the hibernation time until the room
// is in state.
func sleepUntil(t *testing.T, n *node, fake *clock.Fake, kind, name, state string) {
	t.Helper()
	waitFor(t, kind+"/"+name+" "+state, func() bool {
		fake.Advance(11 * time.Second)
		return roomState(t, n, kind, name) == state
	})
}

// openFilesUnder lists the files under dir this process holds open.
func openFilesUnder(t *testing.T, dir string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir) {
			out = append(out, target)
		}
	}
	return out
}

func TestHibernateAndWake(t *testing.T) {
	n, fake, k := sleepyNode(t)
	// The gateway starts goroutines of its own on first use: a room woken
	// and put to sleep first sets the baseline.
	warm := n.dial(t, "/rooms/sleepy/warm")
	send(t, warm, "x")
	read(t, warm)
	sleepUntil(t, n, fake, "sleepy", "warm", "hibernated")
	baseline := runtime.NumGoroutine()
	c := n.dial(t, "/rooms/sleepy/a?tag=red&tag=blue&att=alice")
	send(t, c, "state")
	if got, want := read(t, c), "built=2 fresh=true tags=red,blue att=alice joins=+ online=1 auto=never"; got != want {
		t.Fatalf("awake: %q, want %q", got, want)
	}
	if s := roomState(t, n, "sleepy", "a"); s != "active" {
		t.Fatalf("state %s, want active", s)
	}
	roomsDir := filepath.Join(n.dir, "rooms")
	if len(openFilesUnder(t, roomsDir)) == 0 {
		t.Fatal("an awake room holds no database file open")
	}

	sleepUntil(t, n, fake, "sleepy", "a", "hibernated")
	if st := n.rt.Stats(); st.Rooms != 0 || st.Hibernated != 2 || st.Hibernations != 2 {
		t.Fatalf("stats asleep: %+v", st)
	}
	waitFor(t, "the room's goroutine to end", func() bool { return runtime.NumGoroutine() <= baseline })
	if open := openFilesUnder(t, roomsDir); len(open) > 0 {
		t.Fatalf("a hibernated room holds %v open", open)
	}
	info, _ := n.rt.Info("sleepy", "a")
	if info.Sockets != 1 {
		t.Fatalf("admin API: %d sockets asleep, want 1", info.Sockets)
	}

	// The socket stayed open; its next message wakes the room: a new
	// object (in-memory fields start over), the same sockets, tags,
	// attachment and storage.
	send(t, c, "state")
	if got, want := read(t, c), "built=3 fresh=true tags=red,blue att=alice joins=+ online=1 auto=never"; got != want {
		t.Fatalf("woken: %q, want %q", got, want)
	}
	if k.built.Load() != 3 {
		t.Fatalf("constructor ran %d times, want 3 (warm, a, a again)", k.built.Load())
	}
	if s := roomState(t, n, "sleepy", "a"); s != "active" {
		t.Fatalf("state %s after a wake, want active", s)
	}
	if st := n.rt.Stats(); st.Wakes != 3 {
		t.Fatalf("wakes %d, want 3", st.Wakes)
	}
}

func TestHibernatedRoomAnswersWithoutWaking(t *testing.T) {
	n, fake, k := sleepyNode(t)
	c := n.dial(t, "/rooms/sleepy/b?tag=t1&att=bob")
	send(t, c, "hello")
	if got := read(t, c); got != "hello" {
		t.Fatalf("echo %q", got)
	}
	sleepUntil(t, n, fake, "sleepy", "b", "hibernated")

	// The auto-response pair, set by the room, is answered while it sleeps.
	for range 3 {
		send(t, c, "ping")
		if got := read(t, c); got != "pong" {
			t.Fatalf("auto-response %q, want pong", got)
		}
	}
	// So are protocol pings, by the gateway.
	pongs := make(chan string, 1)
	c.SetPongHandler(func(data string) error { pongs <- data; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Reading drives gorilla's pong handler; the room sends nothing else.
	go func() { _, _, _ = c.ReadMessage() }()
	if p := recv(t, pongs, "no pong from a hibernated room's socket"); p != "are you there" {
		t.Fatalf("pong %q", p)
	}
	if s := roomState(t, n, "sleepy", "b"); s != "hibernated" || k.built.Load() != 1 {
		t.Fatalf("after auto-responses and pings: state %s, constructor ran %d times", s, k.built.Load())
	}
	c.Close()
	// Its close is an event: it wakes the room.
	waitFor(t, "the close to be handled", func() bool {
		info, _ := n.rt.Info("sleepy", "b")
		return info.Sockets == 0
	})
	if k.built.Load() != 2 {
		t.Fatalf("a close did not wake the room: constructor ran %d times", k.built.Load())
	}

	// A new socket checks what the room sees: the auto-response time of
	// a socket was kept while the room slept.
	c2 := n.dial(t, "/rooms/sleepy/b?att=carol")
	sleepUntil(t, n, fake, "sleepy", "b", "hibernated")
	send(t, c2, "ping")
	if got := read(t, c2); got != "pong" {
		t.Fatalf("auto-response %q", got)
	}
	send(t, c2, "state")
	if got, want := read(t, c2), "att=carol joins=++ online=1 auto=seen"; !strings.HasSuffix(got, want) {
		t.Fatalf("after the first socket left: %q, want it to end %q", got, want)
	}
}

func TestMessagesWhileWakingKeepOrder(t *testing.T) {
	n, fake, k := sleepyNode(t)
	c := n.dial(t, "/rooms/sleepy/c")
	send(t, c, "x")
	read(t, c)
	sleepUntil(t, n, fake, "sleepy", "c", "hibernated")

	// The constructor waits while 200 messages arrive.
	gate := make(chan struct{})
	k.mu.Lock()
	k.gate = gate
	k.mu.Unlock()
	const msgs = 200
	for i := range msgs {
		send(t, c, fmt.Sprint(i))
	}
	waitFor(t, "the wake to start", func() bool { return k.built.Load() == 2 })
	k.mu.Lock()
	k.gate = nil
	k.mu.Unlock()
	close(gate)
	for i := range msgs {
		if got := read(t, c); got != fmt.Sprint(i) {
			t.Fatalf("message %d came back as %q", i, got)
		}
	}
	send(t, c, "state")
	if got := read(t, c); !strings.HasPrefix(got, "built=2 ") {
		t.Fatalf("after the wake: %q (one wake for all the messages)", got)
	}
}

func TestPendingDeferredWorkKeepsRoomAwake(t *testing.T) {
	n, fake, k := sleepyNode(t)
	c := n.dial(t, "/rooms/sleepy/d")
	send(t, c, "defer")
	if got := read(t, c); got != "deferred" {
		t.Fatalf("%q", got)
	}
	// A witness: an idle room with a socket, put to sleep by the same
	// sweeps that pass over the busy one.
	w := n.dial(t, "/rooms/sleepy/witness")
	send(t, w, "x")
	read(t, w)
	sleepUntil(t, n, fake, "sleepy", "witness", "hibernated")
	if s := roomState(t, n, "sleepy", "d"); s != "active" {
		t.Fatalf("a room with deferred work pending is %s", s)
	}
	close(k.hold)
	sleepUntil(t, n, fake, "sleepy", "d", "hibernated")
}

func TestEvictWithoutSockets(t *testing.T) {
	n, fake, _ := sleepyNode(t)
	w := n.dial(t, "/rooms/sleepy/witness")
	send(t, w, "x")
	read(t, w)
	if code, _ := httpDo(t, "GET", n.url("/rooms/sleepy/e"), ""); code != 404 {
		t.Fatalf("GET: %d", code)
	}
	if s := roomState(t, n, "sleepy", "e"); s != "active" {
		t.Fatalf("state %s", s)
	}
	// Without sockets a room is not hibernated: it is kept until
	// EvictAfter, then it leaves memory. The witness, with a socket,
	// sleeps at HibernateAfter in the same sweep.
	fake.Advance(11 * time.Second)
	waitFor(t, "the witness to hibernate", func() bool { return roomState(t, n, "sleepy", "witness") == "hibernated" })
	if s := roomState(t, n, "sleepy", "e"); s != "active" {
		t.Fatalf("state %s before EvictAfter", s)
	}
	// It stores nothing, so it goes from disk too.
	waitFor(t, "eviction", func() bool {
		fake.Advance(10 * time.Second)
		return roomState(t, n, "sleepy", "e") == "absent"
	})
	if st := n.rt.Stats(); st.Evictions != 1 || st.Rooms != 0 || st.Hibernated != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestChatAcrossHibernation(t *testing.T) {
	n, fake, _ := sleepyNode(t)
	alice := n.dial(t, "/rooms/chat/h?user=alice")
	read(t, alice) // history
	read(t, alice) // alice joins
	send(t, alice, `{"type":"message","text":"before"}`)
	if got := read(t, alice); !strings.Contains(got, `"text":"before"`) {
		t.Fatalf("%s", got)
	}
	bob := n.dial(t, "/rooms/chat/h?user=bob")
	if got := read(t, bob); !strings.Contains(got, `"text":"before"`) {
		t.Fatalf("bob's history: %s", got)
	}
	read(t, bob)
	if got := read(t, alice); !strings.Contains(got, `"online":2,"type":"join","user":"bob"`) {
		t.Fatalf("bob's join: %s", got)
	}
	sleepUntil(t, n, fake, "chat", "h", "hibernated")

	send(t, bob, `{"type":"message","text":"after"}`)
	for _, c := range []*websocket.Conn{alice, bob} {
		if got := read(t, c); !strings.Contains(got, `"id":2,"user":"bob","text":"after"`) {
			t.Fatalf("message after the wake: %s", got)
		}
	}
	sleepUntil(t, n, fake, "chat", "h", "hibernated")
	bob.Close()
	if got := read(t, alice); !strings.Contains(got, `"online":1,"type":"leave","user":"bob"`) {
		t.Fatalf("bob's leave: %s", got)
	}
	carol := n.dial(t, "/rooms/chat/h?user=carol")
	if got := read(t, carol); !strings.Contains(got, `"text":"before"`) || !strings.Contains(got, `"text":"after"`) {
		t.Fatalf("history after two sleeps: %s", got)
	}
	if got := read(t, carol); !strings.Contains(got, `"online":2`) {
		t.Fatalf("carol's join: %s", got)
	}
}

// TestManyRoomsSleepAndWake puts 4,000 rooms with a socket each to sleep
// and wakes them, in waves: every socket's message comes back, each wave
// wakes every room exactly once.
func TestManyRoomsSleepAndWake(t *testing.T) {
	if testing.Short() {
		t.Skip("4,000 sockets")
	}
	// Durability is not what this test is about: without an fsync per
	// commit it fits the time of a default test run on a busy machine.
	n, fake, k := sleepyNodeSync(t, storage.SyncNormal)
	const rooms = 4000
	conns := make([]*websocket.Conn, rooms)
	var wg sync.WaitGroup
	errs := make(chan error, rooms)
	start := time.Now()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < rooms; i += 8 {
				c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/rooms/sleepy/r%d?att=%d", n.addr, i, i), nil)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	t.Logf("%d rooms joined in %v", rooms, time.Since(start))
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for wave := 1; wave <= 2; wave++ {
		t0 := time.Now()
		waitLong(t, 4*time.Minute, fmt.Sprintf("wave %d: every room asleep", wave), func() bool {
			fake.Advance(11 * time.Second)
			st := n.rt.Stats()
			return st.Rooms == 0 && st.Hibernated == rooms
		})
		t.Logf("wave %d: asleep in %v", wave, time.Since(t0))
		t0 = time.Now()
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < rooms; i += 8 {
					c := conns[i]
					msg := fmt.Sprintf("w%d-%d", wave, i)
					if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
						errs <- err
						return
					}
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					_, got, err := c.ReadMessage()
					if err != nil || string(got) != msg {
						errs <- fmt.Errorf("room %d: %q, %v", i, got, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		t.Logf("wave %d: woken in %v", wave, time.Since(t0))
		// One construction per room on joining, one per wave.
		if got, want := k.built.Load(), int64(rooms*(wave+1)); got != want {
			t.Fatalf("wave %d: %d constructions, want %d", wave, got, want)
		}
	}
}

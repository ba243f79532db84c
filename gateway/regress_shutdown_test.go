package gateway

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/clock"
)

// TestRegressShutdownReturnsWhenSocketsGone: once the spread's first batch
// has closed the only socket, Shutdown has nothing left to spread and must
// return without waiting for the spread's clock to move.
func TestRegressShutdownReturnsWhenSocketsGone(t *testing.T) {
	fake := clock.NewFake(time.Now())
	srv, err := New(Config{Listen: "127.0.0.1:0", Clock: fake, EventLoops: 1, ShutdownSpread: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/rooms/echo/x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the socket open", func() bool { return srv.Stats().Sockets == 1 })
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res <- srv.Shutdown(ctx)
	}()
	// gorilla answers den's 1012 with its own close frame: the socket ends.
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseServiceRestart) {
		t.Fatalf("read: %v, want close 1012", err)
	}
	waitFor(t, "no socket left", func() bool { return srv.Stats().Conns == 0 })
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		fake.Advance(time.Minute) // let the test end
		t.Fatalf("Shutdown still running 5 s after its last connection closed (it waits for the spread's next tick): %v", <-res)
	}
}

// loopRooms is Echo that records which loop serves each client address.
type loopRooms struct {
	Echo
	mu     sync.Mutex
	byAddr map[string]*loop
}

func (r *loopRooms) Join(j *Join) {
	r.mu.Lock()
	r.byAddr[j.Request().RemoteAddr] = j.s.loop // Join runs on j.s's loop
	r.mu.Unlock()
	j.Accept()
}

// TestRegressShutdownSpreadUnevenLoops: with two loops and every socket on
// one of them, the spread should still close about open/steps sockets a
// step. perLoop divides the sockets by all loops, so the loop that has
// them closes half as many a step and the rest go in one burst at the end.
func TestRegressShutdownSpreadUnevenLoops(t *testing.T) {
	fake := clock.NewFake(time.Now())
	const spread = time.Second
	steps := int(spread / spreadStep) // 20
	rooms := &loopRooms{byAddr: map[string]*loop{}}
	srv, err := New(Config{Listen: "127.0.0.1:0", Clock: fake, EventLoops: 2, ShutdownSpread: spread, Rooms: rooms})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var conns []*websocket.Conn
	for range 400 {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/rooms/echo/u"), nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	waitFor(t, "400 sockets", func() bool { return srv.Stats().Sockets == 400 })
	// Keep the sockets of the loop that has more; close the others.
	rooms.mu.Lock()
	count := map[*loop]int{}
	for _, l := range rooms.byAddr {
		count[l]++
	}
	var keep *loop
	for l, n := range count {
		if keep == nil || n > count[keep] {
			keep = l
		}
	}
	kept := 0
	for _, c := range conns {
		if rooms.byAddr[c.LocalAddr().String()] == keep {
			kept++
		} else {
			c.Close()
		}
	}
	rooms.mu.Unlock()
	if len(count) != 2 {
		t.Skipf("gnet put every socket on one loop: %v", count)
	}
	waitFor(t, "one loop's sockets left", func() bool { return srv.Stats().Sockets == int64(kept) })

	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res <- srv.Shutdown(ctx)
	}()
	// Before the clock moves only the first batch goes: it should be an
	// even share, kept/steps.
	want := kept / steps
	i1012 := closeLabel(1012)
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().ClosesSent[i1012] < uint64(want) {
		if time.Now().After(deadline) {
			t.Errorf("first batch closed %d of %d sockets, want %d (1/%d): the loop without sockets took half the quota",
				srv.Stats().ClosesSent[i1012], kept, want, steps)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	advanceUntil(t, fake, spreadStep, "Shutdown to return", func() bool {
		select {
		case <-res:
			return true
		default:
			return false
		}
	})
}

// Joins waiting for their rooms when Shutdown starts, with no WebSocket
// open, are all refused with 503 at once: the spread stops early once the
// sockets are gone, and joins left for its later steps used to wait for
// the handshake timeout (on den's clock, which this test does not move).
func TestRegressShutdownRefusesEveryPendingJoin(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	const joins = 3
	h := &heldJoins{joins: make(chan *Join, joins)}
	srv, err := New(Config{Listen: "127.0.0.1:0", Clock: fake, Tick: time.Second, EventLoops: 1, Rooms: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var cs []*rawClient
	for range joins {
		c := dialRaw(t, srv)
		c.send(request("/rooms/held/a", hUpgrade, hConn, hKey, hVersion))
		select {
		case <-h.joins:
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the join")
		}
		cs = append(cs, c)
	}
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res <- srv.Shutdown(ctx)
	}()
	t.Cleanup(func() {
		fake.Advance(time.Minute) // a failed test's joins time out, and Shutdown ends
		<-res
	})
	for i, c := range cs {
		if resp := c.response(); resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("join %d at Shutdown: %d, want 503", i, resp.StatusCode)
		}
	}
	if n := srv.Stats().Refused[refusedShutdown]; n != joins {
		t.Errorf("%d joins refused for the shutdown, want %d", n, joins)
	}
}

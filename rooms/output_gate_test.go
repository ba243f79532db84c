package rooms_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// gateRoom runs commands sent as text messages; "block" holds the room's
// goroutine until the test lets it go, so that what is sent meanwhile
// forms the next batch.
type gateRoom struct {
	rooms.Base
	st      *rooms.State
	entered chan struct{}
	release chan struct{}
}

func (g *gateRoom) Connect(c *rooms.Connect) error {
	if _, err := g.st.Storage.Exec(`CREATE TABLE IF NOT EXISTS t (k TEXT)`); err != nil {
		return err
	}
	if _, err := g.st.Storage.Exec(`CREATE TABLE IF NOT EXISTS boom (k TEXT)`); err != nil {
		return err
	}
	_, err := g.st.Storage.Exec(`CREATE TRIGGER IF NOT EXISTS boom_rb BEFORE INSERT ON boom BEGIN SELECT RAISE(ROLLBACK, 'boom'); END`)
	c.Accept()
	return err
}

func (g *gateRoom) count() int64 {
	row, err := g.st.Storage.Exec(`SELECT count(*) AS n FROM t`)
	if err != nil {
		return -1
	}
	m, _ := row.One()
	n, _ := m["n"].(int64)
	return n
}

func (g *gateRoom) Message(s *rooms.Sock, _ bool, data []byte) error {
	cmd, arg, _ := strings.Cut(string(data), ":")
	switch cmd {
	case "block":
		g.entered <- struct{}{}
		<-g.release
	case "put":
		if _, err := g.st.Storage.Exec(`INSERT INTO t (k) VALUES (?)`, arg); err != nil {
			return err
		}
		s.SendText("put " + arg)
	case "count":
		s.SendText(fmt.Sprint("count ", g.count()))
	case "raise":
		// SQL that ends the whole transaction; the error is swallowed.
		_, _ = g.st.Storage.Exec(`INSERT INTO boom (k) VALUES ('x')`)
		return nil
	case "nested":
		// An inner transaction fails; the event goes on and commits.
		_ = g.st.Storage.Transaction(func() error {
			if _, err := g.st.Storage.Exec(`INSERT INTO t (k) VALUES ('inner')`); err != nil {
				return err
			}
			return errors.New("inner fails")
		})
		s.SendText("nested")
	case "panic":
		_, _ = g.st.Storage.Exec(`INSERT INTO t (k) VALUES ('panic')`)
		s.SendText("before panic")
		panic("midway")
	case "restart":
		// The room's transaction ended and a new one begun from inside a
		// handler, through storage.Room's exported methods.
		if err := g.st.Storage.Rollback(); err != nil {
			return err
		}
		return g.st.Storage.Begin()
	}
	return nil
}

// batcher opens a gateRoom and reports when the gateway has handed the
// runtime a given number of messages.
type batcher struct {
	n       *node
	g       chan *gateRoom
	handed  atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func newBatcher(t *testing.T, cfg rooms.Config) *batcher {
	b := &batcher{entered: make(chan struct{}), release: make(chan struct{})}
	cfg.Kinds = []rooms.Kind{{Name: "gate", New: func(st *rooms.State) rooms.Handler {
		return &gateRoom{st: st, entered: b.entered, release: b.release}
	}}}
	after := func(string) { b.handed.Add(1) }
	b.n = startNodeWrapped(t, t.TempDir(), storage.SyncFull, cfg, func(r gateway.Rooms) gateway.Rooms { return hookRooms{r, after} })
	return b
}

// batch sends msgs on c while the room is held in a "block" event, so
// that they all run as one batch once it lets go.
func (b *batcher) batch(t *testing.T, c *websocket.Conn, msgs ...string) {
	t.Helper()
	send(t, c, "block")
	recv(t, b.entered, "the room never ran the block event")
	want := b.handed.Load() + int64(len(msgs))
	for _, m := range msgs {
		send(t, c, m)
	}
	waitFor(t, "the batch queued", func() bool { return b.handed.Load() >= want })
	b.release <- struct{}{}
}

// expectOnly1011 reads c until it closes, and fails t unless nothing came
// before a close with 1011: the batch failed and released nothing.
func expectOnly1011(t *testing.T, c *websocket.Conn) {
	t.Helper()
	var got []string
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, m, err := c.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if len(got) > 0 || ce.Code != 1011 {
				t.Fatalf("got %q, closed %d; want nothing and 1011", got, ce.Code)
			}
			return
		}
		if err != nil {
			t.Fatalf("read: %v (after %q)", err, got)
		}
		got = append(got, string(m))
	}
}

// SQL that rolls the whole transaction back (a trigger's RAISE(ROLLBACK))
// takes the batch's earlier events with it: their output does not go.
func TestRaiseRollbackDropsEarlierOutput(t *testing.T) {
	b := newBatcher(t, rooms.Config{})
	a := b.n.dial(t, "/rooms/gate/r")
	b.batch(t, a, "put:1", "raise", "put:2")
	expectOnly1011(t, a)
	c := b.n.dial(t, "/rooms/gate/r")
	send(t, c, "count")
	if got := read(t, c); got != "count 0" {
		t.Fatalf("%s after the failed batch", got)
	}
}

// A handler that ends the room's transaction and begins another (through
// the exported storage.Room methods) fails the batch: the earlier events'
// output, for writes that were rolled back, does not go; the sockets are
// closed with 1011, as for any batch that could not commit.
func TestHandlerEndingTheTransactionReleasesNothing(t *testing.T) {
	b := newBatcher(t, rooms.Config{})
	a := b.n.dial(t, "/rooms/gate/m")
	b.batch(t, a, "put:1", "restart", "count")
	expectOnly1011(t, a)
}

// A failed inner Transaction and a handler that panics midway leave no
// writes and no output, in a batch with events that commit.
func TestNestedAndPanicLeaveNothing(t *testing.T) {
	b := newBatcher(t, rooms.Config{})
	a := b.n.dial(t, "/rooms/gate/n")
	b.batch(t, a, "put:1", "nested", "panic", "count")
	var got []string
	for range 3 {
		got = append(got, read(t, a))
	}
	if strings.Join(got, "|") != "put 1|nested|count 1" {
		t.Fatalf("got %q", got)
	}
}

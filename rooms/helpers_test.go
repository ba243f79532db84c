package rooms_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/rooms/builtin"
	"github.com/den-rooms/den/storage"
)

// node is den in-process: a store, a runtime and a gateway serving it.
type node struct {
	dir   string
	addr  string
	rt    *rooms.Runtime
	store *storage.Store
	srv   *gateway.Server
}

// startNode serves kinds (builtin ones if none) from dir.
func startNode(tb testing.TB, dir string, cfg rooms.Config) *node {
	tb.Helper()
	return startNodeSync(tb, dir, storage.SyncFull, cfg)
}

// startNodeSync is startNode with storage's synchronous mode.
func startNodeSync(tb testing.TB, dir, sync string, cfg rooms.Config) *node {
	tb.Helper()
	return startNodeWrapped(tb, dir, sync, cfg, nil)
}

// startNodeWrapped is startNodeSync with the gateway's Rooms wrapped by
// wrap, if it is not nil.
func startNodeWrapped(tb testing.TB, dir, sync string, cfg rooms.Config, wrap func(gateway.Rooms) gateway.Rooms) *node {
	tb.Helper()
	return startNodeStore(tb, storage.Options{Dir: dir, Synchronous: sync}, cfg, wrap)
}

// startNodeStore is startNodeWrapped with the store's options whole.
func startNodeStore(tb testing.TB, opts storage.Options, cfg rooms.Config, wrap func(gateway.Rooms) gateway.Rooms) *node {
	tb.Helper()
	store, err := storage.Open(opts)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Store = store
	if cfg.Kinds == nil {
		cfg.Kinds = builtin.Kinds()
	}
	cfg.Broadcast = gateway.RoomsBroadcast
	rt, err := rooms.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	// The clients here read only when a test expects a frame, so they
	// answer no ping: keepalive would close the sockets a slow run (the
	// race detector on a busy machine) leaves idle for a minute.
	var rr gateway.Rooms = gateway.Runtime(rt)
	if wrap != nil {
		rr = wrap(rr)
	}
	srv, err := gateway.New(gateway.Config{Listen: "127.0.0.1:0", Rooms: rr, Logger: zap.NewNop(),
		CloseTimeout: 500 * time.Millisecond, PingInterval: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	n := &node{dir: opts.Dir, addr: srv.Addr().String(), rt: rt, store: store, srv: srv}
	tb.Cleanup(n.stop)
	return n
}

// stop shuts the node down; a second call does nothing.
func (n *node) stop() {
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.srv.Shutdown(ctx)
	_ = n.rt.Shutdown(ctx)
	_ = n.store.Close()
	n.srv = nil
}

func (n *node) url(path string) string { return "http://" + n.addr + path }

func (n *node) dial(tb testing.TB, path string) *websocket.Conn {
	tb.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+n.addr+path, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial %s: %v (HTTP %d)", path, err, status)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// read reads one text message, failing the test after 10 s.
func read(tb testing.TB, c *websocket.Conn) string {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	return string(b)
}

func send(tb testing.TB, c *websocket.Conn, s string) {
	tb.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

func httpDo(tb testing.TB, method, url, body string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		k, err := resp.Body.Read(buf)
		sb.Write(buf[:k])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, strings.TrimSpace(sb.String())
}

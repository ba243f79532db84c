package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/den-rooms/den/gateway"
)

// workerEnv makes this test binary a worker process, so tests run real
// multi-process runs.
const workerEnv = "DEN_LOADTEST_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		if err := ServeWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testWorkerCommand() *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = os.Stderr
	return cmd
}

// startDen runs den's gateway with its built-in echo rooms and returns
// its address.
func startDen(tb testing.TB, cfg gateway.Config) string {
	tb.Helper()
	return startDenServer(tb, cfg).Addr().String()
}

func startDenServer(tb testing.TB, cfg gateway.Config) *gateway.Server {
	tb.Helper()
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = zap.NewNop()
	srv, err := gateway.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv
}

// run runs cfg with test-sized defaults and fails the test on error.
func run(tb testing.TB, cfg Config, opt Options) *Result {
	tb.Helper()
	if cfg.Duration == 0 {
		cfg.Duration = 30 * time.Second
	}
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.Loops == 0 {
		cfg.Loops = 2
	}
	res, err := Run(context.Background(), cfg, opt)
	if err != nil {
		tb.Fatalf("Run: %v", err)
	}
	return res
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

// gorillaServer serves WebSockets with handle, one goroutine per
// connection as gorilla does; it is the independent server the client is
// checked against.
func gorillaServer(tb testing.TB, handle func(c *websocket.Conn, r *http.Request)) string {
	tb.Helper()
	return gorillaServerWith(tb, handle, func(*http.Server) {})
}

// gorillaServerWith is gorillaServer with its http.Server set up by
// configure before it starts.
func gorillaServerWith(tb testing.TB, handle func(c *websocket.Conn, r *http.Request), configure func(*http.Server)) string {
	tb.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		handle(c, r)
	}))
	configure(srv.Config)
	srv.Start()
	tb.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// hub is a broadcast server's rooms: every message goes to every member,
// the sender included.
type hub struct {
	mu    sync.Mutex
	rooms map[string]map[*websocket.Conn]*sync.Mutex
}

func (h *hub) serve(c *websocket.Conn, r *http.Request) {
	room := r.URL.Path
	wmu := &sync.Mutex{}
	h.mu.Lock()
	if h.rooms == nil {
		h.rooms = map[string]map[*websocket.Conn]*sync.Mutex{}
	}
	if h.rooms[room] == nil {
		h.rooms[room] = map[*websocket.Conn]*sync.Mutex{}
	}
	h.rooms[room][c] = wmu
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.rooms[room], c)
		h.mu.Unlock()
	}()
	for {
		op, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		h.mu.Lock()
		members := make(map[*websocket.Conn]*sync.Mutex, len(h.rooms[room]))
		for m, mu := range h.rooms[room] {
			members[m] = mu
		}
		h.mu.Unlock()
		for m, mu := range members {
			mu.Lock()
			_ = m.WriteMessage(op, msg)
			mu.Unlock()
		}
	}
}

// echo sends every message back.
func echo(c *websocket.Conn, _ *http.Request) {
	for {
		op, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if c.WriteMessage(op, msg) != nil {
			return
		}
	}
}

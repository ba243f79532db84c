package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/loadtest"
	"github.com/den-rooms/den/server"
)

func start(t *testing.T) *server.Server {
	t.Helper()
	return serveNode(t, server.Config{Gateway: gateway.Config{Listen: "127.0.0.1:0"}, Data: t.TempDir()})
}

// serveNode starts a node with cfg and shuts it down when the test ends.
func serveNode(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv
}

func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestDemoPageAndMetrics(t *testing.T) {
	srv := start(t)
	base := "http://" + srv.Addr().String()
	code, ctype, body := get(t, base+"/")
	if code != 200 || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, "/rooms/chat/") {
		t.Fatalf("GET /: %d %s", code, ctype)
	}
	if code, _, _ := get(t, base+"/nothing"); code != http.StatusNotFound {
		t.Fatalf("GET /nothing: %d", code)
	}
	resp, err := http.Post(base+"/rooms/counter/m/increment", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	code, _, body = get(t, base+"/metrics")
	for _, want := range []string{"den_sockets 0", `den_rooms{state="active"} 1`, "den_storage_open_handles 1", "process_resident_memory_bytes", "den_accepted_total"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET /metrics (%d) lacks %q", code, want)
		}
	}
	if code, _, _ := get(t, base+"/admin/rooms"); code != http.StatusNotFound {
		t.Fatalf("the admin API without a token: %d, want it not served", code)
	}
}

// TestLoadtestReadsMetrics points den loadtest's --metrics-url at den.
func TestLoadtestReadsMetrics(t *testing.T) {
	srv := start(t)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.Idle, URLs: []string{"ws://" + srv.Addr().String() + "/rooms/echo/{room}"},
		Count: 20, Hold: 200 * time.Millisecond, Duration: 30 * time.Second, Interval: 100 * time.Millisecond, Loops: 1,
	}, loadtest.Options{MetricsURLs: []string{"http://" + srv.Addr().String() + "/metrics"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Counters.Opened != 20 || res.Server == nil || res.Server.HoldRSS == 0 || res.Server.OpenAtHold != 20 {
		t.Fatalf("result %+v server %+v", res.Counters, res.Server)
	}
}

// A node whose Start failed (its address taken) shuts down without a
// panic and lets its data folder go: a program can start another on it.
func TestRegressShutdownAfterFailedStart(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	srv, err := server.New(server.Config{Gateway: gateway.Config{Listen: busy.Addr().String()}, Data: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err == nil {
		t.Fatal("Start on a taken address succeeded")
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	again, err := server.New(server.Config{Gateway: gateway.Config{Listen: "127.0.0.1:0"}, Data: dir})
	if err != nil {
		t.Fatalf("New on the folder of the node that failed: %v", err)
	}
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	if err := again.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// New refusing a gateway setting stops the rooms runtime it had started:
// no scheduler or sweep is left running on the storage it closed.
func TestRegressFailedNewStopsItsRuntime(t *testing.T) {
	before := runtime.NumGoroutine()
	if _, err := server.New(server.Config{Gateway: gateway.Config{MaxMessageBytes: -1}, Data: t.TempDir()}); err == nil {
		t.Fatal("New took a negative message size")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before the failed New, %d after", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client that closes its side after a request to a room, as `nc -N`
// does, gets the room's answer, and the room ran the request once.
func TestHalfClosedClientGetsTheRoomsAnswer(t *testing.T) {
	srv := start(t)
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /rooms/counter/half/increment HTTP/1.1\r\nHost: den\r\nContent-Length: 0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") || !strings.HasSuffix(string(b), `{"value":1}`+"\n") {
		t.Fatalf("after a half-close: %q (%v), want 200 with value 1", b, err)
	}
	if code, _, body := get(t, "http://"+srv.Addr().String()+"/rooms/counter/half"); code != 200 || !strings.Contains(body, `"value":1`) {
		t.Fatalf("GET the counter: %d %s, want value 1", code, body)
	}
}

package loadtest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// --concurrency caps the handshakes in flight across all the client's
// event loops together, and a value below the loops is refused, as no
// loop can connect fewer than one at a time.
func TestConcurrencyCapsHandshakesInFlight(t *testing.T) {
	if _, err := newWorker(Config{Scenario: Idle, URLs: []string{"ws://127.0.0.1:1/x"}, Count: 8, Concurrency: 1, Loops: 4}.withDefaults(), 0, 1); err == nil {
		t.Fatal("--concurrency 1 over 4 loops was taken")
	}
	var inFlight, peak atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(100 * time.Millisecond) // every handshake waits: they pile up
		inFlight.Add(-1)
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	res := run(t, Config{
		Scenario: Idle, URLs: []string{"ws" + strings.TrimPrefix(srv.URL, "http") + "/x/{room}"},
		Count: 12, Concurrency: 3, Loops: 2, Rate: 1000, Hold: 100 * time.Millisecond, Duration: 8 * time.Second,
	}, Options{})
	if res.Counters.Opened != 12 {
		t.Fatalf("opened %d of 12", res.Counters.Opened)
	}
	if p := peak.Load(); p != 3 {
		t.Fatalf("--concurrency 3 over 2 loops: %d handshakes in flight at most, want 3", p)
	}
}

// An echo's latency is its own message's round trip: another member's
// message in the room neither ends the wait nor counts as an echo.
func TestEchoTimesItsOwnRoundTrip(t *testing.T) {
	const delay = 200 * time.Millisecond
	var mu sync.Mutex
	conns := map[*websocket.Conn]*sync.Mutex{}
	write := func(c *websocket.Conn, op int, msg []byte) {
		mu.Lock()
		m := conns[c]
		mu.Unlock()
		m.Lock()
		_ = c.WriteMessage(op, msg)
		m.Unlock()
	}
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		mu.Lock()
		conns[c] = &sync.Mutex{}
		mu.Unlock()
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			// Others get it at once; the sender's echo comes late.
			mu.Lock()
			var others []*websocket.Conn
			for o := range conns {
				if o != c {
					others = append(others, o)
				}
			}
			mu.Unlock()
			for _, o := range others {
				write(o, op, msg)
			}
			go func() {
				time.Sleep(delay)
				write(c, op, msg)
			}()
		}
	})
	res := run(t, Config{
		Scenario: Echo, URLs: []string{"ws://" + addr + "/x/{room}"},
		Count: 4, Rooms: 1, Messages: 3, Duration: 10 * time.Second,
	}, Options{})
	if res.Latency.P50 < float64(delay/time.Millisecond) {
		t.Fatalf("echo p50 %.3f ms, but every echo came back after %v", res.Latency.P50, delay)
	}
	if res.Latency.Count != res.Counters.Echoed {
		t.Fatalf("%d latency samples for %d echoes", res.Latency.Count, res.Counters.Echoed)
	}
}

// connect_rate counts the connections opened in the ramp, not the most
// held at once: a server that ends each soon after it opens does not
// make the ramp look slow.
func TestConnectRateCountsConnectionsOpened(t *testing.T) {
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		time.Sleep(30 * time.Millisecond)
		_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1001, "bye"))
		_, _, _ = c.ReadMessage()
	})
	res := run(t, Config{
		Scenario: Idle, URLs: []string{"ws://" + addr + "/x/{room}"},
		Count: 50, Rate: 50, Hold: 200 * time.Millisecond, Duration: 6 * time.Second,
	}, Options{})
	if res.Counters.Opened != 50 {
		t.Fatalf("opened %d of 50", res.Counters.Opened)
	}
	if want := 50 / res.RampSeconds; res.ConnectRate < want*0.9 {
		t.Fatalf("connect rate %.1f/s, but 50 opened in %.2f s", res.ConnectRate, res.RampSeconds)
	}
}

// --messages past what a sender counts is refused, not wrapped.
func TestMessagesPastInt32Refused(t *testing.T) {
	c := Config{Scenario: Echo, URLs: []string{"ws://127.0.0.1:1/x"}, Count: 2, Messages: 1<<32 + 2}.withDefaults()
	if _, err := c.validate(); err == nil {
		t.Fatal("--messages 2^32+2 was taken")
	}
}

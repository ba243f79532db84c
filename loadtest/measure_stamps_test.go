package loadtest

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/rooms/builtin"
	"github.com/den-rooms/den/storage"
)

// startChatDen runs den with its built-in kinds (chat included) on data
// in dir, so a second call on the same dir sees the first one's rooms.
func startChatDen(tb testing.TB, dir string, hibernateAfter time.Duration) (string, *rooms.Runtime, func()) {
	tb.Helper()
	store, err := storage.Open(storage.Options{Dir: dir, Synchronous: storage.SyncNormal})
	if err != nil {
		tb.Fatal(err)
	}
	rt, err := rooms.New(rooms.Config{Store: store, Kinds: builtin.Kinds(), Broadcast: gateway.RoomsBroadcast,
		HibernateAfter: hibernateAfter, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := gateway.New(gateway.Config{Listen: "127.0.0.1:0", Rooms: gateway.Runtime(rt), Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			_ = rt.Shutdown(ctx)
			_ = store.Close()
		})
	}
	tb.Cleanup(stop)
	return srv.Addr().String(), rt, stop
}

const chatTemplate = `{"type":"message","text":"{payload}"}`

// Re-running wake against den's chat rooms: each room's join brings a
// "history" frame that holds the previous run's stamped message. The
// client takes it for a fresh message and times it: one latency sample
// per room the length of the gap between the runs, and an "echo" nobody
// sent in this run.
func TestWakeRerunIgnoresHistoryOfEarlierRuns(t *testing.T) {
	const roomsN = 5
	dir := t.TempDir()
	cfg := Config{Scenario: Wake, Rooms: roomsN, WakeIdle: 50 * time.Millisecond, WakeRate: 1000,
		Template: chatTemplate}
	addr, _, stop := startChatDen(t, dir, time.Hour)
	cfg.URLs = []string{"ws://" + addr + "/rooms/chat/{room}"}
	first := run(t, cfg, Options{})
	stop()
	if first.Latency.Count != roomsN {
		t.Fatalf("first run: latency n=%d, want %d", first.Latency.Count, roomsN)
	}
	addr, _, _ = startChatDen(t, dir, time.Hour)
	cfg.URLs = []string{"ws://" + addr + "/rooms/chat/{room}"}
	res := run(t, cfg, Options{})
	t.Logf("second run: counters %+v latency %+v", res.Counters, res.Latency)
	if res.Latency.Count != roomsN || res.Counters.Echoed != res.Counters.Sent {
		t.Errorf("second run: %d latency samples and %d echoes for %d rooms woken (%d sent): the join's history frame was timed",
			res.Latency.Count, res.Counters.Echoed, roomsN, res.Counters.Sent)
	}
}

// The same with broadcast: the history frame each member gets on joining
// counts as a delivery, so delivered exceeds expected (hiding missing
// ones, and ending the drain early) and the latency holds the gap.
func TestBroadcastRerunIgnoresHistoryOfEarlierRuns(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Scenario: Broadcast, Rooms: 1, Members: 3, Senders: 1, MsgRate: 50, Messages: 5,
		Template: chatTemplate}
	addr, _, stop := startChatDen(t, dir, time.Hour)
	cfg.URLs = []string{"ws://" + addr + "/rooms/chat/{room}"}
	run(t, cfg, Options{})
	stop()
	addr, _, _ = startChatDen(t, dir, time.Hour)
	cfg.URLs = []string{"ws://" + addr + "/rooms/chat/{room}"}
	res := run(t, cfg, Options{})
	t.Logf("second run: counters %+v expected %d latency %+v", res.Counters, res.Expected, res.Latency)
	if res.Counters.Delivered != res.Expected {
		t.Errorf("delivered %d, expected %d: history frames counted as deliveries", res.Counters.Delivered, res.Expected)
	}
	// 5 messages to 3 members (den echoes to the sender too).
	if res.Latency.Count != 15 {
		t.Errorf("latency n=%d, want 15", res.Latency.Count)
	}
}

// Closed-loop echo: a server that acknowledges each message at once and
// echoes it 200 ms later. The ack (unstamped) ends the wait, the next
// message goes out, and the late echo of the previous one ends the next
// wait: the round trip reported is near zero though every echo took
// 200 ms.
func TestEchoTimesItsOwnMessageNotAnAck(t *testing.T) {
	const delay = 200 * time.Millisecond
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		var wmu sync.Mutex
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			wmu.Lock()
			_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ack"}`))
			wmu.Unlock()
			go func() {
				time.Sleep(delay)
				wmu.Lock()
				_ = c.WriteMessage(op, msg)
				wmu.Unlock()
			}()
		}
	})
	res := run(t, Config{
		Scenario: Echo, URLs: []string{"ws://" + addr + "/x/{room}"},
		Count: 2, Messages: 5, Duration: 15 * time.Second,
	}, Options{})
	t.Logf("counters %+v latency %+v", res.Counters, res.Latency)
	if res.Latency.P50 < float64(delay/time.Millisecond) {
		t.Fatalf("echo p50 %.3f ms, but every echo came back after %v", res.Latency.P50, delay)
	}
}

// Idle pings: a room that tells its members of each join (as den's chat
// does). A ping's reply takes 500 ms; the joins arriving meanwhile are
// taken for it.
func TestIdlePingNotTimedByPresenceFrames(t *testing.T) {
	const delay = 500 * time.Millisecond
	var mu sync.Mutex
	members := map[*websocket.Conn]*sync.Mutex{}
	write := func(c *websocket.Conn, m *sync.Mutex, b []byte) {
		m.Lock()
		_ = c.WriteMessage(websocket.TextMessage, b)
		m.Unlock()
	}
	addr := gorillaServer(t, func(c *websocket.Conn, _ *http.Request) {
		wmu := &sync.Mutex{}
		mu.Lock()
		for o, om := range members {
			go write(o, om, []byte(`{"type":"join"}`))
		}
		members[c] = wmu
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(members, c)
			mu.Unlock()
		}()
		for {
			_, _, err := c.ReadMessage()
			if err != nil {
				return
			}
			go func() {
				time.Sleep(delay)
				write(c, wmu, []byte("pong"))
			}()
		}
	})
	res := run(t, Config{
		Scenario: Idle, URLs: []string{"ws://" + addr + "/x/{room}"},
		Count: 40, Rooms: 1, Rate: 20, PingEvery: time.Second, Hold: 1200 * time.Millisecond, Duration: 15 * time.Second,
	}, Options{})
	t.Logf("counters %+v latency %+v", res.Counters, res.Latency)
	if res.Latency.P50 < float64(delay/time.Millisecond) {
		t.Fatalf("ping p50 %.3f ms, but every pong came %v after its ping", res.Latency.P50, delay)
	}
}

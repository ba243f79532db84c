package server_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/server"
)

// scrape reads GET /metrics into "name{label="value"}" → value; a
// histogram appears as its _count.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			key := name
			if lp := m.GetLabel(); len(lp) > 0 {
				var parts []string
				for _, l := range lp {
					parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				key += "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// metricsNode is a node whose timeouts are short enough for a test to see
// every counter move, and whose debug log is kept.
type metricsNode struct {
	srv  *server.Server
	base string
	addr string
	log  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// flaky is a kind whose messages fail, and whose alarm, set by a message
// "alarm", fails too.
var flaky = rooms.Kind{Name: "flaky", New: func(st *rooms.State) rooms.Handler { return &flakyRoom{st: st} }}

type flakyRoom struct {
	rooms.Base
	st *rooms.State
}

func (f *flakyRoom) Message(_ *rooms.Sock, _ bool, data []byte) error {
	if string(data) == "alarm" {
		return f.st.SetAlarm(f.st.Now())
	}
	return errors.New("flaky: refused")
}

func (f *flakyRoom) Alarm(rooms.AlarmInfo) error { return errors.New("flaky: alarm failed") }

func startMetricsNode(t *testing.T, tune ...func(*server.Config)) *metricsNode {
	t.Helper()
	buf := &syncBuffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(buf), zapcore.DebugLevel))
	cfg := server.Config{
		Gateway: gateway.Config{
			Listen: "127.0.0.1:0", AllowedOrigins: []string{"https://ok.example"},
			// Short, for TestMetricsMove's handshake timeout, and long
			// enough that a join that makes a room file (fsyncs and all)
			// beside other packages' tests under -race is not timed out.
			Tick: 10 * time.Millisecond, HandshakeTimeout: 2 * time.Second,
			WriteQueueBytes: 4096,
		},
		Data: t.TempDir(), Kinds: []rooms.Kind{flaky}, Logger: log,
		HibernateAfter: 300 * time.Millisecond, EvictAfter: 300 * time.Millisecond,
	}
	for _, f := range tune {
		f(&cfg)
	}
	srv := serveNode(t, cfg)
	return &metricsNode{srv: srv, base: "http://" + srv.Addr().String(), addr: srv.Addr().String(), log: buf}
}

// waitFor scrapes until every named metric has grown by at least its
// amount since before, and fails the test if that does not happen.
func (n *metricsNode) waitFor(t *testing.T, what string, before map[string]float64, grow map[string]float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		now := scrape(t, n.base)
		var short []string
		for name, by := range grow {
			if now[name]-before[name] < by {
				short = append(short, fmt.Sprintf("%s %v→%v (want +%v)", name, before[name], now[name], by))
			}
		}
		if len(short) == 0 {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, strings.Join(short, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawHandshake sends a request on a fresh TCP connection and returns the
// status code of the answer, leaving the connection open.
func rawHandshake(t *testing.T, addr, request string) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, resp.StatusCode
}

func upgradeRequest(path string, extra ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: den\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + strings.Join(extra, "") + "\r\n"
}

// TestMetricsMove checks, through GET /metrics, that each of den's
// metrics moves when what it counts happens.
func TestMetricsMove(t *testing.T) {
	// Gauges of awake rooms are read while the room is awake: long enough
	// for scrapes to see it on a machine loaded by other tests.
	n := startMetricsNode(t, func(c *server.Config) { c.HibernateAfter = 2 * time.Second })
	m := scrape(t, n.base)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "process_open_fds"} {
		if _, ok := m[name]; !ok {
			t.Errorf("GET /metrics lacks %s", name)
		}
	}

	// A chat member joins and speaks, then a room is created over HTTP.
	c, _, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/chat/m?user=ann", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m = n.waitFor(t, "a join", m, map[string]float64{
		"den_upgrades_total": 1, "den_accepted_total": 1, "den_room_wakes_total": 1, "den_room_wake_seconds": 1,
		`den_room_event_seconds{type="connect"}`: 1, "den_room_commit_seconds": 1, "den_room_commit_events": 1,
		"den_storage_open_handles": 1, `den_rooms{state="active"}`: 1, "den_sockets": 1, "den_connections": 1,
	})
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","text":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	m = n.waitFor(t, "a message", m, map[string]float64{
		"den_messages_received_total": 1, "den_received_bytes_total": 30,
		"den_messages_sent_total": 1, "den_sent_bytes_total": 30, `den_room_event_seconds{type="message"}`: 1,
	})
	if _, err := http.Post(n.base+"/rooms/counter/m/increment", "", nil); err != nil {
		t.Fatal(err)
	}
	m = n.waitFor(t, "a request", m, map[string]float64{`den_room_event_seconds{type="request"}`: 1})

	// A scheduled chat message is an alarm.
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"schedule","delay_ms":1,"text":"later"}`)); err != nil {
		t.Fatal(err)
	}
	m = n.waitFor(t, "an alarm", m, map[string]float64{
		"den_alarms_fired_total": 1, "den_alarm_lateness_seconds": 1, `den_room_event_seconds{type="alarm"}`: 1,
	})

	// Handshakes refused, one per reason den decides itself.
	for _, tc := range []struct {
		req, reason string
		status      int
	}{
		{upgradeRequest("/rooms/chat"), "not_found", 404},
		{upgradeRequest("/rooms/chat/x", "Origin: https://evil.example\r\n"), "origin", 403},
		{strings.Replace(upgradeRequest("/rooms/chat/x"), "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 7", 1), "bad_handshake", 426},
		{upgradeRequest("/rooms/nokind/x"), "room", 404},
	} {
		if _, status := rawHandshake(t, n.addr, tc.req); status != tc.status {
			t.Errorf("refused for %s: %d, want %d", tc.reason, status, tc.status)
		}
		m = n.waitFor(t, "a refusal for "+tc.reason, m, map[string]float64{`den_upgrades_refused_total{reason="` + tc.reason + `"}`: 1})
	}

	// A request head that never ends runs out of the handshake timeout.
	partial, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if _, err := partial.Write([]byte("GET /rooms/chat/x HTTP/1.1\r\nHost: den\r\n")); err != nil {
		t.Fatal(err)
	}
	m = n.waitFor(t, "a handshake timeout", m, map[string]float64{"den_handshake_timeouts_total": 1})

	// Close codes both ways: the client's 4001 is answered in kind, and a
	// protocol error is den's 1002.
	c2, _, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/echo/m", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c2.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))
	m = n.waitFor(t, "a close", m, map[string]float64{
		`den_closes_received_total{code="4xxx"}`: 1, `den_closes_sent_total{code="4xxx"}`: 1,
	})
	c2.Close()
	raw, status := rawHandshake(t, n.addr, upgradeRequest("/rooms/echo/m"))
	if status != 101 {
		t.Fatalf("handshake: %d", status)
	}
	_, _ = raw.Write([]byte{0x81, 0x02, 'h', 'i'}) // unmasked: RFC 6455 forbids it
	m = n.waitFor(t, "a protocol error", m, map[string]float64{
		"den_protocol_errors_total": 1, `den_closes_sent_total{code="1002"}`: 1,
	})
	raw.Close()
	m = n.waitFor(t, "a dropped connection", m, map[string]float64{`den_closes_received_total{code="1006"}`: 1})

	// A member that does not read while the room sends is cut off.
	slow, status := rawHandshake(t, n.addr, upgradeRequest("/rooms/chat/slow"))
	if status != 101 {
		t.Fatalf("handshake: %d", status)
	}
	defer slow.Close()
	body := `{"user":"backend","text":"` + strings.Repeat("x", 4000) + `"}`
	for i := 0; ; i++ {
		if i%50 == 0 {
			now := scrape(t, n.base)
			if now["den_slow_consumers_total"] > m["den_slow_consumers_total"] {
				m = now
				break
			}
		}
		if i == 10000 {
			t.Fatal("a member that never reads was not cut off")
		}
		resp, err := http.Post(n.base+"/rooms/chat/slow/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// Failing handlers: a message, then an alarm that is retried.
	f, _, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/flaky/m", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_ = f.WriteMessage(websocket.TextMessage, []byte("fail"))
	_ = f.WriteMessage(websocket.TextMessage, []byte("alarm"))
	m = n.waitFor(t, "failed handlers", m, map[string]float64{
		"den_room_events_failed_total": 2, "den_alarms_retried_total": 1, "den_alarms_pending": 1,
	})

	// Idle rooms sleep: with sockets they hibernate, without they go. The
	// hibernated gauge is checked against zero, not the last scrape: rooms
	// that hibernated before it may wake again since (the flaky room's
	// alarm retry does).
	base := maps.Clone(m)
	base[`den_rooms{state="hibernated"}`] = 0
	m = n.waitFor(t, "idle rooms", base, map[string]float64{
		"den_room_hibernations_total": 1, "den_room_evictions_total": 1, `den_rooms{state="hibernated"}`: 1,
	})

	// The same debug entry many times in a second is sampled.
	for range 40 {
		_, _ = rawHandshake(t, n.addr, upgradeRequest("/rooms/chat"))
	}
	n.waitFor(t, "a log flood", m, map[string]float64{"den_log_entries_dropped_total": 10})
}

// TestMetricsKeepalive: a socket that never answers pings is closed, and
// counted.
func TestMetricsKeepalive(t *testing.T) {
	n := startMetricsNode(t, func(c *server.Config) {
		c.Gateway.PingInterval, c.Gateway.PongTimeout = 100*time.Millisecond, 100*time.Millisecond
	})
	m := scrape(t, n.base)
	silent, status := rawHandshake(t, n.addr, upgradeRequest("/rooms/echo/silent"))
	if status != 101 {
		t.Fatalf("handshake: %d", status)
	}
	defer silent.Close()
	n.waitFor(t, "a keepalive timeout", m, map[string]float64{"den_keepalive_timeouts_total": 1, `den_closes_sent_total{code="1001"}`: 1})
}

// TestLogsKeepCredentialsOut makes den log at debug level about requests
// that carry a token in their query string or headers, and checks that
// the token never reaches the log.
func TestLogsKeepCredentialsOut(t *testing.T) {
	n := startMetricsNode(t)
	const secret = "s3cr3t-t0ken"
	for _, path := range []string{"/rooms/chat/x?token=" + secret, "/rooms/chat?token=" + secret, "/rooms/nokind/x?token=" + secret} {
		_, _ = rawHandshake(t, n.addr, upgradeRequest(path, "Authorization: Bearer "+secret+"\r\n"))
		_, _ = rawHandshake(t, n.addr, "GET "+path+" HTTP/1.1\r\nHost: den\r\nAuthorization: Bearer "+secret+"\r\n\r\n")
	}
	_, _ = rawHandshake(t, n.addr, "GET /%zz?token="+secret+" HTTP/1.1\r\nHost: den\r\n\r\n")
	if log := n.log.String(); strings.Contains(log, secret) {
		t.Fatalf("the log holds the token:\n%s", log)
	}
	if !strings.Contains(n.log.String(), "bad handshake") {
		t.Fatal("den logged nothing about the bad handshakes: the test proves nothing")
	}
}

package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/wsframe"
)

// dialFrom connects to srv from a chosen loopback address, so one test can
// be several clients to den's per-address limits.
func dialFrom(tb testing.TB, srv *Server, from string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	return d.Dial("tcp", srv.Addr().String())
}

// statusOf reads the HTTP status den answers on c.
func statusOf(tb testing.TB, c net.Conn) int {
	tb.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		tb.Fatalf("reading den's answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestMaxConnsPerIP: an address holding its limit gets 429 for one more
// connection, another address does not, and a freed slot is usable again.
func TestMaxConnsPerIP(t *testing.T) {
	srv := startServer(t, Config{MaxConnsPerIP: 3})
	var held []net.Conn
	for range 3 {
		c, err := dialFrom(t, srv, "127.0.0.2")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, "3 connections held", func() bool { return srv.Stats().Conns == 3 })
	over, err := dialFrom(t, srv, "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if code := statusOf(t, over); code != http.StatusTooManyRequests {
		t.Fatalf("a 4th connection from one address: %d, want 429", code)
	}
	if n := srv.Stats().LimitHits[limitConnsPerIP]; n != 1 {
		t.Fatalf("conns_per_ip hits %d, want 1", n)
	}
	other := dialRaw(t, srv) // 127.0.0.1
	other.upgrade("/rooms/echo/x")
	held[0].Close()
	waitFor(t, "a slot freed", func() bool { return srv.Stats().Conns == 3 })
	again, err := dialFrom(t, srv, "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.Write(request("/livez")); err != nil {
		t.Fatal(err)
	}
	if code := statusOf(t, again); code != http.StatusOK {
		t.Fatalf("after a connection closed: %d, want 200", code)
	}
}

// TestHandshakesPerIP: past its burst, an address's new connections get
// 429 until the rate lets more in; other addresses are not affected.
func TestHandshakesPerIP(t *testing.T) {
	// Half a connection a second: the 4th of a quick series is over.
	srv := startServer(t, Config{HandshakesPerIP: 0.5, HandshakeBurst: 3})
	for i := range 4 {
		c, err := dialFrom(t, srv, "127.0.0.3")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(request("/livez")); err != nil {
			t.Fatal(err)
		}
		want := http.StatusOK
		if i == 3 {
			want = http.StatusTooManyRequests
		}
		if code := statusOf(t, c); code != want {
			t.Fatalf("connection %d: %d, want %d", i+1, code, want)
		}
	}
	if n := srv.Stats().LimitHits[limitHandshakeRate]; n != 1 {
		t.Fatalf("handshake_rate hits %d, want 1", n)
	}
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/x")
}

// TestMessageRate: a socket that sends faster than the rate beyond its
// burst is closed with 1008; one that keeps to it is not.
func TestMessageRate(t *testing.T) {
	srv := startServer(t, Config{MessageRate: 0.5, MessageBurst: 5, CloseTimeout: 100 * time.Millisecond, Tick: 10 * time.Millisecond})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/x")
	for i := range 5 {
		c.frame(true, 0, wsframe.OpText, []byte("hi"))
		if f := c.mustRead(); string(f.payload) != "hi" {
			t.Fatalf("echo %d: %v %q", i, f.op, f.payload)
		}
	}
	c.frame(true, 0, wsframe.OpText, []byte("one too many"))
	c.expectClose(wsframe.ClosePolicyViolation)
	if n := srv.Stats().LimitHits[limitMessageRate]; n != 1 {
		t.Fatalf("message_rate hits %d, want 1", n)
	}
	other := dialRaw(t, srv)
	other.upgrade("/rooms/echo/y")
	other.frame(true, 0, wsframe.OpText, []byte("fine"))
	if f := other.mustRead(); string(f.payload) != "fine" {
		t.Fatalf("another socket: %v %q", f.op, f.payload)
	}
	// Pings count too: each costs den a write of its pong.
	pinger := dialRaw(t, srv)
	pinger.upgrade("/rooms/echo/z")
	for i := range 5 {
		pinger.frame(true, 0, wsframe.OpPing, []byte("p"))
		if f := pinger.mustRead(); f.op != wsframe.OpPong {
			t.Fatalf("pong %d: %v %q", i, f.op, f.payload)
		}
	}
	pinger.frame(true, 0, wsframe.OpPing, []byte("one too many"))
	pinger.expectClose(wsframe.ClosePolicyViolation)
}

// TestAbuseLeavesHonestClientsAlone: 200 connections from one address
// send garbage, stop halfway through their handshakes or drip their
// headers a byte at a time, past that address's connection limit, while a
// client from another address completes every echo round trip it tries.
func TestAbuseLeavesHonestClientsAlone(t *testing.T) {
	srv := startServer(t, Config{MaxConnsPerIP: 150, HandshakeTimeout: 2 * time.Second, Tick: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var attackers sync.WaitGroup
	for i := range 200 {
		attackers.Add(1)
		go func() {
			defer attackers.Done()
			c, err := dialFrom(t, srv, "127.0.0.4")
			if err != nil {
				return
			}
			defer c.Close()
			go func() { <-ctx.Done(); c.Close() }()
			switch i % 3 {
			case 0: // garbage: less than den drops before closing
				junk := make([]byte, 4096)
				for range 16 {
					_, _ = rand.Read(junk)
					if _, err := c.Write(junk); err != nil {
						return
					}
				}
			case 1: // half a handshake, then silence
				_, _ = c.Write([]byte("GET /rooms/echo/x HTTP/1.1\r\nHost: den\r\nUpgrade: websocket\r\n"))
				<-ctx.Done()
			case 2: // headers dripped a byte at a time
				req := []byte("GET /rooms/echo/x HTTP/1.1\r\nHost: den\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
				for _, b := range req {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					select {
					case <-ctx.Done():
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
			<-ctx.Done()
		}()
	}
	waitFor(t, "the attackers over their address's limit", func() bool {
		return srv.Stats().LimitHits[limitConnsPerIP] >= 50
	})

	d := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return dialFrom(t, srv, "127.0.0.5") }}
	honest, _, err := d.Dial(wsURL(srv, "/rooms/echo/honest"), nil)
	if err != nil {
		t.Fatalf("an honest client during the attack: %v", err)
	}
	defer honest.Close()
	for i := range 200 {
		msg := fmt.Sprintf("round trip %d", i)
		if err := honest.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = honest.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, b, err := honest.ReadMessage(); err != nil || string(b) != msg {
			t.Fatalf("round trip %d during the attack: %q %v", i, b, err)
		}
	}
	waitFor(t, "half handshakes timed out", func() bool { return srv.Stats().HandshakeTimeouts > 0 })
	cancel()
	attackers.Wait()
	st := srv.Stats()
	if st.Sockets != 1 {
		t.Fatalf("%d sockets open, want only the honest one", st.Sockets)
	}
	t.Logf("conns_per_ip hits %d, handshake timeouts %d", st.LimitHits[limitConnsPerIP], st.HandshakeTimeouts)
}

// TestPerIPGroupsIPv6Prefixes: IPv6 clients count by /64, so a host
// cannot pass its limit by taking a new address for each connection;
// IPv4 (and IPv4-mapped) clients count by address.
func TestPerIPGroupsIPv6Prefixes(t *testing.T) {
	ips := newIPLimits(&Config{MaxConnsPerIP: 1})
	for _, tc := range []struct {
		addr, what string
		admitted   bool
	}{
		{"2001:db8:1:2::1", "the first IPv6 connection", true},
		{"2001:db8:1:2:ffff::9", "a second address in the same /64", false},
		{"2001:db8:1:3::1", "another /64", true},
		{"192.0.2.1", "an IPv4 address", true},
		{"::ffff:192.0.2.1", "the same IPv4 address, mapped into IPv6", false},
		{"192.0.2.2", "the next IPv4 address", true},
	} {
		ip := addrIP(&net.TCPAddr{IP: net.ParseIP(tc.addr), Port: 1})
		if _, ok := ips.admit(ip, 0); ok != tc.admitted {
			t.Fatalf("%s (%s): admitted %v, want %v", tc.what, tc.addr, ok, tc.admitted)
		}
	}
}

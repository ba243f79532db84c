package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/internal/wsframe"
)

// TestSlowConsumer: a client that sends but never reads fills its write
// queue with echoes; den closes it with 1008 and counts it, and other
// sockets on the same loops keep working.
func TestSlowConsumer(t *testing.T) {
	srv := startServer(t, Config{WriteQueueBytes: 64 << 10, EventLoops: 1})
	c := dialRaw(t, srv)
	c.conn.(*net.TCPConn).SetReadBuffer(4096)
	c.upgrade("/rooms/echo/slow")

	other, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/rooms/echo/other"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	// Flood echo requests without reading the echoes. Writes give up after
	// a while: once den stops echoing, TCP may leave this side waiting on
	// a zero window, and that wait is not what the test is about.
	frame := wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpBinary, make([]byte, 16<<10), testMask)
	go func() {
		for i := 0; i < 2000 && srv.Stats().SlowConsumers == 0; i++ {
			c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.conn.Write(frame); err != nil {
				return
			}
		}
	}()
	waitFor(t, "slow consumer counted", func() bool { return srv.Stats().SlowConsumers == 1 })

	// The other socket is unharmed.
	if err := other.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := other.ReadMessage(); err != nil || string(msg) != "still here" {
		t.Fatalf("other socket: %q %v", msg, err)
	}
	// Reading now, the slow client finds echoes, then close 1008.
	c.expectCloseAfterData(wsframe.ClosePolicyViolation)
}

// expectCloseAfterData reads past data frames to a close frame with want,
// tolerating a reset once den has given up on the connection.
func (c *rawClient) expectCloseAfterData(want wsframe.StatusCode) {
	c.tb.Helper()
	for {
		f, err := c.read()
		if err != nil {
			if errors.Is(err, io.EOF) || isReset(err) {
				return // the close frame was lost with the unread queue
			}
			c.tb.Fatalf("reading to close: %v", err)
		}
		if f.op == wsframe.OpClose {
			if code, _ := wsframe.ParseClose(f.payload); code != want {
				c.tb.Fatalf("close %d, want %d", code, want)
			}
			return
		}
	}
}

// TestKeepalive drives den's clock: a silent socket is pinged after the
// ping interval and closed after the pong timeout; a socket that answers
// pings stays.
func TestKeepalive(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	srv := startServer(t, Config{Clock: fake, Tick: time.Second, PingInterval: 30 * time.Second, PongTimeout: 10 * time.Second})

	silent := dialRaw(t, srv)
	silent.upgrade("/rooms/echo/ka")
	alive := dialRaw(t, srv)
	alive.upgrade("/rooms/echo/ka")
	waitFor(t, "sockets open", func() bool { return srv.Stats().Sockets == 2 })

	pings := make(chan string, 2)
	for name, c := range map[string]*rawClient{"silent": silent, "alive": alive} {
		go func() {
			f, err := c.read()
			if err == nil && f.op == wsframe.OpPing {
				if name == "alive" {
					c.frame(true, 0, wsframe.OpPong, f.payload)
				}
				pings <- name
				return
			}
			pings <- fmt.Sprintf("%s: %v %v", name, f.op, err)
		}()
	}
	got := map[string]bool{}
	advanceUntil(t, fake, time.Second, "both pinged", func() bool {
		select {
		case p := <-pings:
			got[p] = true
		default:
		}
		return len(got) == 2
	})
	if !got["silent"] || !got["alive"] {
		t.Fatalf("pings: %v", got)
	}
	advanceUntil(t, fake, time.Second, "silent socket closed", func() bool { return srv.Stats().KeepaliveTimeouts == 1 })
	silent.expectClose(wsframe.CloseGoingAway)
	if n := srv.Stats().Sockets; n != 1 {
		t.Fatalf("%d sockets open, want the answering one", n)
	}
	alive.frame(true, 0, wsframe.OpText, []byte("ok"))
	if f := alive.mustRead(); string(f.payload) != "ok" {
		t.Fatalf("answering socket: %q", f.payload)
	}
}

// TestManySockets: 5,000 concurrent sockets each doing echo round trips,
// all answered. Client and server share this process's descriptors.
func TestManySockets(t *testing.T) {
	const n, rounds = 5000, 3
	srv := startServer(t, Config{})
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			_, err = c.Write(request("/rooms/echo/many", hUpgrade, hConn, hKey, hVersion))
			if err == nil {
				err = readUpgrade(c)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "all sockets open", func() bool { return srv.Stats().Sockets == n })
	var rt sync.WaitGroup
	fail := make(chan error, n)
	for i, c := range conns {
		rt.Add(1)
		go func() {
			defer rt.Done()
			for r := range rounds {
				msg := []byte(fmt.Sprintf("socket %d round %d", i, r))
				if _, err := c.Write(wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpText, msg, testMask)); err != nil {
					fail <- err
					return
				}
				want := wsframe.AppendFrame(nil, wsframe.OpText, 0, msg)
				got := make([]byte, len(want))
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
					fail <- fmt.Errorf("socket %d round %d: %q %v", i, r, got, err)
					return
				}
			}
		}()
	}
	rt.Wait()
	close(fail)
	for err := range fail {
		t.Fatal(err)
	}
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "all sockets gone", func() bool { return srv.Stats().Conns == 0 })
}

// readUpgrade reads a 101 response byte by byte so no frame bytes are
// swallowed by a buffer.
func readUpgrade(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var head []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			return err
		}
		head = append(head, b[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		return fmt.Errorf("handshake: %q", head)
	}
	return nil
}

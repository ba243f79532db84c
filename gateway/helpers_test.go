package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/internal/wsframe"
)

// startServer runs a Server on a free loopback port for one test.
func startServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(tb, zaptest.Level(zapcore.WarnLevel))
	}
	srv, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
	})
	return srv
}

func wsURL(srv *Server, path string) string { return "ws://" + srv.Addr().String() + path }

// rawClient is a WebSocket client written against RFC 6455 bytes, so
// den's decoder is not its own judge: frames are built by hand and the
// server's replies are read straight off the socket.
type rawClient struct {
	tb   testing.TB
	conn net.Conn
	br   *bufio.Reader
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

func dialRaw(tb testing.TB, srv *Server) *rawClient {
	tb.Helper()
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &rawClient{tb: tb, conn: c, br: bufio.NewReader(c)}
}

// upgrade performs the handshake for path and checks the 101.
func (c *rawClient) upgrade(path string, extra ...string) *http.Response {
	c.tb.Helper()
	req := "GET " + path + " HTTP/1.1\r\nHost: den\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\n"
	for _, h := range extra {
		req += h + "\r\n"
	}
	c.send([]byte(req + "\r\n"))
	resp := c.response()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.tb.Fatalf("handshake: status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		c.tb.Fatalf("Sec-WebSocket-Accept = %q", got)
	}
	return resp
}

func (c *rawClient) send(b []byte) {
	c.tb.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

// response reads one HTTP response, body included.
func (c *rawClient) response() *http.Response {
	c.tb.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.tb.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

var testMask = [4]byte{0xa1, 0xb2, 0xc3, 0xd4}

func (c *rawClient) frame(fin bool, rsv byte, op wsframe.Opcode, payload []byte) {
	c.tb.Helper()
	c.send(wsframe.AppendMaskedFrame(nil, fin, rsv, op, payload, testMask))
}

type serverFrame struct {
	fin     bool
	rsv     byte
	op      wsframe.Opcode
	payload []byte
}

// read reads one frame from the server, checking it is not masked.
func (c *rawClient) read() (serverFrame, error) {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [14]byte
	if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
		return serverFrame{}, err
	}
	n := 2
	switch hdr[1] & 0x7f {
	case 126:
		n = 4
	case 127:
		n = 10
	}
	if hdr[1]&0x80 != 0 {
		return serverFrame{}, errors.New("server frame is masked")
	}
	if _, err := io.ReadFull(c.br, hdr[2:n]); err != nil {
		return serverFrame{}, err
	}
	h, hn, err := wsframe.ParseHeader(hdr[:n])
	if err != nil || hn != n {
		return serverFrame{}, fmt.Errorf("bad server header %x: %v", hdr[:n], err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{fin: h.Fin, rsv: h.Rsv, op: h.Op, payload: p}, nil
}

func (c *rawClient) mustRead() serverFrame {
	c.tb.Helper()
	f, err := c.read()
	if err != nil {
		c.tb.Fatalf("read frame: %v", err)
	}
	return f
}

// expectClose reads until a close frame and checks its code, then checks
// that den ends the TCP connection.
func (c *rawClient) expectClose(want wsframe.StatusCode) {
	c.tb.Helper()
	for {
		f, err := c.read()
		if err != nil {
			c.tb.Fatalf("waiting for close %d: %v", want, err)
		}
		if f.op != wsframe.OpClose {
			continue
		}
		code, _ := wsframe.ParseClose(f.payload)
		if code != want {
			c.tb.Fatalf("close code %d, want %d", code, want)
		}
		c.expectEOF()
		return
	}
}

// expectEOF checks that the server closes the connection, then closes
// the client's side, as a client does at the end of its input: den, which
// only shut its own side, waits for that (see linger.go).
func (c *rawClient) expectEOF() {
	c.tb.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c.br)
	if err != nil && !isReset(err) {
		c.tb.Fatalf("waiting for EOF: %v", err)
	}
	if len(b) > 0 {
		c.tb.Fatalf("%d bytes after the close: %q", len(b), b)
	}
	c.conn.Close()
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// advanceUntil moves a fake clock step by step until cond holds. Each step
// is a tick that den's loops handle on their own goroutines, so the
// condition is polled between steps.
func advanceUntil(tb testing.TB, fake *clock.Fake, step time.Duration, what string, cond func() bool) {
	tb.Helper()
	waitFor(tb, what, func() bool {
		if cond() {
			return true
		}
		fake.Advance(step)
		return false
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package gateway

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/den-rooms/den/internal/wsframe"
)

var (
	fuzzOnce   sync.Once
	fuzzServer *Server
	fuzzCanary *rawClient
)

// FuzzConnection sends arbitrary bytes to a live den, either as a whole
// connection or after a valid handshake. Whatever arrives, den must not
// panic, must answer with well-formed frames (or close), must end the
// connection once the client is done, and must keep serving a canary
// socket on the same event loop.
func FuzzConnection(f *testing.F) {
	f.Add(false, []byte("GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(false, []byte("GET /rooms/echo/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"))
	f.Add(true, wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpText, []byte("hi"), testMask))
	f.Add(true, wsframe.AppendMaskedFrame(nil, false, 0, wsframe.OpBinary, []byte("part"), testMask))
	f.Add(true, []byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, upgraded bool, in []byte) {
		fuzzOnce.Do(func() {
			srv, err := New(Config{Listen: "127.0.0.1:0", EventLoops: 1, Logger: zap.NewNop(), MaxMessageBytes: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			fuzzServer = srv
			// The canary outlives every fuzz input, so it belongs to no
			// single test: its testing.T is a placeholder.
			fuzzCanary = dialRaw(&testing.T{}, srv)
			fuzzCanary.upgrade("/rooms/echo/canary")
		})
		c, err := net.Dial("tcp", fuzzServer.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc := &rawClient{tb: t, conn: c}
		rc.br = bufio.NewReader(c)
		if upgraded {
			rc.upgrade("/rooms/echo/fuzz")
		}
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, err := io.ReadAll(rc.br)
		if err != nil && !isReset(err) {
			t.Fatalf("den did not end the connection: %v", err)
		}
		if upgraded {
			var d wsframe.Decoder
			lim := &wsframe.Limits{MaxMessage: 1 << 20, Deflate: true, FromServer: true}
			for len(out) > 0 {
				n, _, ok, err := d.Decode(out, lim)
				if err != nil || (!ok && n == 0) {
					t.Fatalf("den sent a malformed frame stream (%v): %x", err, out)
				}
				out = out[n:]
			}
		}
		fuzzCanary.frame(true, 0, wsframe.OpText, []byte("canary"))
		if f, err := fuzzCanary.read(); err != nil || string(f.payload) != "canary" {
			t.Fatalf("canary socket harmed: %q %v", f.payload, err)
		}
	})
}

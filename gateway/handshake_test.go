package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/internal/wsframe"
)

func request(path string, headers ...string) []byte {
	r := "GET " + path + " HTTP/1.1\r\nHost: den\r\n"
	for _, h := range headers {
		r += h + "\r\n"
	}
	return []byte(r + "\r\n")
}

const (
	hUpgrade = "Upgrade: websocket"
	hConn    = "Connection: Upgrade"
	hKey     = "Sec-WebSocket-Key: " + testKey
	hVersion = "Sec-WebSocket-Version: 13"
)

func TestHandshakeErrors(t *testing.T) {
	srv := startServer(t, Config{AllowedOrigins: []string{"https://app.example", "https://*.example.org"}})
	cases := []struct {
		name   string
		req    []byte
		status int
		header [2]string // a header the response must carry
	}{
		{"POST upgrade", []byte("POST /rooms/echo/a HTTP/1.1\r\nHost: den\r\n" + hUpgrade + "\r\n" + hConn + "\r\n" + hKey + "\r\n" + hVersion + "\r\nContent-Length: 0\r\n\r\n"), http.StatusMethodNotAllowed, [2]string{}},
		{"missing key", request("/rooms/echo/a", hUpgrade, hConn, hVersion), http.StatusBadRequest, [2]string{}},
		{"key not base64", request("/rooms/echo/a", hUpgrade, hConn, "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!", hVersion), http.StatusBadRequest, [2]string{}},
		{"key of 8 bytes", request("/rooms/echo/a", hUpgrade, hConn, "Sec-WebSocket-Key: AAAAAAAAAAA=", hVersion), http.StatusBadRequest, [2]string{}},
		{"version 8", request("/rooms/echo/a", hUpgrade, hConn, hKey, "Sec-WebSocket-Version: 8"), http.StatusUpgradeRequired, [2]string{"Sec-WebSocket-Version", "13"}},
		{"missing Connection", request("/rooms/echo/a", hUpgrade, hKey, hVersion), http.StatusBadRequest, [2]string{}},
		{"unknown kind", request("/rooms/nope/a", hUpgrade, hConn, hKey, hVersion), http.StatusNotFound, [2]string{}},
		{"not a room path", request("/elsewhere", hUpgrade, hConn, hKey, hVersion), http.StatusNotFound, [2]string{}},
		{"room path with more", request("/rooms/echo/a/b", hUpgrade, hConn, hKey, hVersion), http.StatusNotFound, [2]string{}},
		{"origin refused", request("/rooms/echo/a", hUpgrade, hConn, hKey, hVersion, "Origin: https://evil.example"), http.StatusForbidden, [2]string{}},
		{"apex of wildcard refused", request("/rooms/echo/a", hUpgrade, hConn, hKey, hVersion, "Origin: https://example.org"), http.StatusForbidden, [2]string{}},
		{"no Host", []byte("GET /rooms/echo/a HTTP/1.1\r\n" + hUpgrade + "\r\n" + hConn + "\r\n" + hKey + "\r\n" + hVersion + "\r\n\r\n"), http.StatusBadRequest, [2]string{}},
		{"HTTP/2.0 request line", []byte("GET / HTTP/2.0\r\nHost: den\r\n\r\n"), http.StatusHTTPVersionNotSupported, [2]string{}},
		{"garbage", []byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"), http.StatusBadRequest, [2]string{}},
		{"folded header", []byte("GET /livez HTTP/1.1\r\nHost: den\r\nX-A: 1\r\n  2\r\n\r\n"), http.StatusBadRequest, [2]string{}},
		{"head too large", request("/livez", "X-Big: "+strings.Repeat("a", 9000)), http.StatusRequestHeaderFieldsTooLarge, [2]string{}},
		{"two Content-Lengths", []byte("POST /livez HTTP/1.1\r\nHost: den\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"), http.StatusBadRequest, [2]string{}},
		{"gzip transfer coding", []byte("POST /livez HTTP/1.1\r\nHost: den\r\nTransfer-Encoding: gzip\r\n\r\n"), http.StatusNotImplemented, [2]string{}},
		{"body too large", []byte("POST /livez HTTP/1.1\r\nHost: den\r\nContent-Length: 99999999\r\n\r\n"), http.StatusRequestEntityTooLarge, [2]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, srv)
			c.send(tc.req)
			resp := c.response()
			if resp.StatusCode != tc.status {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if k := tc.header[0]; k != "" && resp.Header.Get(k) != tc.header[1] {
				t.Fatalf("%s = %q, want %q", k, resp.Header.Get(k), tc.header[1])
			}
			c.expectEOF()
		})
	}
}

func TestOriginAllowed(t *testing.T) {
	srv := startServer(t, Config{AllowedOrigins: []string{"https://app.example", "https://*.example.org"}})
	for _, origin := range []string{"https://app.example", "https://chat.example.org", "HTTPS://App.Example", ""} {
		c := dialRaw(t, srv)
		if origin != "" {
			c.upgrade("/rooms/echo/o", "Origin: "+origin)
		} else {
			c.upgrade("/rooms/echo/o")
		}
	}
}

func TestSubprotocolHook(t *testing.T) {
	srv := startServer(t, Config{Subprotocol: func(kind string, offered []string) string {
		for _, p := range offered {
			if p == "den.v1" && kind == "echo" {
				return p
			}
		}
		return ""
	}})
	d := websocket.Dialer{Subprotocols: []string{"chat.v9", "den.v1"}}
	c, resp, err := d.Dial(wsURL(srv, "/rooms/echo/p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "den.v1" {
		t.Fatalf("Sec-WebSocket-Protocol = %q, want den.v1", got)
	}
	d.Subprotocols = []string{"other"}
	c, resp, err = d.Dial(wsURL(srv, "/rooms/echo/p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "" {
		t.Fatalf("Sec-WebSocket-Protocol = %q for an unsupported offer", got)
	}
}

func TestPlainHTTP(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("got " + string(b)))
	})
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("handler bug") })
	srv := startServer(t, Config{Handler: mux})

	// Keep-alive: several requests, pipelined, on one connection.
	c := dialRaw(t, srv)
	c.send(append(append(request("/livez"), request("/readyz")...), request("/healthz")...))
	for _, want := range []int{200, 200, 200} {
		if resp := c.response(); resp.StatusCode != want || resp.Close {
			t.Fatalf("status %d close %v, want %d kept alive", resp.StatusCode, resp.Close, want)
		}
	}
	c.send(request("/nope"))
	if resp := c.response(); resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
	// Chunked body, with Expect: 100-continue.
	c.send([]byte("POST /submit HTTP/1.1\r\nHost: den\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"))
	if resp := c.response(); resp.StatusCode != 100 {
		t.Fatalf("Expect: 100-continue answered %d", resp.StatusCode)
	}
	c.send([]byte("4\r\nden \r\n5;ext=1\r\nrooms\r\n0\r\nX-Trailer: y\r\n\r\n"))
	if resp := c.response(); resp.StatusCode != 200 {
		t.Fatalf("chunked POST: %d", resp.StatusCode)
	} else if b, _ := io.ReadAll(resp.Body); string(b) != "got den rooms" {
		t.Fatalf("chunked body reached the handler as %q", b)
	}
	// A panicking handler costs its request a 500, not the server.
	c.send(request("/panic"))
	if resp := c.response(); resp.StatusCode != 500 {
		t.Fatalf("panicking handler: %d", resp.StatusCode)
	}
	// Then a WebSocket upgrade on the same kept-alive connection.
	c.upgrade("/rooms/echo/ka")
	c.frame(true, 0, wsframe.OpText, []byte("after http"))
	if f := c.mustRead(); string(f.payload) != "after http" {
		t.Fatalf("echo after upgrade on a kept-alive connection: %q", f.payload)
	}

	// net/http as an independent client.
	resp, err := http.Get("http://" + srv.Addr().String() + "/livez")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Fatalf("GET /livez: %d %q", resp.StatusCode, b)
	}
	// HTTP/1.0 without keep-alive is closed after the response.
	c = dialRaw(t, srv)
	c.send([]byte("GET /livez HTTP/1.0\r\n\r\n"))
	if resp := c.response(); resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.0: %d", resp.StatusCode)
	}
	c.expectEOF()
}

// TestHandshakeTimeout: a client that starts a request and stalls gets 408
// once the handshake timeout passes on den's clock; one that sends nothing
// is closed.
func TestHandshakeTimeout(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	srv := startServer(t, Config{Clock: fake, Tick: time.Second})
	partial := dialRaw(t, srv)
	partial.send([]byte("GET /livez HTTP/1.1\r\nHost: de"))
	silent := dialRaw(t, srv)
	waitFor(t, "both connections accepted", func() bool { return srv.Stats().Conns == 2 })
	advanceUntil(t, fake, time.Second, "timeouts", func() bool { return srv.Stats().Conns == 0 })
	if resp := partial.response(); resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled request: %d, want 408", resp.StatusCode)
	}
	silent.expectEOF()
}

// A request whose body stalls gets 408 too, though den has taken what
// came of the body out of the connection's buffer.
func TestStalledBodyGets408(t *testing.T) {
	fake := clock.NewFake(time.Unix(0, 0))
	srv := startServer(t, Config{Clock: fake, Tick: time.Second})
	for _, body := range []string{
		"Content-Length: 100\r\n\r\n0123456789",
		"Transfer-Encoding: chunked\r\n\r\n64\r\n0123456789",
	} {
		c := dialRaw(t, srv)
		c.send([]byte("POST /livez HTTP/1.1\r\nHost: den\r\n" + body))
		waitFor(t, "connection accepted", func() bool { return srv.Stats().Conns == 1 })
		advanceUntil(t, fake, time.Second, "timeout", func() bool { return srv.Stats().Conns == 0 })
		if resp := c.response(); resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("%q: %d, want 408", body, resp.StatusCode)
		}
	}
}

package gateway

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/clock"
)

// TestShutdownSpread: Shutdown closes sockets in batches over the spread,
// not all at once: before the clock moves only the first batch has its
// 1012, and closing them all takes the whole spread.
func TestShutdownSpread(t *testing.T) {
	fake := clock.NewFake(time.Now())
	const sockets, spread = 40, time.Second
	srv, err := New(Config{Listen: "127.0.0.1:0", Clock: fake, EventLoops: 1, ShutdownSpread: spread})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var restarted atomic.Int32
	done := make(chan struct{})
	for range sockets {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/rooms/echo/s"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			if _, _, err := c.ReadMessage(); websocket.IsCloseError(err, websocket.CloseServiceRestart) {
				restarted.Add(1)
			}
			done <- struct{}{}
		}()
	}
	waitFor(t, "sockets open", func() bool { return srv.Stats().Sockets == sockets })
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res <- srv.Shutdown(ctx)
	}()
	// 20 steps of 50 ms, one loop: 2 sockets a step.
	const perStep = sockets / int(spread/spreadStep)
	for range perStep {
		<-done
	}
	waitFor(t, "the first batch closed", func() bool { return srv.Stats().Sockets == int64(sockets-perStep) })
	if n := int(restarted.Load()); n != perStep {
		t.Fatalf("%d sockets got 1012 before the clock moved, want the first batch of %d", n, perStep)
	}
	steps := 0
	advanceUntil(t, fake, spreadStep, "every socket closed", func() bool {
		steps++
		return srv.Stats().Sockets == 0
	})
	if steps < int(spread/spreadStep)-1 {
		t.Fatalf("all %d sockets closed after %d steps of %v, want them spread over %v", sockets, steps-1, spreadStep, spread)
	}
	for range sockets - perStep {
		<-done
	}
	if n := int(restarted.Load()); n != sockets {
		t.Fatalf("%d of %d sockets got 1012", n, sockets)
	}
	if err := <-res; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// A request whose body is still arriving when Shutdown starts is let
// finish and answered, where an idle kept-alive connection is closed.
func TestShutdownLetsARequestArriving(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0", EventLoops: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	idle := dialRaw(t, srv)
	idle.send(request("/livez"))
	if resp := idle.response(); resp.StatusCode != http.StatusOK {
		t.Fatalf("idle's first request: %d", resp.StatusCode)
	}
	busy := dialRaw(t, srv)
	busy.send([]byte("POST /livez HTTP/1.1\r\nHost: den\r\nContent-Length: 10\r\n\r\n01234"))
	waitFor(t, "both connections", func() bool { return srv.Stats().Conns == 2 })
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res <- srv.Shutdown(ctx)
	}()
	idle.expectEOF()
	busy.send([]byte("56789"))
	resp := busy.response()
	if resp.StatusCode >= 500 || !resp.Close {
		t.Errorf("the request arriving at Shutdown: %d, close %v; want its answer, with Connection: close", resp.StatusCode, resp.Close)
	}
	busy.expectEOF()
	if err := <-res; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

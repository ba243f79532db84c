package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"
)

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--max-message-bytes", "0"}, nil, "--max-message-bytes"},
		{[]string{"--max-message-bytes", "67108864"}, nil, "max message bytes"},
		{[]string{"--log-format", "xml"}, nil, "--log-format"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--shutdown-timeout", "0s"}, nil, "--shutdown-timeout"},
		{[]string{"--shutdown-spread", "-1s"}, nil, "--shutdown-spread"},
		{nil, map[string]string{"DEN_SHUTDOWN_SPREAD": "soon"}, "DEN_SHUTDOWN_SPREAD"},
		{[]string{"--hibernate-after", "0s"}, nil, "--hibernate-after"},
		{[]string{"--evict-after", "-1s"}, nil, "--evict-after"},
		{[]string{"--sync", "sometimes"}, nil, "--sync"},
		{[]string{"--data", ""}, nil, "--data"},
		{[]string{"--max-message-bytes", "lots"}, nil, `--max-message-bytes "lots": want a whole number`},
		{[]string{"--hibernate-after", "soon"}, nil, `--hibernate-after "soon": want a duration`},
		{nil, map[string]string{"DEN_EVICT_AFTER": "later"}, `DEN_EVICT_AFTER="later" (--evict-after): want a duration`},
		{[]string{"--no-such-flag"}, nil, "no-such-flag"},
		{[]string{"--max-conns-per-ip", "-1"}, nil, "--max-conns-per-ip"},
		{[]string{"--max-conns-per-ip", "4294967297"}, nil, "--max-conns-per-ip"},
		{[]string{"--handshakes-per-ip", "NaN"}, nil, "--handshakes-per-ip"},
		{[]string{"--message-rate", "-3"}, nil, "--message-rate"},
		{[]string{"--message-burst", "-3"}, nil, "--message-burst"},
		{[]string{"--max-room-sockets", "0"}, nil, "--max-room-sockets"},
		{[]string{"--max-active-rooms", "-1"}, nil, "--max-active-rooms"},
		{[]string{"--max-open-databases", "0"}, nil, "--max-open-databases"},
		{nil, map[string]string{"DEN_MESSAGE_RATE": "fast"}, "DEN_MESSAGE_RATE"},
		{[]string{"--listen", "nowhere"}, nil, "listen address"},
		{nil, map[string]string{"DEN_LISTEN": "nowhere"}, "listen address"},
		{nil, map[string]string{"DEN_MAX_MESSAGE_BYTES": "lots"}, "DEN_MAX_MESSAGE_BYTES"},
		{[]string{"--allowed-origins", "example.com"}, nil, "allowed origin"},
		{[]string{"extra"}, nil, "unexpected argument"},
		// Settings that would do nothing on their own.
		{[]string{"--message-burst", "50"}, nil, "--message-burst needs --message-rate"},
		{[]string{"--jwt-leeway", "30s"}, nil, "need --jwt-secret"},
		{[]string{"--jwt-keys", ","}, nil, "--jwt-keys"},
		{nil, map[string]string{"DEN_JWT_KEYS": " "}, "--jwt-keys"},
		{[]string{"--connect-webhook-timeout", "-1s"}, nil, "need --connect-webhook"},
		{[]string{"--connect-webhook-cache", "5s"}, nil, "need --connect-webhook"},
		{[]string{"--connect-webhook-forward", "Cookie"}, nil, "need --connect-webhook"},
		{[]string{"--connect-webhook-fail-open"}, nil, "need --connect-webhook"},
	}
	for _, tc := range cases {
		_, err := parseServe(tc.args, &bytes.Buffer{}, func(k string) string { return tc.env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: err %v, want one mentioning %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestFlagBeatsEnv(t *testing.T) {
	c, err := parseServe([]string{"--listen", "127.0.0.1:9"}, &bytes.Buffer{}, func(k string) string {
		return map[string]string{"DEN_LISTEN": "127.0.0.1:8", "DEN_MAX_MESSAGE_BYTES": "2048"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.gateway.Listen != "127.0.0.1:9" || c.gateway.MaxMessageBytes != 2048 {
		t.Fatalf("listen %q max %d: want the flag's listen and the env's size", c.gateway.Listen, c.gateway.MaxMessageBytes)
	}
}

// --keep-empty-rooms is off unless the flag or DEN_KEEP_EMPTY_ROOMS turns
// it on, and reaches the server's config.
func TestKeepEmptyRoomsFlag(t *testing.T) {
	cases := []struct {
		args []string
		env  string
		want bool
	}{
		{nil, "", false},
		{[]string{"--keep-empty-rooms"}, "", true},
		{nil, "true", true},
		{[]string{"--keep-empty-rooms=false"}, "true", false},
	}
	for _, tc := range cases {
		c, err := parseServe(tc.args, &bytes.Buffer{}, func(k string) string {
			return map[string]string{"DEN_KEEP_EMPTY_ROOMS": tc.env}[k]
		})
		if err != nil {
			t.Fatalf("%v DEN_KEEP_EMPTY_ROOMS=%q: %v", tc.args, tc.env, err)
		}
		if c.keepEmptyRooms != tc.want {
			t.Errorf("%v DEN_KEEP_EMPTY_ROOMS=%q: keep %v, want %v", tc.args, tc.env, c.keepEmptyRooms, tc.want)
		}
	}
	_, err := parseServe(nil, &bytes.Buffer{}, func(k string) string {
		return map[string]string{"DEN_KEEP_EMPTY_ROOMS": "sometimes"}[k]
	})
	if err == nil || !strings.Contains(err.Error(), `DEN_KEEP_EMPTY_ROOMS="sometimes" (--keep-empty-rooms): want true or false`) {
		t.Errorf("DEN_KEEP_EMPTY_ROOMS=sometimes: %v", err)
	}
}

// The secret's two flags are one setting: either on the command line
// wins over the other's variable, as any flag does over its own.
func TestSecretFlagBeatsOtherSecretVariable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("0123456789abcdef0123456789abcdef-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DEN_JWT_SECRET": "0123456789abcdef0123456789abcdef-env", "DEN_JWT_SECRET_FILE": file}
	for _, args := range [][]string{{"--jwt-secret-file", file}, {"--jwt-secret", "0123456789abcdef0123456789abcdef-flag"}} {
		if _, err := parseServe(args, &bytes.Buffer{}, func(k string) string { return env[k] }); err != nil {
			t.Errorf("%v beside both variables: %v", args, err)
		}
	}
}

// TestServeSIGTERM runs the real binary with 1,000 sockets in 100 chat
// rooms while one member of each room keeps talking, and sends it SIGTERM:
// every socket gets 1012, den exits 0 within --shutdown-timeout, and after
// a restart every message whose sender had seen it acknowledged is in its
// room's history.
func TestServeSIGTERM(t *testing.T) {
	const rooms, perRoom, timeout = 100, 10, 20 * time.Second
	bin := buildDen(t)
	data := t.TempDir()
	cmd, addr := startServe(t, bin, data, "--shutdown-timeout", timeout.String(), "--shutdown-spread", "1s")

	conns := make([]*websocket.Conn, rooms*perRoom)
	var dial errgroup.Group
	dial.SetLimit(8)
	for i := range conns {
		dial.Go(func() error {
			url := fmt.Sprintf("ws://%s/rooms/chat/r%d?user=u%d", addr, i%rooms, i)
			c, _, err := websocket.DefaultDialer.Dial(url, nil)
			conns[i] = c
			return err
		})
	}
	if err := dial.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		defer c.Close()
	}

	// The first socket of each room talks: a message, then its echo from
	// the room (its acknowledgement), then the next. The others listen.
	var (
		mu        sync.Mutex
		acked     = map[string]bool{} // "room/text"
		restarts  atomic.Int64
		flowing   atomic.Int64
		wg        sync.WaitGroup
		unexpects = make(chan error, len(conns))
	)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room, user := fmt.Sprintf("r%d", i%rooms), fmt.Sprintf("u%d", i)
			talker := i < rooms
			var pending string
			send := func(n int) {
				pending = fmt.Sprintf("%s-%d", user, n)
				_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","text":"`+pending+`"}`))
			}
			if talker {
				send(0)
			}
			for n := 1; ; {
				_ = c.SetReadDeadline(time.Now().Add(2 * timeout))
				_, b, err := c.ReadMessage()
				if err != nil {
					if websocket.IsCloseError(err, websocket.CloseServiceRestart) {
						restarts.Add(1)
					} else {
						unexpects <- fmt.Errorf("socket %d: %v, want close 1012", i, err)
					}
					return
				}
				var m struct{ Type, User, Text string }
				if err := json.Unmarshal(b, &m); err != nil {
					unexpects <- fmt.Errorf("socket %d: %q: %v", i, b, err)
					return
				}
				if talker && m.Type == "message" && m.User == user && m.Text == pending {
					mu.Lock()
					acked[room+"/"+pending] = true
					mu.Unlock()
					flowing.Add(1)
					send(n)
					n++
				}
			}
		}()
	}
	waitUntil(t, "messages flowing", func() bool { return flowing.Load() >= 1000 })

	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("den exited with %v, want 0", err)
		}
	case <-time.After(timeout + 10*time.Second):
		t.Fatalf("den still running %v after SIGTERM", timeout+10*time.Second)
	}
	if took := time.Since(sent); took > timeout {
		t.Fatalf("den took %v to exit, more than --shutdown-timeout %v", took, timeout)
	}
	wg.Wait()
	close(unexpects)
	for err := range unexpects {
		t.Error(err)
	}
	if n := restarts.Load(); n != int64(len(conns)) {
		t.Fatalf("%d of %d sockets got 1012", n, len(conns))
	}

	_, addr = startServe(t, bin, data)
	histories := map[string]map[string]bool{}
	for r := range rooms {
		room := fmt.Sprintf("r%d", r)
		histories[room] = map[string]bool{}
		for _, text := range chatHistory(t, addr, room) {
			histories[room][text] = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for key := range acked {
		room, text, _ := strings.Cut(key, "/")
		if !histories[room][text] {
			t.Errorf("room %s: %q was acknowledged before SIGTERM and is not in the history after restart", room, text)
		}
	}
	t.Logf("%d messages acknowledged; shutdown took %v", len(acked), time.Since(sent).Round(time.Millisecond))
}

// waitUntil polls cond until it holds, or fails the test after a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), func() {}, []string{"version"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "den ") || !strings.Contains(out.String(), runtime.Version()) || !strings.Contains(out.String(), "github.com/den-rooms/den") {
		t.Fatalf("den version printed %q", out.String())
	}
}

// TestSecondSignalExitsAtOnce: a second SIGTERM during a long graceful
// shutdown ends den without waiting for it.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	bin := buildDen(t)
	cmd, addr := startServe(t, bin, t.TempDir(), "--shutdown-timeout", "10m", "--shutdown-spread", "5m")
	conns := make([]*websocket.Conn, 20)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/rooms/echo/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A socket of the spread's first batch is closed: shutdown has begun.
	restarted := make(chan struct{}, len(conns))
	for _, c := range conns {
		go func() {
			if _, _, err := c.ReadMessage(); websocket.IsCloseError(err, websocket.CloseServiceRestart) {
				restarted <- struct{}{}
			}
		}()
	}
	select {
	case <-restarted:
	case <-time.After(time.Minute):
		t.Fatal("no socket closed with 1012 a minute after SIGTERM")
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err == nil {
			t.Fatal("den exited 0 after a second signal, want it killed by the signal")
		}
	case <-time.After(time.Minute):
		t.Fatal("den still shutting down a minute after a second SIGTERM")
	}
}

// A data folder den cannot use, or a listen address in use, stops den at
// start-up with a message naming the setting.
func TestStartupErrorsNameTheSetting(t *testing.T) {
	bin := buildDen(t)
	file := filepath.Join(t.TempDir(), "not-a-folder")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--listen", "127.0.0.1:0", "--data", file}, "--data " + file},
		{[]string{"serve", "--listen", busy.Addr().String(), "--data", t.TempDir()}, "--listen " + busy.Addr().String()},
	} {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, tc.args...)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			t.Fatalf("%v: still running a minute later", tc.args)
		}
		if code := exitCode(err); code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and a message naming %s", tc.args, code, strings.TrimSpace(stderr.String()), tc.want)
		}
	}
}

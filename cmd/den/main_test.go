package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
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
		{[]string{"--listen", "nowhere"}, nil, "listen address"},
		{nil, map[string]string{"DEN_LISTEN": "nowhere"}, "listen address"},
		{nil, map[string]string{"DEN_MAX_MESSAGE_BYTES": "lots"}, "DEN_MAX_MESSAGE_BYTES"},
		{[]string{"--allowed-origins", "example.com"}, nil, "allowed origin"},
		{[]string{"extra"}, nil, "unexpected argument"},
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

// TestServeSIGTERM runs the real binary: it serves, and on SIGTERM closes
// sockets with 1012 and exits 0.
func TestServeSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "den")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--shutdown-timeout", "10s", "--data", t.TempDir())
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stderr)
	var addr string
	for addr == "" && lines.Scan() {
		var entry struct{ Msg, Addr string }
		if json.Unmarshal(lines.Bytes(), &entry) == nil && entry.Msg == "listening" {
			addr = entry.Addr
		}
	}
	if addr == "" {
		t.Fatal("den did not log its address")
	}
	go func() {
		for lines.Scan() {
		}
	}()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/rooms/echo/sig", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseServiceRestart) {
		t.Fatalf("socket got %v, want close 1012", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("den exited with %v, want 0", err)
		}
	case <-ctx.Done():
		t.Fatal("den did not exit after SIGTERM")
	}
}

package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestMaxOpenDatabases runs den serve with room for two open databases
// and five chat rooms in use: every room keeps answering, its history
// intact, while no more than two files are open at once.
func TestMaxOpenDatabases(t *testing.T) {
	_, addr := startServe(t, buildDen(t), t.TempDir(), "--max-open-databases", "2")
	conns := make([]*websocket.Conn, 5)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/rooms/chat/pool%d?user=u", addr, i), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
		readUntil(t, c, `"type":"join"`)
	}
	for round := range 2 {
		for i, c := range conns {
			text := fmt.Sprintf("room %d round %d", i, round)
			if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","text":"`+text+`"}`)); err != nil {
				t.Fatal(err)
			}
			readUntil(t, c, text)
		}
	}
	c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/rooms/chat/pool0?user=v", addr), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	history := readUntil(t, c, `"type":"history"`)
	if !strings.Contains(history, "room 0 round 0") || !strings.Contains(history, "room 0 round 1") {
		t.Fatalf("room 0's history after its file closed and reopened: %s", history)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "den_storage_open_handles "); ok {
			if v != "0" && v != "1" && v != "2" {
				t.Fatalf("den_storage_open_handles %s with --max-open-databases 2", v)
			}
			return
		}
	}
	t.Fatal("no den_storage_open_handles in /metrics")
}

// readUntil reads text frames until one holds want and returns it.
func readUntil(t *testing.T, c *websocket.Conn, want string) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if strings.Contains(string(b), want) {
			return string(b)
		}
	}
}

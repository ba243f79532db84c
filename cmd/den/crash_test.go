package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// startServe runs den serve on data and returns it with its address.
// Flags in extra come last, so they win over the defaults here.
func startServe(t *testing.T, bin, data string, extra ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--data", data, "--shutdown-timeout", "2s"}, extra...)...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		var entry struct{ Msg, Addr string }
		if json.Unmarshal(lines.Bytes(), &entry) == nil && entry.Msg == "listening" {
			go func() { _, _ = io.Copy(io.Discard, stderr) }()
			return cmd, entry.Addr
		}
	}
	t.Fatal("den did not log its address")
	return nil, ""
}

// TestCrashKeepsEverythingShown kills den with SIGKILL in a storm of chat
// messages from 20 clients, then restarts it: every message any client
// received is in the history with the same id and text, and the ids have
// no gaps.
func TestCrashKeepsEverythingShown(t *testing.T) {
	bin := buildDen(t)
	data := t.TempDir()
	cmd, addr := startServe(t, bin, data)

	var mu sync.Mutex
	seen := map[int64]string{} // every message frame any client got
	var received atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	conns := make([]*websocket.Conn, 20)
	for i := range conns {
		c, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/rooms/chat/storm?user=u%d", addr, i), nil)
		if err != nil {
			status := ""
			if resp != nil {
				b, _ := io.ReadAll(resp.Body)
				status = resp.Status + ": " + string(b)
			}
			t.Fatalf("dial: %v %s", err, status)
		}
		defer c.Close()
		conns[i] = c
	}
	// Each client keeps 8 messages in flight: a storm that group commit
	// must absorb, yet one that never overflows the room's mailbox (that
	// would close sockets with 1013, which is not what this tests).
	for i, c := range conns {
		window := make(chan struct{}, 8)
		own := fmt.Sprintf("u%d-", i)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				var m struct {
					Type string
					ID   int64
					Text string
				}
				if json.Unmarshal(b, &m) != nil || m.Type != "message" {
					continue
				}
				mu.Lock()
				if prev, ok := seen[m.ID]; ok && prev != m.Text {
					t.Errorf("id %d came as %q and as %q", m.ID, prev, m.Text)
				}
				seen[m.ID] = m.Text
				mu.Unlock()
				received.Add(1)
				if strings.HasPrefix(m.Text, own) {
					select {
					case <-window:
					default:
					}
				}
			}
		}()
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				case window <- struct{}{}:
				}
				msg := fmt.Sprintf(`{"type":"message","text":"u%d-%d"}`, i, k)
				if c.WriteMessage(websocket.TextMessage, []byte(msg)) != nil {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for received.Load() < 20*1000 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d frames in 60s", received.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	close(stop)
	wg.Wait()

	_, addr = startServe(t, bin, data)
	history := chatHistory(t, addr, "storm")
	mu.Lock()
	defer mu.Unlock()
	for id, text := range seen {
		if history[id] != text {
			t.Errorf("a client got id %d %q; after the crash the history has %q", id, text, history[id])
		}
	}
	t.Logf("%d messages shown before the kill, %d in the history", len(seen), len(history))
}

// TestScheduledMessageSurvivesKill: a chat message scheduled 2 s ahead,
// den killed with SIGKILL before it is due, then restarted: it is posted
// once, by the restarted den, from node.db's alarm index.
func TestScheduledMessageSurvivesKill(t *testing.T) {
	bin := buildDen(t)
	data := t.TempDir()
	cmd, addr := startServe(t, bin, data)
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/rooms/chat/later?user=ann", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 2 { // history, join
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"schedule","delay_ms":2000,"text":"from before the crash"}`)); err != nil {
		t.Fatal(err)
	}
	// A message after it comes back only once both are durable.
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","text":"marker"}`)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.ReadMessage(); err != nil || !strings.Contains(string(b), "marker") {
		t.Fatalf("marker: %s %v", b, err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	c.Close()

	_, addr = startServe(t, bin, data)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/rooms/chat/later/messages")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if n := strings.Count(string(body), "from before the crash"); n > 0 {
			if n != 1 || !strings.Contains(string(body), `"scheduled":true`) {
				t.Fatalf("history: %s", body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scheduled message never came: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// chatHistory reads a chat room's whole history over HTTP, page by page,
// and fails the test if its ids have a gap.
func chatHistory(t *testing.T, addr, room string) map[int64]string {
	t.Helper()
	history := map[int64]string{}
	var last int64
	for {
		resp, err := http.Get("http://" + addr + "/rooms/chat/" + room + "/messages?limit=1000&after=" + strconv.FormatInt(last, 10))
		if err != nil {
			t.Fatal(err)
		}
		var page []struct {
			ID   int64
			Text string
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return history
		}
		for _, m := range page {
			if m.ID != last+1 {
				t.Fatalf("room %s: history jumps from id %d to %d", room, last, m.ID)
			}
			history[m.ID] = m.Text
			last = m.ID
		}
	}
}

package server_test

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// benchNode runs this test binary as a bench node on data, with env.
func benchNode(t *testing.T, data string, env ...string) (*exec.Cmd, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), append(env, benchServerEnv+"=127.0.0.1:0", "DEN_BENCH_DATA="+data, "DEN_BENCH_SYNC=full")...)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("bench node: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return cmd, strings.Fields(line)[0]
}

// TestAlarmHandlerKilledRunsAgainOnce kills den with SIGKILL while an
// alarm handler runs, after it wrote: the restarted node runs the handler
// again (at least once), and the first run's write, never committed, is
// not there to be doubled.
func TestAlarmHandlerKilledRunsAgainOnce(t *testing.T) {
	data := t.TempDir()
	block := filepath.Join(t.TempDir(), "block")
	if err := os.WriteFile(block, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, addr := benchNode(t, data, "DEN_TALLY_BLOCK="+block)
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/rooms/tally/t", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteMessage(websocket.TextMessage, []byte("arm")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, b, err := c.ReadMessage(); err != nil || string(b) != "armed" {
		t.Fatalf("%s %v", b, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(block + ".running"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the alarm handler never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	if err := os.Remove(block); err != nil {
		t.Fatal(err)
	}
	_, addr = benchNode(t, data, "DEN_TALLY_BLOCK="+block)
	deadline = time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/rooms/tally/t")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) == "runs=1 pending=false" {
			return
		}
		if !strings.HasPrefix(string(body), "runs=0") || time.Now().After(deadline) {
			t.Fatalf("after the restart: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

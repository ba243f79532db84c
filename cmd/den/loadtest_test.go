package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/html"
)

func buildDen(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "den")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// echoServer is an independent WebSocket server: gorilla, echoing.
func echoServer(t *testing.T) string {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			op, msg, err := c.ReadMessage()
			if err != nil || c.WriteMessage(op, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws://" + strings.TrimPrefix(srv.URL, "http://") + "/echo/{n}"
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

type jsonResult struct {
	Interrupted bool `json:"interrupted"`
	Workers     int  `json:"workers"`
	Counters    struct {
		Opened, Sent, Echoed, Closed int64
	} `json:"counters"`
	Latency struct {
		Count int64   `json:"count"`
		P99   float64 `json:"p99_ms"`
	} `json:"latency"`
	Thresholds []struct {
		Expr string
		Pass bool
	} `json:"thresholds"`
}

func readJSONResult(t *testing.T, path string) jsonResult {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r jsonResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("--json output does not parse: %v", err)
	}
	return r
}

// reportMetrics reads the data-metric cells of an HTML report.
func reportMetrics(t *testing.T, path string) map[string]float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := html.Parse(f)
	if err != nil {
		t.Fatalf("report does not parse: %v", err)
	}
	out := map[string]float64{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		var name, value string
		for _, a := range n.Attr {
			switch a.Key {
			case "data-metric":
				name = a.Val
			case "data-value":
				value = a.Val
			}
		}
		if name != "" {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("metric %s: data-value %q: %v", name, value, err)
			}
			out[name] = v
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return out
}

func TestLoadtestCommand(t *testing.T) {
	bin := buildDen(t)
	url := echoServer(t)
	dir := t.TempDir()
	jsonPath, reportPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	args := []string{"loadtest", "echo", "--url", url, "--count", "5", "--messages", "4", "--interval", "100ms",
		"--duration", "30s", "--quiet", "--json", jsonPath, "--report", reportPath}

	out, err := exec.Command(bin, append(args, "--fail-on", "sent<20", "--fail-on", "failed>0")...).Output()
	if code := exitCode(err); code != 0 {
		t.Fatalf("exit %d, want 0 with no threshold breached; stdout:\n%s", code, out)
	}
	r := readJSONResult(t, jsonPath)
	if r.Counters.Opened != 5 || r.Counters.Sent != 20 || r.Counters.Echoed != 20 || r.Latency.Count != 20 {
		t.Fatalf("JSON %+v: want 5 opened, 20 sent and echoed", r)
	}
	if len(r.Thresholds) != 2 || !r.Thresholds[0].Pass || !r.Thresholds[1].Pass {
		t.Fatalf("JSON thresholds %+v: want two passes", r.Thresholds)
	}
	m := reportMetrics(t, reportPath)
	if m["sent"] != 20 || m["echoed"] != 20 || m["opened"] != 5 || m["p99"] != r.Latency.P99 {
		t.Fatalf("report metrics %v: want the JSON's numbers (p99 %v)", m, r.Latency.P99)
	}
	if !strings.Contains(string(out), "latency") {
		t.Fatalf("stdout has no summary table:\n%s", out)
	}

	// Worker processes are the same binary: den loadtest-worker.
	out, err = exec.Command(bin, append(args, "--workers", "2")...).Output()
	if code := exitCode(err); code != 0 {
		t.Fatalf("--workers 2: exit %d; stdout:\n%s", code, out)
	}
	if r := readJSONResult(t, jsonPath); r.Workers != 2 || r.Counters.Opened != 5 || r.Counters.Echoed != 20 {
		t.Fatalf("--workers 2: JSON %+v: want 2 workers, 5 opened, 20 echoed", r)
	}

	// A short --duration takes a drain to fit it.
	if out, err := exec.Command(bin, "loadtest", "idle", "--url", url, "--count", "1", "--duration", "1s", "--quiet").CombinedOutput(); err != nil {
		t.Fatalf("--duration 1s: %v\n%s", err, out)
	}

	out, err = exec.Command(bin, append(args, "--fail-on", "sent>=20")...).Output()
	if code := exitCode(err); code != 3 {
		t.Fatalf("exit %d, want 3 for a breached --fail-on; stdout:\n%s", code, out)
	}
	if !strings.Contains(string(out), "FAIL") {
		t.Fatalf("summary does not show the breach:\n%s", out)
	}
}

func TestLoadtestUsageErrors(t *testing.T) {
	bin := buildDen(t)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"loadtest"}, 2, "Scenarios"},
		{[]string{"loadtest", "storm"}, 2, "unknown scenario"},
		{[]string{"loadtest", "idle"}, 1, "--url"},
		{[]string{"loadtest", "idle", "--url", "ws://127.0.0.1:1/x", "--fail-on", "p99>>5"}, 1, "--fail-on"},
		{[]string{"loadtest", "idle", "--url", "ws://127.0.0.1:1/x", "--server-pid", "0"}, 1, "--server-pid"},
		{[]string{"loadtest", "broadcast", "--url", "ws://127.0.0.1:1/x"}, 1, "--members"},
		// Config reads a zero size as its default: 0 must not become 64.
		{[]string{"loadtest", "echo", "--url", "ws://127.0.0.1:1/x", "--size", "0"}, 1, "--size 0"},
	}
	for _, tc := range cases {
		var stderr strings.Builder
		cmd := exec.Command(bin, tc.args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := exitCode(err); code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d stderr %q; want exit %d mentioning %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}

// TestLoadtestInterrupt sends SIGINT mid-hold, as Ctrl-C would: the run
// stops and still writes its summary and JSON.
func TestLoadtestInterrupt(t *testing.T) {
	bin := buildDen(t)
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	cmd := exec.Command(bin, "loadtest", "idle", "--url", echoServer(t), "--count", "4", "--duration", "1h",
		"--interval", "50ms", "--json", jsonPath)
	stderr, _ := cmd.StderrPipe()
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stderr)
	for lines.Scan() && !strings.Contains(lines.Text(), "traffic") {
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for lines.Scan() {
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit %v, want 0 after SIGINT", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("den loadtest did not stop after SIGINT")
	}
	r := readJSONResult(t, jsonPath)
	if !r.Interrupted || r.Counters.Opened != 4 || r.Counters.Closed != 4 {
		t.Fatalf("JSON %+v: want an interrupted run with 4 opened and closed", r)
	}
	if !strings.Contains(stdout.String(), "interrupted") {
		t.Fatalf("summary does not say it was interrupted:\n%s", stdout.String())
	}
}

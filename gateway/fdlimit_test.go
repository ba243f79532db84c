package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/den-rooms/den/internal/wsframe"
)

const fdLimitEnv = "DEN_TEST_FDLIMIT_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(fdLimitEnv); v != "" {
		runLimitedServer(v)
		return
	}
	if v := os.Getenv(benchServerEnv); v != "" {
		runBenchServer(v)
		return
	}
	os.Exit(m.Run())
}

// runLimitedServer is the child of TestOpenFileLimit: an echo server whose
// process may hold only a few descriptors. It prints its address, then
// serves until stdin closes.
func runLimitedServer(limit string) {
	n, _ := strconv.ParseUint(limit, 10, 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		os.Exit(1)
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.InfoLevel))
	srv, err := New(Config{Listen: "127.0.0.1:0", Logger: log})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		os.Exit(1)
	}
	fmt.Println(srv.Addr())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

// TestOpenFileLimit runs den in a process allowed 128 descriptors and
// connects until it is full: den keeps every open socket working, refuses
// newcomers with 503 (logging once, not per attempt), and accepts again
// when sockets close.
func TestOpenFileLimit(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fdLimitEnv+"=128")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	var stderrMu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		stderrMu.Lock()
		defer stderrMu.Unlock()
		return stderr.Write(p)
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	addr := strings.TrimSpace(line)

	// Connect until den refuses.
	var open []net.Conn
	refused := 0
	for refused < 20 && len(open) < 300 {
		c, status, err := dialEcho(addr)
		switch {
		case err != nil:
			t.Fatalf("after %d sockets: %v", len(open), err)
		case status == 101:
			open = append(open, c)
		case status == 503:
			refused++
			c.Close()
		default:
			t.Fatalf("after %d sockets: status %d", len(open), status)
		}
	}
	if refused == 0 || len(open) < 30 {
		t.Fatalf("%d sockets opened, %d refused: want the limit reached after a few dozen", len(open), refused)
	}
	t.Logf("at the limit: %d sockets open, then %d refused", len(open), refused)

	// Every socket still echoes.
	for i, c := range open {
		if err := echoOnce(c, fmt.Sprintf("still alive %d", i)); err != nil {
			t.Fatalf("socket %d after the limit: %v", i, err)
		}
	}
	// Close ten; new sockets are accepted again.
	for _, c := range open[:10] {
		c.Close()
	}
	open = open[10:]
	var again net.Conn
	waitFor(t, "accepting again", func() bool {
		c, status, err := dialEcho(addr)
		if err == nil && status == 101 {
			again = c
			return true
		}
		if c != nil {
			c.Close()
		}
		return false
	})
	if err := echoOnce(again, "new after recovery"); err != nil {
		t.Fatal(err)
	}
	again.Close()
	for _, c := range open {
		c.Close()
	}
	stderrMu.Lock()
	logs := stderr.String()
	stderrMu.Unlock()
	if n := strings.Count(logs, "open-file limit reached"); n != 1 {
		t.Fatalf("limit logged %d times for %d refusals, want once per interval:\n%s", n, refused, logs)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// dialEcho connects and asks to join an echo room; it returns the
// handshake's status.
func dialEcho(addr string) (net.Conn, int, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	if _, err := c.Write(request("/rooms/echo/limit", hUpgrade, hConn, hKey, hVersion)); err != nil {
		c.Close()
		return nil, 0, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var head []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			c.Close()
			return nil, 0, fmt.Errorf("reading handshake %q: %w", head, err)
		}
		head = append(head, b[0])
	}
	status, _ := strconv.Atoi(string(head[9:12]))
	return c, status, nil
}

func echoOnce(c net.Conn, msg string) error {
	if _, err := c.Write(wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpText, []byte(msg), testMask)); err != nil {
		return err
	}
	want := wsframe.AppendFrame(nil, wsframe.OpText, 0, []byte(msg))
	got := make([]byte, len(want))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo %q", got)
	}
	return nil
}

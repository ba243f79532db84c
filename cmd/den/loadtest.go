package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/den-rooms/den/loadtest"
)

// errThresholds is a run that completed but breached a --fail-on; den
// exits 3 for it, so scripts can tell it from a run that could not run.
var errThresholds = errors.New("a --fail-on threshold was breached")

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type loadtestArgs struct {
	cfg        loadtest.Config
	opt        loadtest.Options
	jsonPath   string
	reportPath string
	quiet      bool
}

const loadtestUsage = `Usage: den loadtest SCENARIO --url URL [flags]

Scenarios:
  idle       open --count connections at --rate per second and hold them
  broadcast  --rooms of --members; --senders per room send --msg-rate each
  echo       every connection sends and times the echo
  churn      hold --count open while closing and opening --churn-rate per second
  wake       one connection per room; after --wake-idle, wake --wake-rate rooms per second

Exit status: 0 done, 1 could not run, 2 bad usage, 3 a --fail-on breached.

Flags:
`

func parseLoadtest(args []string, stderr io.Writer) (*loadtestArgs, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, loadtestUsage)
		return nil, errUsage
	}
	a := &loadtestArgs{}
	c := &a.cfg
	c.Scenario = loadtest.Scenario(args[0])
	if !slices.Contains(loadtest.Scenarios, c.Scenario) {
		fmt.Fprintf(stderr, "den loadtest: unknown scenario %q\n\n%s", args[0], loadtestUsage)
		return nil, errUsage
	}
	fs := flag.NewFlagSet("den loadtest "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, loadtestUsage)
		fs.PrintDefaults()
	}
	var urls, headers, sources, pids, metrics, failOn listFlag
	fs.Var(&urls, "url", "WebSocket URL template, {room} and {n} expanded; repeat to spread rooms over servers")
	fs.Var(&headers, "header", "'Name: value' sent with each handshake; repeatable")
	fs.StringVar(&c.Subprotocol, "subprotocol", "", "offer this Sec-WebSocket-Protocol")
	fs.IntVar(&c.Count, "count", 1000, "connections (idle, echo, churn)")
	fs.Float64Var(&c.Rate, "rate", loadtest.DefaultRate, "new connections per second")
	fs.IntVar(&c.Concurrency, "concurrency", loadtest.DefaultConcurrency, "connections connecting or handshaking at once, at most")
	fs.IntVar(&c.Rooms, "rooms", 0, "rooms (default: one per connection; broadcast: 1)")
	fs.Float64Var(&c.Zipf, "zipf", 0, "idle: place connections in rooms by a Zipf law of this exponent (>1) instead of evenly")
	fs.StringVar(&c.RoomPrefix, "room-prefix", loadtest.DefaultRoomPrefix, "{room} is this prefix and the room's number")
	fs.DurationVar(&c.Duration, "duration", loadtest.DefaultDuration, "the whole run's bound")
	fs.DurationVar(&c.Hold, "hold", 0, "traffic or hold phase length (default: until --duration)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", loadtest.DefaultConnectTimeout, "TCP connect plus handshake")
	fs.DurationVar(&c.Drain, "drain", 0, "wait this long for replies after sending stops (default 2s, at most a quarter of --duration)")
	fs.DurationVar(&c.PingEvery, "ping-every", 0, "idle: each connection sends --ping-text this often")
	fs.StringVar(&c.PingText, "ping-text", loadtest.DefaultPingText, "idle: the app-level ping")
	fs.IntVar(&c.Members, "members", 0, "broadcast: connections per room")
	fs.IntVar(&c.Senders, "senders", 1, "broadcast: senders per room")
	fs.Float64Var(&c.MsgRate, "msg-rate", 0, "messages per second per sender (broadcast default 1; echo: 0 sends on each reply)")
	fs.IntVar(&c.Messages, "messages", 0, "stop each sender after this many (0: until the hold ends)")
	fs.IntVar(&c.Size, "size", loadtest.DefaultSize, "payload bytes per message")
	fs.StringVar(&c.Template, "template", "", "wrap each payload: {payload} is replaced, e.g. '{\"type\":\"message\",\"text\":\"{payload}\"}'")
	fs.Float64Var(&c.ChurnRate, "churn-rate", 0, "churn: connections closed and opened per second")
	fs.DurationVar(&c.WakeIdle, "wake-idle", loadtest.DefaultWakeIdle, "wake: leave rooms alone this long first")
	fs.Float64Var(&c.WakeRate, "wake-rate", loadtest.DefaultWakeRate, "wake: rooms woken per second")
	fs.Var(&sources, "source", "local addresses or CIDRs to connect from (default for a loopback target: 127.0.0.0/8)")
	fs.IntVar(&c.PerSource, "per-source", loadtest.DefaultPerSource, "connections from each source address before the next")
	fs.IntVar(&c.Workers, "workers", 0, "worker processes (default: enough for the open-file limit)")
	fs.IntVar(&c.Loops, "loops", 0, "event loops per worker (default: one per CPU)")
	fs.DurationVar(&c.Interval, "interval", loadtest.DefaultInterval, "progress and chart interval")
	fs.StringVar(&a.jsonPath, "json", "", "write the result as JSON to this file")
	fs.StringVar(&a.reportPath, "report", "", "write a self-contained HTML report to this file")
	fs.Var(&pids, "server-pid", "sample this server process's memory and CPU; repeatable")
	fs.Var(&metrics, "metrics-url", "sample a server's Prometheus metrics (process_resident_memory_bytes); repeatable")
	fs.Var(&failOn, "fail-on", "exit 3 if this holds, e.g. 'p99>50ms' or 'failed>0'; repeatable")
	fs.BoolVar(&a.quiet, "quiet", false, "no progress lines")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		// The flag package has said what was wrong.
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "den loadtest: unexpected argument %q\n", fs.Arg(0))
		return nil, errUsage
	}
	if c.Size == 0 {
		// loadtest.Config reads 0 as its default: said here, it would
		// quietly become 64.
		return nil, fmt.Errorf("--size 0: want 1 to %d bytes (a message carries its timestamp whatever its size)", loadtest.MaxSize)
	}
	c.URLs, c.Sources = urls, sources
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("--header %q: want 'Name: value'", h)
		}
		if c.Headers == nil {
			c.Headers = map[string]string{}
		}
		c.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	for _, p := range pids {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--server-pid %q: not a process id", p)
		}
		if _, err := os.Stat("/proc/" + p); err != nil {
			return nil, fmt.Errorf("--server-pid %d: no such process", pid)
		}
		a.opt.ServerPIDs = append(a.opt.ServerPIDs, pid)
	}
	a.opt.MetricsURLs = metrics
	for _, f := range failOn {
		t, err := loadtest.ParseThreshold(f)
		if err != nil {
			return nil, err
		}
		a.opt.Thresholds = append(a.opt.Thresholds, t)
	}
	return a, nil
}

// runLoadtest is `den loadtest`. A signal ends the run early; the summary
// and files are still written. A second signal, with the default handling
// stopSignals restores, ends the process at once.
func runLoadtest(ctx context.Context, stopSignals func(), args []string, stdout, stderr io.Writer) error {
	a, err := parseLoadtest(args, stderr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		stopSignals()
	}()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	a.opt.WorkerCommand = func() *exec.Cmd {
		cmd := exec.Command(exe, "loadtest-worker")
		cmd.Stderr = stderr
		return cmd
	}
	if !a.quiet {
		a.opt.Out = stderr
		if f, ok := stderr.(*os.File); ok {
			a.opt.Terminal = term.IsTerminal(int(f.Fd()))
		}
	}
	res, err := loadtest.Run(ctx, a.cfg, a.opt)
	if res == nil {
		return err
	}
	res.WriteSummary(stdout)
	if a.jsonPath != "" {
		if werr := writeFile(a.jsonPath, res.WriteJSON); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if a.reportPath != "" {
		if werr := writeFile(a.reportPath, res.WriteReport); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err == nil && res.Failed() {
		return errThresholds
	}
	return err
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadtestWorker is the hidden `den loadtest-worker`: one worker process
// of a run, driven over stdin and stdout by the `den loadtest` that
// started it. Signals are left to that parent, which stops the workers.
func loadtestWorker() error {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	return loadtest.ServeWorker(os.Stdin, os.Stdout)
}

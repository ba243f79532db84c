package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Scenario names what a run does once its connections are open.
type Scenario string

// The scenarios; see the package documentation for what each measures.
const (
	Idle      Scenario = "idle"
	Broadcast Scenario = "broadcast"
	Echo      Scenario = "echo"
	Churn     Scenario = "churn"
	Wake      Scenario = "wake"
)

// Scenarios lists every scenario, in the order help text shows them.
var Scenarios = []Scenario{Idle, Broadcast, Echo, Churn, Wake}

// Defaults for Config fields left zero.
const (
	DefaultDuration       = time.Minute
	DefaultConnectTimeout = 10 * time.Second
	DefaultRate           = 5000
	DefaultConcurrency    = 256
	DefaultInterval       = time.Second
	DefaultDrain          = 2 * time.Second
	DefaultSize           = 64
	DefaultMsgRate        = 1
	DefaultWakeRate       = 100
	DefaultWakeIdle       = 15 * time.Second
	DefaultPingText       = "ping"
	DefaultRoomPrefix     = "room-"
	DefaultPerSource      = 1000     // connections per source address before the next is used
	MaxSize               = 16 << 20 // the largest Size
	minInterval           = 10 * time.Millisecond
	maxMembers            = 1 << 20
	// MaxCount bounds the connections of one run: far past what a client
	// machine's ports and memory hold, and well inside what the worker
	// arithmetic can count.
	MaxCount = 100_000_000
)

// minTimedRate is the slowest --msg-rate and --wake-rate: one a day.
const minTimedRate = 1.0 / 86400

// Config describes one run. The zero value of every field but URLs and the
// scenario's sizes means its default.
type Config struct {
	Scenario Scenario `json:"scenario"`
	// URLs are templates: {room} becomes the room's name and {n} the
	// connection's number. A room always goes to the same URL; rooms are
	// spread over the URLs in turn, so several servers share one run.
	URLs []string `json:"urls"`
	// Headers are sent with every handshake; Subprotocol is offered in
	// Sec-WebSocket-Protocol and, if the server picks one, must be it.
	Headers     map[string]string `json:"headers,omitempty"`
	Subprotocol string            `json:"subprotocol,omitempty"`

	// Count is the connections to open (idle, echo, churn: the population;
	// broadcast: Rooms×Members, set from them; wake: Rooms).
	Count int `json:"count"`
	// Rate caps new connections per second over the whole run, and
	// Concurrency how many may be connecting or handshaking at once: more
	// than the server's accept queue holds only turns into SYN retries.
	Rate        float64 `json:"rate"`
	Concurrency int     `json:"concurrency"`
	// Rooms spreads connections over this many rooms (default: Count for
	// echo and wake, 1 for broadcast, Count for idle).
	Rooms int `json:"rooms"`
	// Zipf > 1 places idle connections in rooms by a Zipf law of that
	// exponent (room 0 hottest) instead of evenly.
	Zipf       float64 `json:"zipf,omitempty"`
	RoomPrefix string  `json:"room_prefix"`

	// Duration bounds the whole run; Hold, if set, ends the traffic or hold
	// phase earlier. ConnectTimeout covers TCP connect plus handshake.
	Duration       time.Duration `json:"duration"`
	Hold           time.Duration `json:"hold,omitempty"`
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// Drain is how long to wait for replies in flight after sending stops.
	Drain time.Duration `json:"drain"`

	// PingEvery makes each idle connection send PingText this often.
	PingEvery time.Duration `json:"ping_every,omitempty"`
	PingText  string        `json:"ping_text,omitempty"`

	// Members per room and Senders per room (broadcast). MsgRate is each
	// sender's messages per second (broadcast; echo: 0 means each
	// connection sends its next message when the last one comes back).
	// Messages, if set, stops each sender after that many. Size is a
	// message's payload bytes; Template, if set, wraps it: {payload} is
	// replaced, so a chat protocol's JSON can carry it.
	Members  int     `json:"members,omitempty"`
	Senders  int     `json:"senders,omitempty"`
	MsgRate  float64 `json:"msg_rate,omitempty"`
	Messages int     `json:"messages,omitempty"`
	Size     int     `json:"size"`
	Template string  `json:"template,omitempty"`

	// ChurnRate is connections closed, and as many opened, per second.
	ChurnRate float64 `json:"churn_rate,omitempty"`

	// WakeIdle is how long wake leaves its rooms alone before waking them,
	// WakeRate how many it wakes per second.
	WakeIdle time.Duration `json:"wake_idle,omitempty"`
	WakeRate float64       `json:"wake_rate,omitempty"`

	// Sources are local addresses to connect from, one after another
	// PerSource connections each: CIDRs or single addresses. Empty means
	// 127.0.0.0/8 for a loopback target and the kernel's choice otherwise.
	Sources   []string `json:"sources,omitempty"`
	PerSource int      `json:"per_source"`

	// Workers is the number of processes; 0 picks enough for the open-file
	// limit. Loops is event loops per worker (0: one per CPU).
	Workers int `json:"workers"`
	Loops   int `json:"loops"`

	// Interval is how often progress is sampled and printed.
	Interval time.Duration `json:"interval"`
}

// target is one parsed URL template.
type target struct {
	addr     netip.AddrPort
	host     string // the Host header
	pathTmpl string // request-target with {room} and {n}
	loopback bool
}

var errConfig = errors.New("loadtest: config")

func configErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errConfig, fmt.Sprintf(format, a...))
}

// withDefaults fills zero fields and derived counts.
func (c Config) withDefaults() Config {
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Drain == 0 {
		c.Drain = min(DefaultDrain, c.Duration/4)
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.RoomPrefix == "" {
		c.RoomPrefix = DefaultRoomPrefix
	}
	if c.PerSource == 0 {
		c.PerSource = DefaultPerSource
	}
	if c.PingText == "" {
		c.PingText = DefaultPingText
	}
	switch c.Scenario {
	case Broadcast:
		if c.Rooms == 0 {
			c.Rooms = 1
		}
		if c.Senders == 0 {
			c.Senders = 1
		}
		if c.MsgRate == 0 {
			c.MsgRate = DefaultMsgRate
		}
		c.Count = c.Rooms * c.Members
	case Wake:
		if c.WakeIdle == 0 {
			c.WakeIdle = DefaultWakeIdle
		}
		if c.WakeRate == 0 {
			c.WakeRate = DefaultWakeRate
		}
		c.Count = c.Rooms
	case Idle, Echo, Churn:
		if c.Rooms == 0 {
			c.Rooms = c.Count
		}
	}
	return c
}

// validate checks c after withDefaults and parses its URL templates.
func (c *Config) validate() ([]target, error) {
	known := false
	for _, s := range Scenarios {
		known = known || s == c.Scenario
	}
	if !known {
		return nil, configErr("unknown scenario %q", c.Scenario)
	}
	if len(c.URLs) == 0 {
		return nil, configErr("no --url")
	}
	targets := make([]target, len(c.URLs))
	for i, u := range c.URLs {
		t, err := parseTarget(u)
		if err != nil {
			return nil, err
		}
		targets[i] = t
	}
	switch c.Scenario {
	case Broadcast:
		if c.Members < 2 || c.Members > maxMembers {
			return nil, configErr("--members must be 2..%d", maxMembers)
		}
		if c.Senders < 1 || c.Senders > c.Members {
			return nil, configErr("--senders must be 1..--members")
		}
		if c.Rooms > MaxCount/c.Members {
			return nil, configErr("--rooms × --members must be at most %d", MaxCount)
		}
	case Wake:
		if c.Rooms < 1 {
			return nil, configErr("--rooms must be at least 1")
		}
	default:
		if c.Count < 1 {
			return nil, configErr("--count must be at least 1")
		}
	}
	if c.Count > MaxCount {
		return nil, configErr("--count (or --rooms for wake) must be at most %d", MaxCount)
	}
	if c.Rooms < 1 || c.Rooms > c.Count && c.Scenario != Broadcast {
		return nil, configErr("--rooms must be 1..--count")
	}
	if c.Scenario == Churn && c.ChurnRate <= 0 {
		return nil, configErr("churn needs --churn-rate")
	}
	if c.Zipf != 0 && c.Zipf <= 1 {
		return nil, configErr("--zipf must be above 1 (or 0 for even rooms)")
	}
	if c.Size < 0 || c.Size > MaxSize {
		return nil, configErr("--size must be 1..%d", MaxSize)
	}
	if c.Template != "" && !strings.Contains(c.Template, "{payload}") {
		return nil, configErr("--template must contain {payload}")
	}
	for name, d := range map[string]time.Duration{
		"--duration": c.Duration, "--connect-timeout": c.ConnectTimeout, "--drain": c.Drain,
	} {
		if d <= 0 {
			return nil, configErr("%s must be positive", name)
		}
	}
	if c.Interval < minInterval {
		return nil, configErr("--interval must be at least %v", minInterval)
	}
	if c.Drain >= c.Duration {
		return nil, configErr("--drain must be shorter than --duration")
	}
	if c.PingEvery > 0 && c.Scenario != Idle {
		return nil, configErr("--ping-every is for idle: in other scenarios pings would count as messages")
	}
	for name, v := range map[string]float64{
		"--rate": c.Rate, "--msg-rate": c.MsgRate, "--churn-rate": c.ChurnRate, "--wake-rate": c.WakeRate, "--zipf": c.Zipf,
	} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, configErr("%s must be a finite number", name)
		}
	}
	if c.Hold < 0 || c.PingEvery < 0 || c.WakeIdle < 0 {
		return nil, configErr("durations must not be negative")
	}
	if c.Rate <= 0 || c.MsgRate < 0 || c.WakeRate < 0 || c.ChurnRate < 0 {
		return nil, configErr("rates must not be negative")
	}
	// A timed send's period is kept in int64 nanoseconds.
	for _, r := range []struct {
		name string
		v    float64
	}{{"--msg-rate", c.MsgRate}, {"--wake-rate", c.WakeRate}} {
		if r.v > 0 && r.v < minTimedRate {
			return nil, configErr("%s must be 0 or at least one a day (%.3g/s)", r.name, minTimedRate)
		}
	}
	if c.Messages < 0 || c.Concurrency < 0 || c.Workers < 0 || c.Loops < 0 || c.PerSource < 1 {
		return nil, configErr("counts must not be negative")
	}
	if c.Messages > math.MaxInt32 {
		// A sender counts its messages in an int32.
		return nil, configErr("--messages must be at most %d", math.MaxInt32)
	}
	for k := range c.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n") || strings.ContainsAny(c.Headers[k], "\r\n") {
			return nil, configErr("bad header %q", k)
		}
	}
	if strings.ContainsAny(c.Subprotocol, " ,\r\n") {
		return nil, configErr("bad subprotocol %q", c.Subprotocol)
	}
	if _, err := parseSources(c.Sources); err != nil {
		return nil, err
	}
	return targets, nil
}

// parseTarget parses a ws:// URL template. wss is refused: the client
// measures the server, not TLS.
func parseTarget(raw string) (target, error) {
	if rest, ok := strings.CutPrefix(raw, "ws://"); ok {
		if host, _, _ := strings.Cut(rest, "/"); strings.ContainsAny(host, "{}") {
			return target{}, configErr("--url %q: {room} and {n} belong in the path", raw)
		}
	}
	probe := strings.NewReplacer("{room}", "r", "{n}", "0").Replace(raw)
	u, err := url.Parse(probe)
	if err != nil {
		return target{}, configErr("--url %q: %v", raw, err)
	}
	if u.Scheme != "ws" {
		return target{}, configErr("--url %q: only ws:// is supported", raw)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	if err != nil || len(ips) == 0 {
		return target{}, configErr("--url %q: cannot resolve %q: %v", raw, host, err)
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(ips[0].Unmap().String(), port))
	if err != nil {
		return target{}, configErr("--url %q: %v", raw, err)
	}
	// The path template is cut from raw, not from the parsed probe, so the
	// placeholders survive.
	rest := raw[len("ws://"):]
	path := "/"
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		path = rest[i:]
		if path[0] == '?' {
			path = "/" + path
		}
	}
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path = path[:i]
	}
	if strings.ContainsAny(path, " \r\n") {
		return target{}, configErr("--url %q: spaces in path", raw)
	}
	return target{addr: ap, host: u.Host, pathTmpl: path, loopback: ap.Addr().IsLoopback()}, nil
}

// parseSources expands CIDRs and addresses into prefixes to draw from.
func parseSources(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		for _, f := range strings.Split(s, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if p, err := netip.ParsePrefix(f); err == nil {
				out = append(out, p.Masked())
				continue
			}
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, configErr("--source %q is neither an address nor a CIDR", f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}

// loopsErr refuses a --concurrency below the client's event loops over
// workers processes: each loop connects at least one at a time.
func loopsErr(cfg *Config, workers int) error {
	if loops := workers * cfg.Loops; cfg.Concurrency < loops {
		return configErr("--concurrency %d is below the client's %d event loops (%d workers × --loops %d), each of which connects at least one at a time: raise it or lower --loops or --workers",
			cfg.Concurrency, loops, workers, cfg.Loops)
	}
	return nil
}

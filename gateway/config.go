package gateway

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/den-rooms/den/internal/clock"
)

// Defaults for Config's zero fields. cmd/den's flags show these; they are
// not re-typed anywhere else.
const (
	DefaultListen            = "127.0.0.1:8080"
	DefaultMaxMessageBytes   = 1 << 20
	MaxMaxMessageBytes       = 32 << 20
	DefaultMaxHeaderBytes    = 8 << 10
	MaxMaxHeaderBytes        = 1 << 20
	DefaultMaxBodyBytes      = 1 << 20
	MaxMaxBodyBytes          = 256 << 20
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultWriteQueueBytes   = 1 << 20
	DefaultPingInterval      = 30 * time.Second
	DefaultPongTimeout       = 30 * time.Second
	DefaultCloseTimeout      = 5 * time.Second
	DefaultHTTPIdleTimeout   = 60 * time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultShutdownSpread    = 2 * time.Second
	DefaultTick              = time.Second
	DefaultCompressThreshold = 128
	DefaultFlushPace         = time.Millisecond
)

// MinRate is the lowest message or handshake rate a limit may be set to:
// one every 100 s.
const MinRate = 0.01

// The highest limits: new connections a second per address, messages a
// second per socket, and the burst of either.
const (
	MaxHandshakesPerIP = 1_000_000
	MaxMessageRate     = 100_000
	MaxBurst           = 1_000_000
)

// maxBurstSeconds bounds MessageBurst / MessageRate, so a socket's
// schedule fits the message limit's 32-bit clock (see allowMessage).
const maxBurstSeconds = 10_000

// Config configures a Server. The zero value serves the built-in echo
// kind on DefaultListen with every default.
type Config struct {
	// Listen is the TCP address to accept on ("host:port"; port 0 picks one).
	Listen string
	// MaxMessageBytes caps one WebSocket message, on the wire and after
	// decompression; over it the socket is closed with 1009.
	MaxMessageBytes int64
	// MaxHeaderBytes caps an HTTP request head; over it the answer is 431.
	MaxHeaderBytes int
	// MaxBodyBytes caps a plain HTTP request body; over it the answer is 413.
	MaxBodyBytes int64
	// HandshakeTimeout bounds the time from accept to a complete request
	// head and a room's answer to a join, and from a request's first byte
	// to its last; past it the answer is 408 (or a plain close if nothing
	// of a request arrived).
	HandshakeTimeout time.Duration
	// WriteQueueBytes bounds the bytes waiting to be written to one socket;
	// over it the socket is closed with 1008 as a slow consumer. One frame
	// always fits an empty queue, and den's own replies (pongs, HTTP
	// answers) may go one message beyond, so a client reading a large
	// message is not cut off.
	WriteQueueBytes int
	// PingInterval is how long a socket may stay silent before den pings it.
	PingInterval time.Duration
	// PongTimeout is how long a pinged socket may stay silent before den
	// closes it.
	PongTimeout time.Duration
	// CloseTimeout bounds the wait for the client's close frame after den
	// sends one.
	CloseTimeout time.Duration
	// HTTPIdleTimeout closes a keep-alive HTTP connection idle this long.
	HTTPIdleTimeout time.Duration
	// ShutdownSpread is the time over which Shutdown closes the sockets
	// with 1012, in even batches, so their clients do not all reconnect
	// (to this node's successor or its peers) in the same instant. At most
	// half the time Shutdown is given; negative closes them all at once.
	ShutdownSpread time.Duration
	// Tick is the resolution of every deadline above.
	Tick time.Duration
	// FlushPace batches broadcast writes under load: after a loop writes
	// to many sockets at once, its next write waits until this much time
	// has passed, so frames queued meanwhile leave together, one writev
	// per socket. An isolated message goes out at once; a stream gains at
	// most this much latency and costs far less CPU per frame. Negative
	// disables pacing.
	FlushPace time.Duration
	// DisableCompression turns permessage-deflate off.
	DisableCompression bool
	// CompressThreshold is the smallest message den compresses for a client
	// that negotiated permessage-deflate; smaller ones go out plain.
	CompressThreshold int
	// AllowedOrigins, when not empty, lists the Origin values a WebSocket
	// handshake may carry ("https://app.example.com", "https://*.example.com",
	// or "*"); others get 403. A handshake without Origin (not a browser)
	// is allowed.
	AllowedOrigins []string
	// MaxConnsPerIP bounds the connections one client address may hold;
	// past it a new one is answered 429 and closed. 0 means no limit.
	// Behind a proxy every client has the proxy's address: leave it off.
	MaxConnsPerIP int
	// HandshakesPerIP bounds the new connections one client address may
	// open a second, with bursts of HandshakeBurst (default: the rate,
	// rounded up); past it a connection is answered 429 and closed. 0
	// means no limit.
	HandshakesPerIP float64
	HandshakeBurst  int
	// MessageRate bounds the data messages and pings (each of which costs
	// den a pong) one socket may send a second, with bursts of
	// MessageBurst (default: the rate, rounded up); a socket over it is
	// closed with 1008. 0 means no limit.
	MessageRate  float64
	MessageBurst int
	// Subprotocol picks one of the subprotocols a client offers for a room
	// kind, or "" for none. Nil selects none.
	Subprotocol func(kind string, offered []string) string
	// EventLoops is the number of network event loops; 0 means one per CPU.
	EventLoops int
	// Rooms receives sockets and HTTP requests for /rooms/{kind}/{name}.
	// Nil serves the built-in echo kind.
	Rooms Rooms
	// Handler serves plain HTTP requests outside /rooms/ and the health
	// endpoints; nil answers 404.
	Handler http.Handler
	// Clock drives deadlines; nil is the system clock.
	Clock clock.Clock
	// Logger receives den's logs; nil discards them.
	Logger *zap.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.WriteQueueBytes == 0 {
		c.WriteQueueBytes = DefaultWriteQueueBytes
	}
	if c.CompressThreshold == 0 {
		c.CompressThreshold = DefaultCompressThreshold
	}
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.PingInterval, DefaultPingInterval)
	def(&c.PongTimeout, DefaultPongTimeout)
	def(&c.CloseTimeout, DefaultCloseTimeout)
	def(&c.HTTPIdleTimeout, DefaultHTTPIdleTimeout)
	def(&c.ShutdownSpread, DefaultShutdownSpread)
	def(&c.Tick, DefaultTick)
	def(&c.FlushPace, DefaultFlushPace)
	if c.EventLoops == 0 {
		c.EventLoops = runtime.NumCPU()
	}
	if c.HandshakeBurst == 0 {
		c.HandshakeBurst = int(math.Ceil(c.HandshakesPerIP))
	}
	if c.MessageBurst == 0 {
		c.MessageBurst = int(math.Ceil(c.MessageRate))
	}
	if c.Rooms == nil {
		c.Rooms = Echo{}
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate reports the first setting that cannot work. Call it after
// filling a Config; New calls it too.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); c.Listen != "" && err != nil {
		return fmt.Errorf("listen address %q: %w", c.Listen, err)
	}
	switch {
	case c.MaxMessageBytes < 0 || c.MaxMessageBytes > MaxMaxMessageBytes:
		return fmt.Errorf("max message bytes %d: must be between 1 and %d", c.MaxMessageBytes, MaxMaxMessageBytes)
	case c.MaxHeaderBytes < 0 || (c.MaxHeaderBytes > 0 && c.MaxHeaderBytes < 256) || c.MaxHeaderBytes > MaxMaxHeaderBytes:
		return fmt.Errorf("max header bytes %d: must be between 256 and %d", c.MaxHeaderBytes, MaxMaxHeaderBytes)
	case c.MaxBodyBytes < 0 || c.MaxBodyBytes > MaxMaxBodyBytes:
		return fmt.Errorf("max body bytes %d: must be between 1 and %d", c.MaxBodyBytes, MaxMaxBodyBytes)
	case c.WriteQueueBytes < 0:
		return errors.New("write queue bytes must not be negative")
	case c.EventLoops < 0:
		return errors.New("event loops must not be negative")
	case c.CompressThreshold < 0:
		return errors.New("compress threshold must not be negative")
	case c.MaxConnsPerIP < 0 || c.MaxConnsPerIP > math.MaxInt32:
		return fmt.Errorf("max connections per IP %d: must be between 0 (no limit) and %d", c.MaxConnsPerIP, math.MaxInt32)
	case c.HandshakesPerIP != 0 && !(c.HandshakesPerIP >= MinRate && c.HandshakesPerIP <= MaxHandshakesPerIP):
		return fmt.Errorf("handshakes per IP %v: must be 0 (no limit) or between %v and %d a second", c.HandshakesPerIP, MinRate, MaxHandshakesPerIP)
	case c.MessageRate != 0 && !(c.MessageRate >= MinRate && c.MessageRate <= MaxMessageRate):
		return fmt.Errorf("message rate %v: must be 0 (no limit) or between %v and %d a second", c.MessageRate, MinRate, MaxMessageRate)
	case c.HandshakeBurst < 0 || c.MessageBurst < 0 || c.HandshakeBurst > MaxBurst || c.MessageBurst > MaxBurst:
		return fmt.Errorf("handshake and message bursts must be between 0 (the rate) and %d", MaxBurst)
	case c.MessageRate > 0 && float64(max(c.MessageBurst, 1)-1)/c.MessageRate > maxBurstSeconds:
		return fmt.Errorf("message burst %d at %v a second: a burst may last at most %d s at the rate", c.MessageBurst, c.MessageRate, maxBurstSeconds)
	}
	for name, d := range map[string]time.Duration{
		"handshake timeout": c.HandshakeTimeout, "ping interval": c.PingInterval,
		"pong timeout": c.PongTimeout, "close timeout": c.CloseTimeout,
		"HTTP idle timeout": c.HTTPIdleTimeout, "tick": c.Tick,
	} {
		if d < 0 {
			return fmt.Errorf("%s %v: must not be negative", name, d)
		}
	}
	if c.Tick > 0 && c.Tick < time.Millisecond {
		return fmt.Errorf("tick %v: must be at least 1ms", c.Tick)
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("allowed origin %q: want scheme://host[:port], or *", o)
		}
	}
	return nil
}

// originAllowed matches an Origin header against the allow-list.
func originAllowed(allowed []string, origin string) bool {
	if len(allowed) == 0 || origin == "" {
		return true
	}
	origin = strings.ToLower(strings.TrimSuffix(origin, "/"))
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSuffix(a, "/"))
		if a == "*" || a == origin {
			return true
		}
		// "https://*.example.com" matches any subdomain, not the apex.
		scheme, host, ok := strings.Cut(a, "://*.")
		if !ok {
			continue
		}
		prefix := scheme + "://"
		if rest, ok := strings.CutPrefix(origin, prefix); ok && strings.HasSuffix(rest, "."+host) && len(rest) > len(host)+1 {
			return true
		}
	}
	return false
}

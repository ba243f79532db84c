package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/den-rooms/den/auth"
	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/server"
	"github.com/den-rooms/den/storage"
)

// serveConfig is what `den serve` runs with: defaults, then DEN_
// variables, then flags, then validate.
type serveConfig struct {
	gateway         gateway.Config
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string
	allowedOrigins  string
	data            string
	sync            string
	adminToken      string
	hibernateAfter  time.Duration
	evictAfter      time.Duration
	keepEmptyRooms  bool
	maxRoomSockets  int
	maxActiveRooms  int
	maxOpenDBs      int

	jwtSecret, jwtSecretFile, jwtKeys string
	jwtAudience, jwtIssuer            string
	jwtLeeway                         time.Duration
	jwtRequireExpiry, tokenRequired   bool
	webhookURL, webhookForward        string
	webhookTimeout, webhookCache      time.Duration
	webhookFailOpen                   bool

	// Built from the flags above by validate.
	tokens  *auth.Verifier
	webhook *auth.Webhook
}

func parseServe(args []string, stderr io.Writer, getenv func(string) string) (*serveConfig, error) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("den serve", flag.ContinueOnError)
	// A bad flag is den's one-line error, not the flag package's message
	// followed by the whole usage; -h prints the usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.gateway.Listen, "listen", gateway.DefaultListen, "TCP address to serve WebSocket and HTTP on")
	fs.Int64Var(&c.gateway.MaxMessageBytes, "max-message-bytes", gateway.DefaultMaxMessageBytes,
		fmt.Sprintf("largest WebSocket message accepted, at most %d; larger ones close the socket with 1009", gateway.MaxMaxMessageBytes))
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", gateway.DefaultShutdownTimeout, "how long SIGTERM/SIGINT waits for sockets to close before exiting")
	fs.DurationVar(&c.gateway.ShutdownSpread, "shutdown-spread", gateway.DefaultShutdownSpread, "on SIGTERM/SIGINT, close sockets with 1012 in batches over this long, so clients do not all reconnect at once; at most half of --shutdown-timeout; 0 closes them all at once")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "json or console")
	fs.StringVar(&c.data, "data", "./den-data", "folder for node.db and every room's database")
	fs.StringVar(&c.sync, "sync", storage.SyncFull, "full: a commit is on disk before its output is released; normal: it survives a crash of den but not of the machine")
	fs.StringVar(&c.adminToken, "admin-token", "", "bearer token for the admin API under /admin/rooms (off when empty)")
	fs.DurationVar(&c.hibernateAfter, "hibernate-after", rooms.DefaultHibernateAfter, "how long a room with sockets and nothing to do stays in memory; its sockets stay open while it sleeps")
	fs.DurationVar(&c.evictAfter, "evict-after", rooms.DefaultEvictAfter, "how long a room without sockets and nothing to do stays in memory")
	fs.BoolVar(&c.keepEmptyRooms, "keep-empty-rooms", false, "keep the file and node.db record of a room evicted with nothing stored; by default they are deleted and the room is absent again")
	fs.IntVar(&c.gateway.MaxConnsPerIP, "max-conns-per-ip", 0, "connections one client address may hold; more are answered 429 (0: no limit; leave it off behind a proxy)")
	fs.Float64Var(&c.gateway.HandshakesPerIP, "handshakes-per-ip", 0, "new connections one client address may open a second, in bursts as large as the rate; more are answered 429 (0: no limit)")
	fs.Float64Var(&c.gateway.MessageRate, "message-rate", 0, "WebSocket messages and pings one socket may send a second; a socket over it is closed with 1008 (0: no limit)")
	fs.IntVar(&c.gateway.MessageBurst, "message-burst", 0, "messages a socket may send at once within --message-rate (0: the rate)")
	fs.IntVar(&c.maxRoomSockets, "max-room-sockets", rooms.DefaultMaxSocket, "sockets one room may hold; more joins are answered 503")
	fs.IntVar(&c.maxOpenDBs, "max-open-databases", storage.DefaultMaxOpen, "room databases kept open at once, two descriptors each; past it the least recently used awake room's file closes until its next call")
	fs.IntVar(&c.maxActiveRooms, "max-active-rooms", 0, "rooms this node keeps awake at once; a join, message or request that would wake one more is refused (503, or close 1013) until an idle room sleeps (0: no limit)")
	fs.StringVar(&c.jwtSecret, "jwt-secret", "", "HMAC secret (at least 32 bytes) that HS256/384/512 join tokens are signed with; prefer DEN_JWT_SECRET or --jwt-secret-file, which ps does not show")
	fs.StringVar(&c.jwtSecretFile, "jwt-secret-file", "", "file holding the HMAC secret for join tokens")
	fs.StringVar(&c.jwtKeys, "jwt-keys", "", "comma-separated PEM or JWKS files of public keys (RSA, Ed25519, ECDSA) that RS*, PS*, EdDSA and ES* join tokens are signed with")
	fs.StringVar(&c.jwtAudience, "jwt-audience", "", "a join token's aud must hold this (unchecked when empty)")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "", "a join token's iss must be this (unchecked when empty)")
	fs.DurationVar(&c.jwtLeeway, "jwt-leeway", 0, "clock skew allowed when checking a token's exp, nbf and iat")
	fs.BoolVar(&c.jwtRequireExpiry, "jwt-require-expiry", false, "refuse join tokens without an exp claim")
	fs.BoolVar(&c.tokenRequired, "token-required", false, "refuse joins without a token (401); without it, a join may come without one but never with a bad one")
	fs.StringVar(&c.webhookURL, "connect-webhook", "", "http(s) URL den POSTs each join to, and that allows it (with claims and tags) or denies it (off when empty)")
	fs.DurationVar(&c.webhookTimeout, "connect-webhook-timeout", auth.DefaultWebhookTimeout, "how long den waits for the connect webhook")
	fs.StringVar(&c.webhookForward, "connect-webhook-forward", "", "comma-separated request headers forwarded to the connect webhook (Cookie, Authorization, ...)")
	fs.DurationVar(&c.webhookCache, "connect-webhook-cache", 0, "how long the connect webhook's answer for the same room, address, forwarded headers and query is reused (0: not cached)")
	fs.BoolVar(&c.webhookFailOpen, "connect-webhook-fail-open", false, "let joins in when the connect webhook fails or times out; by default they get 503")
	fs.StringVar(&c.allowedOrigins, "allowed-origins", "", "comma-separated Origins a browser handshake may come from (scheme://host[:port], https://*.example.com or *); empty allows any")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, serveUsage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, flagError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve: unexpected argument %q (den serve -h lists the flags)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// Flags that say the same thing two ways: one on the command line
	// wins over the other's variable too.
	alternative := map[string]string{"jwt-secret": "jwt-secret-file", "jwt-secret-file": "jwt-secret"}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := "DEN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && !set[f.Name] && !set[alternative[f.Name]] && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q (--%s): want %s", env, v, f.Name, accepts(f))
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if c.allowedOrigins != "" {
		for _, o := range strings.Split(c.allowedOrigins, ",") {
			c.gateway.AllowedOrigins = append(c.gateway.AllowedOrigins, strings.TrimSpace(o))
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.gateway.ShutdownSpread == 0 {
		c.gateway.ShutdownSpread = -1 // the gateway's zero is its default
	}
	return c, nil
}

const serveUsage = `Usage: den serve [flags]

Runs den: WebSocket rooms, their HTTP routes, /metrics, /livez, /readyz and
a demo page at /, on one port. Every flag has an environment variable of
the same name in capitals with a DEN_ prefix (--shutdown-timeout is
DEN_SHUTDOWN_TIMEOUT); a flag given on the command line wins.

Flags:
`

// flagError rewrites the flag package's parse error as one line that
// names the flag and what it accepts.
func flagError(fs *flag.FlagSet, err error) error {
	var bad *flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if strings.Contains(err.Error(), " for flag -"+f.Name+": ") {
			bad = f
		}
	})
	var value string
	if _, serr := fmt.Sscanf(err.Error(), "invalid value %q", &value); bad == nil || serr != nil {
		return fmt.Errorf("serve: %w (den serve -h lists the flags)", err)
	}
	return fmt.Errorf("--%s %q: want %s", bad.Name, value, accepts(bad))
}

// accepts says what a flag takes, for errors.
func accepts(f *flag.Flag) string {
	switch f.Value.(flag.Getter).Get().(type) {
	case time.Duration:
		return "a duration such as 500ms, 30s or 2m"
	case int, int64:
		return "a whole number"
	case float64:
		return "a number"
	case bool:
		return "true or false"
	}
	return f.Usage
}

func (c *serveConfig) validate() error {
	if c.gateway.MaxMessageBytes < 1 {
		return fmt.Errorf("--max-message-bytes %d: must be at least 1", c.gateway.MaxMessageBytes)
	}
	if c.shutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %v: must be positive", c.shutdownTimeout)
	}
	if _, err := zapcore.ParseLevel(c.logLevel); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	if c.gateway.ShutdownSpread < 0 {
		return fmt.Errorf("--shutdown-spread %v: must not be negative", c.gateway.ShutdownSpread)
	}
	switch g := &c.gateway; {
	case g.MaxConnsPerIP < 0 || g.MaxConnsPerIP > math.MaxInt32:
		return fmt.Errorf("--max-conns-per-ip %d: want 0 (no limit) to %d", g.MaxConnsPerIP, math.MaxInt32)
	case g.HandshakesPerIP != 0 && !(g.HandshakesPerIP >= gateway.MinRate && g.HandshakesPerIP <= gateway.MaxHandshakesPerIP):
		return fmt.Errorf("--handshakes-per-ip %v: want 0 (no limit) or %v to %d", g.HandshakesPerIP, gateway.MinRate, gateway.MaxHandshakesPerIP)
	case g.MessageRate != 0 && !(g.MessageRate >= gateway.MinRate && g.MessageRate <= gateway.MaxMessageRate):
		return fmt.Errorf("--message-rate %v: want 0 (no limit) or %v to %d", g.MessageRate, gateway.MinRate, gateway.MaxMessageRate)
	case g.MessageBurst < 0 || g.MessageBurst > gateway.MaxBurst:
		return fmt.Errorf("--message-burst %d: want 0 (the rate) to %d", g.MessageBurst, gateway.MaxBurst)
	case g.MessageBurst != 0 && g.MessageRate == 0:
		return errors.New("--message-burst needs --message-rate: without a rate there is no limit to burst past")
	}
	if c.maxRoomSockets < 1 {
		return fmt.Errorf("--max-room-sockets %d: must be at least 1", c.maxRoomSockets)
	}
	if c.maxOpenDBs < 1 {
		return fmt.Errorf("--max-open-databases %d: must be at least 1", c.maxOpenDBs)
	}
	if c.maxActiveRooms < 0 {
		return fmt.Errorf("--max-active-rooms %d: must not be negative", c.maxActiveRooms)
	}
	if c.hibernateAfter <= 0 {
		return fmt.Errorf("--hibernate-after %v: must be positive", c.hibernateAfter)
	}
	if c.evictAfter <= 0 {
		return fmt.Errorf("--evict-after %v: must be positive", c.evictAfter)
	}
	if c.data == "" {
		return errors.New("--data: need a folder")
	}
	// The admin API takes the one word after "Bearer": a token with a
	// space or a control character in it (a "\r" left by an env file
	// saved with CRLF endings) could never be presented. The error does
	// not show the token.
	if strings.ContainsFunc(c.adminToken, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return errors.New("--admin-token: contains a space or a control character, which no Authorization header can carry")
	}
	if c.sync != storage.SyncFull && c.sync != storage.SyncNormal {
		return fmt.Errorf("--sync %q: want full or normal", c.sync)
	}
	if c.logFormat != "json" && c.logFormat != "console" {
		return fmt.Errorf("--log-format %q: want json or console", c.logFormat)
	}
	if err := c.gateway.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	return c.buildAuth()
}

// buildAuth makes the token verifier and the connect webhook the flags
// ask for, so a bad key file or URL stops den at start-up.
func (c *serveConfig) buildAuth() error {
	var cfg auth.Config
	switch {
	case c.jwtSecret != "" && c.jwtSecretFile != "":
		return errors.New("--jwt-secret and --jwt-secret-file: give one, not both")
	case c.jwtSecret != "":
		cfg.Secret = []byte(c.jwtSecret)
	case c.jwtSecretFile != "":
		b, err := os.ReadFile(c.jwtSecretFile)
		if err != nil {
			return fmt.Errorf("--jwt-secret-file: %w", err)
		}
		cfg.Secret = bytes.TrimRight(b, "\r\n")
	}
	if c.jwtKeys != "" && len(splitList(c.jwtKeys)) == 0 {
		// Given but naming no file: silently checking no tokens would
		// let every join in.
		return fmt.Errorf("--jwt-keys %q: names no key file", c.jwtKeys)
	}
	for _, path := range splitList(c.jwtKeys) {
		keys, err := auth.LoadKeys(path)
		if err != nil {
			return fmt.Errorf("--jwt-keys %s: %w", path, err)
		}
		cfg.Keys = append(cfg.Keys, keys...)
	}
	if c.jwtLeeway < 0 {
		return fmt.Errorf("--jwt-leeway %v: must not be negative", c.jwtLeeway)
	}
	cfg.Audience, cfg.Issuer, cfg.Leeway, cfg.RequireExpiry = c.jwtAudience, c.jwtIssuer, c.jwtLeeway, c.jwtRequireExpiry
	switch {
	case cfg.Secret != nil || cfg.Keys != nil:
		v, err := auth.NewVerifier(cfg)
		if err != nil {
			return fmt.Errorf("--jwt-secret/--jwt-keys: %w", err)
		}
		c.tokens = v
	case c.tokenRequired:
		return errors.New("--token-required: needs --jwt-secret, --jwt-secret-file or --jwt-keys to check tokens with")
	case c.jwtAudience != "" || c.jwtIssuer != "" || c.jwtRequireExpiry || c.jwtLeeway != 0:
		return errors.New("--jwt-audience, --jwt-issuer, --jwt-require-expiry and --jwt-leeway need --jwt-secret, --jwt-secret-file or --jwt-keys")
	}
	if c.webhookURL == "" {
		if c.webhookTimeout != auth.DefaultWebhookTimeout || c.webhookCache != 0 || c.webhookForward != "" || c.webhookFailOpen {
			return errors.New("--connect-webhook-timeout, -cache, -forward and -fail-open need --connect-webhook")
		}
		return nil
	}
	if c.webhookTimeout <= 0 {
		return fmt.Errorf("--connect-webhook-timeout %v: must be positive", c.webhookTimeout)
	}
	w, err := auth.NewWebhook(auth.WebhookConfig{
		URL: c.webhookURL, Timeout: c.webhookTimeout, Forward: splitList(c.webhookForward),
		CacheTTL: c.webhookCache, FailOpen: c.webhookFailOpen,
	})
	if err != nil {
		return fmt.Errorf("--connect-webhook: %w", err)
	}
	c.webhook = w
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func newLogger(level, format string, w io.Writer) *zap.Logger {
	lvl, _ := zapcore.ParseLevel(level)
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	enc := zapcore.NewJSONEncoder(ec)
	if format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl))
}

func serve(ctx context.Context, stopSignals func(), args []string, stderr io.Writer) error {
	c, err := parseServe(args, stderr, os.Getenv)
	if err != nil {
		return err
	}
	log := newLogger(c.logLevel, c.logFormat, stderr)
	defer func() { _ = log.Sync() }()
	srv, err := server.New(server.Config{
		Gateway: c.gateway, Data: c.data, Synchronous: c.sync, AdminToken: c.adminToken, Logger: log,
		HibernateAfter: c.hibernateAfter, EvictAfter: c.evictAfter, KeepEmptyRooms: c.keepEmptyRooms,
		MaxRoomSockets: c.maxRoomSockets, MaxActiveRooms: c.maxActiveRooms, MaxOpenDatabases: c.maxOpenDBs,
		Tokens: c.tokens, TokenRequired: c.tokenRequired, Webhook: c.webhook,
	})
	if de := (*server.DataError)(nil); errors.As(err, &de) {
		return fmt.Errorf("--data %s: %w", c.data, de.Err)
	}
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		if oe := (*net.OpError)(nil); errors.As(err, &oe) && oe.Op == "listen" {
			return fmt.Errorf("--listen %s: %w", c.gateway.Listen, oe.Err)
		}
		return err
	}
	<-ctx.Done()
	stopSignals()
	log.Info("shutting down", zap.Duration("timeout", c.shutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		log.Warn("shutdown timeout passed; remaining connections dropped", zap.Int64("connections", srv.Stats().Conns))
		if err := beyondDeadline(err); err != nil {
			return err
		}
	}
	log.Info("stopped")
	return nil
}

// beyondDeadline is what err, from a Shutdown whose time ran out, holds
// besides the deadline: storage that failed to close is an error of its
// own, not one more dropped connection.
func beyondDeadline(err error) error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		return err
	}
	var rest []error
	for _, e := range joined.Unwrap() {
		if e = beyondDeadline(e); e != nil {
			rest = append(rest, e)
		}
	}
	return errors.Join(rest...)
}

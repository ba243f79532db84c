package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sync/singleflight"
)

// Webhook defaults and bounds.
const (
	// DefaultWebhookTimeout bounds one backend request, connection
	// included.
	DefaultWebhookTimeout = 2 * time.Second
	// DefaultWebhookCacheSize bounds the decision cache when CacheTTL is
	// set and CacheSize is not.
	DefaultWebhookCacheSize = 10_000
	// MaxWebhookResponseBytes bounds the backend's answer; a longer one is
	// a failure, not a truncated verdict.
	MaxWebhookResponseBytes = 64 << 10
	// MaxReasonBytes bounds a refusal reason so that it fits the 123 bytes
	// a WebSocket close frame has for one.
	MaxReasonBytes = 123
)

// ReasonBackendUnavailable is Decision.Reason when the backend failed and
// the webhook fails closed.
const ReasonBackendUnavailable = "auth backend unavailable"

// WebhookConfig says where and how to ask. Only URL is required.
type WebhookConfig struct {
	// URL is the backend's http or https endpoint; each check POSTs JSON
	// to it.
	URL string
	// Timeout bounds each backend request. Default DefaultWebhookTimeout.
	Timeout time.Duration
	// Forward names the request headers sent on to the backend (Cookie,
	// Origin, X-Forwarded-For ...), in any case. A token offered in
	// Sec-WebSocket-Protocol is dropped from that header if forwarded.
	// Forwarding Authorization sends the bearer token to the backend,
	// which is what a backend that checks it wants.
	Forward []string
	// CacheTTL is how long a decision (allow or deny, never a failure) is
	// reused for an identical request. 0 disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the cache; the oldest entries go first. Default
	// DefaultWebhookCacheSize.
	CacheSize int
	// FailOpen lets a connection in when the backend cannot be asked or
	// gives no usable answer. Off by default: a failure refuses with 503.
	FailOpen bool
	// Client sends the requests. Nil means a client of den's own that
	// does not follow redirects (a 3xx is then a failure).
	Client *http.Client
	// Now is the cache's clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Decision is the answer to one Check.
type Decision struct {
	// Allow lets the connection in.
	Allow bool
	// Status is the HTTP status to refuse with (4xx from the backend, 503
	// on failure); 0 when Allow is true.
	Status int
	// Reason is a short text for the client, at most MaxReasonBytes; "" when
	// Allow is true.
	Reason string
	// Claims are what the backend attached to an allowed connection; nil
	// otherwise. Treat as read-only below the top level.
	Claims map[string]any
	// Tags are socket tags the backend asked for. den's socket limits
	// (count, length) are the caller's to apply.
	Tags []string
	// Cached is true when the decision came from the cache without asking
	// the backend.
	Cached bool
	// Err is why the backend could not give a decision (it wraps
	// ErrBackend); nil for a real allow or deny. With FailOpen a failure
	// reads Allow true and Err set.
	Err error
}

// Webhook asks an operator's HTTP backend whether a connection may join a
// room. Build it with NewWebhook; any goroutine may call Check.
type Webhook struct {
	url      string
	shown    string // url without credentials, for errors that are logged
	timeout  time.Duration
	forward  []string
	failOpen bool
	client   *http.Client
	now      func() time.Time
	cache    *decisionCache // nil without CacheTTL
	flights  singleflight.Group

	// joined, when set (tests only), runs once a Check has joined or
	// started a backend request, so a test can release the backend only
	// after every caller it wants coalesced is waiting.
	joined func()
}

// NewWebhook checks cfg and fills its defaults. It starts nothing.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url's error quotes the URL whole, credentials and all.
		return nil, errors.New("auth: webhook URL does not parse: want http:// or https:// with a host")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("auth: webhook URL %q: want http:// or https:// with a host", withoutCredentials(u))
	}
	if cfg.Timeout < 0 || cfg.CacheTTL < 0 || cfg.CacheSize < 0 {
		return nil, errors.New("auth: webhook timeout, cache TTL and cache size may not be negative")
	}
	w := &Webhook{url: cfg.URL, shown: withoutCredentials(u), timeout: cfg.Timeout, failOpen: cfg.FailOpen, client: cfg.Client, now: cfg.Now}
	if w.timeout == 0 {
		w.timeout = DefaultWebhookTimeout
	}
	if w.client == nil {
		w.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if w.now == nil {
		w.now = time.Now
	}
	for _, name := range cfg.Forward {
		if !validHeaderName(name) {
			return nil, fmt.Errorf("auth: webhook: %q is not a header name", name)
		}
		if c := http.CanonicalHeaderKey(name); !slices.Contains(w.forward, c) {
			w.forward = append(w.forward, c)
		}
	}
	if cfg.CacheTTL > 0 {
		size := cfg.CacheSize
		if size == 0 {
			size = DefaultWebhookCacheSize
		}
		w.cache = newDecisionCache(cfg.CacheTTL, size)
	}
	return w, nil
}

// webhookRequest is the JSON body POSTed to the backend. Its encoding is
// deterministic (encoding/json sorts map keys), so its hash is the cache
// and coalescing key: two checks share a decision exactly when the backend
// would have been asked the same thing.
type webhookRequest struct {
	Kind       string            `json:"kind"`
	Name       string            `json:"name"`
	ClientAddr string            `json:"client_addr"`
	Headers    map[string]string `json:"headers"`
	Query      map[string]string `json:"query"`
	// Method and Path are set for an HTTP request to a room, not a join.
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
}

// webhookAnswer is the backend's JSON reply.
type webhookAnswer struct {
	Allow  *bool          `json:"allow"`
	Status int            `json:"status"`
	Reason string         `json:"reason"`
	Claims map[string]any `json:"claims"`
	Tags   []string       `json:"tags"`
}

// Check asks the backend about a connection to room (kind, name) made by
// request r, of which it reads only Header, URL.RawQuery and RemoteAddr.
// It blocks until the backend answers, the Timeout passes or ctx ends; a
// ctx that ends first refuses with 503 whatever FailOpen says (no one is
// waiting to be let in). Identical checks in flight at once share one
// backend request; with CacheTTL, later ones reuse its decision.
func (w *Webhook) Check(ctx context.Context, kind, name string, r *http.Request) Decision {
	body, err := json.Marshal(w.request(kind, name, r))
	if err != nil {
		return w.failure(err) // unreachable: strings and maps of strings
	}
	sum := sha256.Sum256(body)
	if w.cache != nil {
		if d, ok := w.cache.get(sum, w.now()); ok {
			d.Cached = true
			return d.clone()
		}
	}
	ch := w.flights.DoChan(string(sum[:]), func() (any, error) {
		// The request outlives any one caller's ctx: others may be waiting
		// on it. Its own timeout bounds it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.timeout)
		defer cancel()
		d := w.ask(rctx, body)
		if d.Err == nil && w.cache != nil {
			w.cache.put(sum, d, w.now())
		}
		return d, nil
	})
	if w.joined != nil {
		w.joined()
	}
	select {
	case res := <-ch:
		return res.Val.(Decision).clone()
	case <-ctx.Done():
		return Decision{Status: http.StatusServiceUnavailable, Reason: ReasonBackendUnavailable, Err: fmt.Errorf("%w: %w", ErrBackend, ctx.Err())}
	}
}

func (w *Webhook) request(kind, name string, r *http.Request) webhookRequest {
	req := webhookRequest{Kind: kind, Name: name, Headers: map[string]string{}, Query: map[string]string{}}
	if r == nil {
		return req
	}
	req.ClientAddr = r.RemoteAddr
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		req.ClientAddr = host
	}
	for _, h := range w.forward {
		vals := r.Header.Values(h)
		if h == "Sec-Websocket-Protocol" {
			vals = withoutTokenProtocols(vals)
		}
		if len(vals) > 0 {
			req.Headers[h] = strings.Join(vals, ", ")
		}
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		req.Method = r.Method
		if r.URL != nil {
			req.Path = r.URL.Path
		}
	}
	if r.URL != nil {
		q, _ := url.ParseQuery(r.URL.RawQuery) // keeps the pairs that parse
		for k, vs := range q {
			if k != "token" && len(vs) > 0 {
				req.Query[k] = vs[0]
			}
		}
	}
	return req
}

// withoutTokenProtocols drops "bearer.<token>" offers, so a forwarded
// Sec-WebSocket-Protocol never carries the token.
func withoutTokenProtocols(vals []string) []string {
	var out []string
	for _, v := range vals {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" && !IsTokenProtocol(p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// ask makes one backend request and reads its verdict.
func (w *Webhook) ask(ctx context.Context, body []byte) Decision {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return w.failure(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		// net/http names the URL in its error with only the password
		// masked: the user and a key in the query would reach the log.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			ue.URL = w.shown
		}
		return w.failure(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxWebhookResponseBytes+1))
	if err != nil {
		return w.failure(fmt.Errorf("reading answer: %w", err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return w.failure(fmt.Errorf("backend answered %d", resp.StatusCode))
	}
	if len(data) > MaxWebhookResponseBytes {
		return w.failure(fmt.Errorf("answer over %d bytes", MaxWebhookResponseBytes))
	}
	var a webhookAnswer
	if err := json.Unmarshal(data, &a); err != nil {
		return w.failure(fmt.Errorf("answer is not the expected JSON: %w", err))
	}
	if a.Allow == nil {
		return w.failure(errors.New(`answer has no "allow"`))
	}
	if *a.Allow {
		return Decision{Allow: true, Claims: a.Claims, Tags: a.Tags}
	}
	status := a.Status
	if status < 400 || status > 499 {
		status = http.StatusForbidden
	}
	reason := clipReason(a.Reason)
	if reason == "" {
		reason = strings.ToLower(http.StatusText(status))
	}
	return Decision{Status: status, Reason: reason}
}

func (w *Webhook) failure(err error) Decision {
	err = fmt.Errorf("%w: %w", ErrBackend, err)
	if w.failOpen {
		return Decision{Allow: true, Err: err}
	}
	return Decision{Status: http.StatusServiceUnavailable, Reason: ReasonBackendUnavailable, Err: err}
}

// withoutCredentials is u as errors may show it: without its user,
// password, query and fragment, where a backend's credentials are kept.
func withoutCredentials(u *url.URL) string {
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return v.String()
}

// validHeaderName reports whether s is an RFC 9110 token, which is what a
// header name is.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// clipReason makes a backend's reason fit to show a client: printable,
// valid UTF-8, at most MaxReasonBytes without splitting a character.
func clipReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, " "))
	s = strings.TrimSpace(s)
	if len(s) > MaxReasonBytes {
		// Back to the start of the character the limit falls in or after.
		n := MaxReasonBytes
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}

// clone gives each caller its own top-level Claims and Tags, so one caller
// editing them cannot change what the cache hands the next.
func (d Decision) clone() Decision {
	d.Claims = maps.Clone(d.Claims)
	d.Tags = slices.Clone(d.Tags)
	return d
}

package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// backend is a real HTTP server standing in for an operator's auth
// service. It counts requests and keeps the last body it was sent.
type backend struct {
	*httptest.Server
	hits atomic.Int64

	mu   sync.Mutex
	last []byte
	ct   string
}

// newBackend starts a backend that answers with answer.
func newBackend(tb testing.TB, answer func(w http.ResponseWriter, r *http.Request, n int64)) *backend {
	tb.Helper()
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.last, b.ct = body, r.Header.Get("Content-Type")
		b.mu.Unlock()
		answer(w, r, n)
	}))
	tb.Cleanup(b.Close)
	return b
}

// replying answers every request with status and body.
func replying(status int, body string) func(http.ResponseWriter, *http.Request, int64) {
	return func(w http.ResponseWriter, _ *http.Request, _ int64) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// newBlockingBackend starts a backend that answers allow only when
// released (or when the client gives up), so a test controls exactly when
// the backend responds. Each request arriving is signalled on arrived, if
// not nil.
func newBlockingBackend(tb testing.TB, arrived chan<- struct{}) (b *backend, release func()) {
	tb.Helper()
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	b = newBackend(tb, func(w http.ResponseWriter, r *http.Request, _ int64) {
		if arrived != nil {
			arrived <- struct{}{}
		}
		select {
		case <-ch:
			_, _ = io.WriteString(w, `{"allow":true,"claims":{"via":"slow"}}`)
		case <-r.Context().Done():
		}
	})
	// Registered after newBackend's Close, so it runs before it: Close
	// waits for handlers, which may be waiting for release.
	tb.Cleanup(release)
	return b, release
}

func (b *backend) lastRequest(tb testing.TB) (webhookRequest, string) {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var req webhookRequest
	if err := json.Unmarshal(b.last, &req); err != nil {
		tb.Fatalf("backend got %q: %v", b.last, err)
	}
	return req, string(b.last)
}

const secretToken = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2VjcmV0LXNpZ25hdHVyZQ"

// upgradeRequest is a browser's upgrade request carrying a token every way
// it can, and a cookie.
func upgradeRequest(cookie string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/rooms/chat/lobby?token="+secretToken+"&lang=en&lang=fr&v=2", nil)
	r.RemoteAddr = "192.0.2.7:51234"
	r.Header.Set("Authorization", "Bearer "+secretToken)
	r.Header.Set("Sec-WebSocket-Protocol", "den, bearer."+secretToken)
	r.Header.Set("Origin", "https://app.example")
	if cookie != "" {
		r.Header.Set("Cookie", cookie)
	}
	return r
}

func newWebhook(tb testing.TB, cfg WebhookConfig) *Webhook {
	tb.Helper()
	w, err := NewWebhook(cfg)
	if err != nil {
		tb.Fatalf("NewWebhook: %v", err)
	}
	return w
}

func TestWebhookAllow(t *testing.T) {
	b := newBackend(t, replying(200, `{"allow":true,"claims":{"user":"ada","admin":false},"tags":["team-a","beta"]}`))
	w := newWebhook(t, WebhookConfig{URL: b.URL, Forward: []string{"cookie", "ORIGIN", "sec-websocket-protocol", "X-Absent"}})
	d := w.Check(context.Background(), "chat", "lobby", upgradeRequest("session=abc"))
	if !d.Allow || d.Err != nil || d.Status != 0 || d.Reason != "" || d.Cached {
		t.Fatalf("decision %+v", d)
	}
	if d.Claims["user"] != "ada" || d.Claims["admin"] != false || strings.Join(d.Tags, ",") != "team-a,beta" {
		t.Errorf("claims %v tags %v", d.Claims, d.Tags)
	}
	req, raw := b.lastRequest(t)
	if req.Kind != "chat" || req.Name != "lobby" || req.ClientAddr != "192.0.2.7" {
		t.Errorf("request %+v", req)
	}
	wantHeaders := map[string]string{"Cookie": "session=abc", "Origin": "https://app.example", "Sec-Websocket-Protocol": "den"}
	if fmt.Sprint(req.Headers) != fmt.Sprint(wantHeaders) {
		t.Errorf("headers %v, want %v", req.Headers, wantHeaders)
	}
	if fmt.Sprint(req.Query) != fmt.Sprint(map[string]string{"lang": "en", "v": "2"}) {
		t.Errorf("query %v", req.Query)
	}
	if strings.Contains(raw, secretToken) || strings.Contains(raw, "signature") {
		t.Errorf("the token reached the backend unasked: %s", raw)
	}
	if b.ct != "application/json" {
		t.Errorf("Content-Type %q", b.ct)
	}
}

func TestWebhookForwardsAuthorizationWhenAsked(t *testing.T) {
	b := newBackend(t, replying(200, `{"allow":true}`))
	w := newWebhook(t, WebhookConfig{URL: b.URL, Forward: []string{"Authorization"}})
	if d := w.Check(context.Background(), "chat", "a", upgradeRequest("")); !d.Allow {
		t.Fatalf("decision %+v", d)
	}
	if req, _ := b.lastRequest(t); req.Headers["Authorization"] != "Bearer "+secretToken {
		t.Errorf("headers %v", req.Headers)
	}
}

func TestWebhookDeny(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	for _, tc := range []struct {
		name, answer string
		status       int
		reason       string
	}{
		{"status and reason", `{"allow":false,"status":401,"reason":"log in first"}`, 401, "log in first"},
		{"default status", `{"allow":false,"reason":"banned"}`, 403, "banned"},
		{"not a 4xx", `{"allow":false,"status":503,"reason":"nope"}`, 403, "nope"},
		{"a 2xx", `{"allow":false,"status":200}`, 403, "forbidden"},
		{"no reason", `{"allow":false,"status":429}`, 429, "too many requests"},
		{"claims ignored", `{"allow":false,"claims":{"a":1},"tags":["x"]}`, 403, "forbidden"},
		{"long reason", `{"allow":false,"reason":"` + long + `"}`, 403, long[:122]},
		{"control characters", `{"allow":false,"reason":"a\u0000b\r\nc\u001b[31m"}`, 403, "a b  c [31m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, replying(200, tc.answer))
			d := newWebhook(t, WebhookConfig{URL: b.URL}).Check(context.Background(), "chat", "a", upgradeRequest(""))
			if d.Allow || d.Err != nil || d.Claims != nil || d.Tags != nil {
				t.Fatalf("decision %+v", d)
			}
			if d.Status != tc.status || d.Reason != tc.reason {
				t.Errorf("got %d %q, want %d %q", d.Status, d.Reason, tc.status, tc.reason)
			}
			if len(d.Reason) > MaxReasonBytes || strings.IndexFunc(d.Reason, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
				t.Errorf("reason %q not fit for a client", d.Reason)
			}
		})
	}
}

// closedURL is the address of a port nothing listens on.
func closedURL(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		tb.Fatal(err)
	}
	return "http://" + addr + "/check"
}

func TestWebhookFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		url    func(testing.TB) string
		expect string // in Err
	}{
		{"backend 500", func(tb testing.TB) string { return newBackend(tb, replying(500, `{"allow":true}`)).URL }, "answered 500"},
		{"backend 403", func(tb testing.TB) string { return newBackend(tb, replying(403, `{"allow":true}`)).URL }, "answered 403"},
		{"redirect not followed", func(tb testing.TB) string {
			return newBackend(tb, func(w http.ResponseWriter, r *http.Request, _ int64) {
				http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
			}).URL
		}, "answered 307"},
		{"not JSON", func(tb testing.TB) string { return newBackend(tb, replying(200, `allow`)).URL }, "not the expected JSON"},
		{"trailing data", func(tb testing.TB) string { return newBackend(tb, replying(200, `{"allow":true} {}`)).URL }, "not the expected JSON"},
		{"wrong types", func(tb testing.TB) string { return newBackend(tb, replying(200, `{"allow":"yes"}`)).URL }, "not the expected JSON"},
		{"no allow", func(tb testing.TB) string { return newBackend(tb, replying(200, `{"claims":{}}`)).URL }, `no "allow"`},
		{"answer too long", func(tb testing.TB) string {
			pad := strings.Repeat("x", MaxWebhookResponseBytes)
			return newBackend(tb, replying(200, `{"allow":true,"claims":{"pad":"`+pad+`"}}`)).URL
		}, "answer over"},
		{"backend down", closedURL, "refused"},
		{"slow backend", func(tb testing.TB) string {
			b, _ := newBlockingBackend(tb, nil)
			return b.URL
		}, "deadline exceeded"},
	} {
		for _, open := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/failopen=%v", tc.name, open), func(t *testing.T) {
				w := newWebhook(t, WebhookConfig{URL: tc.url(t), Timeout: 100 * time.Millisecond, FailOpen: open, Forward: []string{"Authorization"}})
				d := w.Check(context.Background(), "chat", "a", upgradeRequest(""))
				if !errors.Is(d.Err, ErrBackend) || !strings.Contains(d.Err.Error(), tc.expect) {
					t.Fatalf("Err = %v, want ErrBackend and %q", d.Err, tc.expect)
				}
				if strings.Contains(d.Err.Error(), secretToken) {
					t.Errorf("Err echoes the token: %v", d.Err)
				}
				if d.Claims != nil || d.Tags != nil || d.Cached {
					t.Errorf("failure with a verdict: %+v", d)
				}
				if open {
					if !d.Allow || d.Status != 0 {
						t.Errorf("fail-open decision %+v", d)
					}
				} else if d.Allow || d.Status != 503 || d.Reason != ReasonBackendUnavailable {
					t.Errorf("fail-closed decision %+v", d)
				}
			})
		}
	}
}

func TestWebhookCache(t *testing.T) {
	clock := now
	var clockMu sync.Mutex
	var b *backend
	b = newBackend(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		req := webhookRequest{}
		_ = json.NewDecoder(strings.NewReader(string(mustLast(b)))).Decode(&req)
		if req.Name == "closed" {
			_, _ = io.WriteString(w, `{"allow":false,"status":404,"reason":"no such room"}`)
			return
		}
		_, _ = fmt.Fprintf(w, `{"allow":true,"claims":{"n":%d},"tags":["t"]}`, n)
	})
	w := newWebhook(t, WebhookConfig{URL: b.URL, CacheTTL: time.Minute, Forward: []string{"Cookie"}, Now: func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return clock
	}})
	check := func(name, cookie string) Decision {
		return w.Check(context.Background(), "chat", name, upgradeRequest(cookie))
	}

	first := check("a", "s=1")
	if !first.Allow || first.Cached || b.hits.Load() != 1 {
		t.Fatalf("first %+v, %d hits", first, b.hits.Load())
	}
	first.Claims["n"] = "changed by a caller"
	first.Tags[0] = "changed"
	second := check("a", "s=1")
	if !second.Allow || !second.Cached || b.hits.Load() != 1 {
		t.Fatalf("second %+v, %d hits", second, b.hits.Load())
	}
	if second.Claims["n"] != float64(1) || second.Tags[0] != "t" {
		t.Errorf("cached decision changed by a caller: %+v", second)
	}

	// Anything the backend is told makes another key.
	if d := check("a", "s=2"); d.Cached || b.hits.Load() != 2 {
		t.Errorf("another cookie: %+v, %d hits", d, b.hits.Load())
	}
	if d := check("b", "s=1"); d.Cached || b.hits.Load() != 3 {
		t.Errorf("another room: %+v, %d hits", d, b.hits.Load())
	}
	r := upgradeRequest("s=1")
	r.RemoteAddr = "198.51.100.1:1"
	if d := w.Check(context.Background(), "chat", "a", r); d.Cached || b.hits.Load() != 4 {
		t.Errorf("another address: %+v, %d hits", d, b.hits.Load())
	}
	// The token in the query is not sent, so not in the key either.
	r = upgradeRequest("s=1")
	r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "token=", "token=other", 1)
	if d := w.Check(context.Background(), "chat", "a", r); !d.Cached || b.hits.Load() != 4 {
		t.Errorf("another query token: %+v, %d hits", d, b.hits.Load())
	}

	// Denials are cached too.
	if d := check("closed", ""); d.Allow || d.Status != 404 || d.Cached {
		t.Fatalf("deny %+v", d)
	}
	if d := check("closed", ""); d.Allow || d.Status != 404 || !d.Cached || b.hits.Load() != 5 {
		t.Fatalf("cached deny %+v, %d hits", d, b.hits.Load())
	}

	// Past the TTL the backend is asked again.
	clockMu.Lock()
	clock = clock.Add(time.Minute)
	clockMu.Unlock()
	if d := check("a", "s=1"); d.Cached || b.hits.Load() != 6 || d.Claims["n"] != float64(6) {
		t.Errorf("after TTL: %+v, %d hits", d, b.hits.Load())
	}
}

func mustLast(b *backend) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func TestWebhookFailuresAreNotCached(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_, _ = io.WriteString(w, `{"allow":true}`)
	})
	w := newWebhook(t, WebhookConfig{URL: b.URL, CacheTTL: time.Hour})
	if d := w.Check(context.Background(), "chat", "a", upgradeRequest("")); d.Allow || d.Err == nil {
		t.Fatalf("first %+v", d)
	}
	if d := w.Check(context.Background(), "chat", "a", upgradeRequest("")); !d.Allow || d.Cached || b.hits.Load() != 2 {
		t.Fatalf("second %+v, %d hits", d, b.hits.Load())
	}
}

func TestWebhookCacheIsBounded(t *testing.T) {
	b := newBackend(t, replying(200, `{"allow":true}`))
	w := newWebhook(t, WebhookConfig{URL: b.URL, CacheTTL: time.Hour, CacheSize: 2, Now: nowFunc})
	for _, name := range []string{"a", "b", "c"} {
		w.Check(context.Background(), "chat", name, upgradeRequest(""))
	}
	if n := w.cache.len(); n != 2 {
		t.Errorf("cache holds %d, want 2", n)
	}
	if d := w.Check(context.Background(), "chat", "c", upgradeRequest("")); !d.Cached {
		t.Error("the newest entry was evicted")
	}
	if d := w.Check(context.Background(), "chat", "a", upgradeRequest("")); d.Cached || b.hits.Load() != 4 {
		t.Errorf("the oldest entry was kept: %+v, %d hits", d, b.hits.Load())
	}
}

func TestWebhookCoalesces(t *testing.T) {
	arrived := make(chan struct{}, 16)
	b, release := newBlockingBackend(t, arrived)
	w := newWebhook(t, WebhookConfig{URL: b.URL, Timeout: time.Minute})
	const callers = 8
	joined := make(chan struct{}, callers)
	w.joined = func() { joined <- struct{}{} }

	results := make(chan Decision, callers)
	for range callers {
		go func() { results <- w.Check(context.Background(), "chat", "a", upgradeRequest("")) }()
	}
	deadline := time.After(10 * time.Second)
	for i := range callers {
		select {
		case <-joined:
		case <-deadline:
			t.Fatalf("only %d of %d callers joined", i, callers)
		}
	}
	release()
	for range callers {
		select {
		case d := <-results:
			if !d.Allow || d.Claims["via"] != "slow" {
				t.Errorf("decision %+v", d)
			}
		case <-deadline:
			t.Fatal("a caller never returned")
		}
	}
	if n := b.hits.Load(); n != 1 {
		t.Errorf("%d backend requests for %d identical checks, want 1", n, callers)
	}
}

func TestWebhookCallerGivesUp(t *testing.T) {
	arrived := make(chan struct{}, 1)
	b, release := newBlockingBackend(t, arrived)
	w := newWebhook(t, WebhookConfig{URL: b.URL, Timeout: time.Minute, FailOpen: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Decision, 1)
	go func() { done <- w.Check(ctx, "chat", "a", upgradeRequest("")) }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("backend never asked")
	}
	cancel()
	var d Decision
	select {
	case d = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Check did not return on cancel")
	}
	if d.Allow || d.Status != 503 || !errors.Is(d.Err, context.Canceled) || !errors.Is(d.Err, ErrBackend) {
		t.Errorf("decision %+v", d)
	}
	release()
}

func TestNewWebhookRefuses(t *testing.T) {
	for _, tc := range []WebhookConfig{
		{},
		{URL: "localhost:8080/check"},
		{URL: "ftp://auth.example/check"},
		{URL: "http:///check"},
		{URL: "http://auth.example", Timeout: -1},
		{URL: "http://auth.example", CacheTTL: -1},
		{URL: "http://auth.example", CacheSize: -1},
		{URL: "http://auth.example", Forward: []string{"Bad Header"}},
		{URL: "http://auth.example", Forward: []string{""}},
	} {
		if _, err := NewWebhook(tc); err == nil {
			t.Errorf("NewWebhook(%+v) succeeded", tc)
		}
	}
	w := newWebhook(t, WebhookConfig{URL: "https://auth.example/check", Forward: []string{"cookie", "Cookie"}})
	if w.timeout != DefaultWebhookTimeout || w.cache != nil || strings.Join(w.forward, ",") != "Cookie" {
		t.Errorf("defaults: timeout %v cache %v forward %v", w.timeout, w.cache, w.forward)
	}
	w = newWebhook(t, WebhookConfig{URL: "https://auth.example/check", CacheTTL: time.Second})
	if w.cache == nil || w.cache.size != DefaultWebhookCacheSize {
		t.Errorf("default cache size not applied")
	}
}

// A reason cut to MaxReasonBytes stays valid UTF-8, whichever byte of a
// character the limit falls on.
func TestClipReasonKeepsUTF8(t *testing.T) {
	for pad := MaxReasonBytes - 3; pad <= MaxReasonBytes; pad++ {
		in := strings.Repeat("a", pad) + "€€"
		got := clipReason(in)
		if len(got) > MaxReasonBytes || !utf8.ValidString(got) {
			t.Errorf("pad %d: clipReason gave %d bytes, valid UTF-8 %v, tail %q", pad, len(got), utf8.ValidString(got), got[len(got)-3:])
		}
	}
}

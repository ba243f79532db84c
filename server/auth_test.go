package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/auth"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/server"
)

const testSecret = "a-test-secret-of-at-least-32-bytes!!"

func hs256(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handshake dials path with the given headers and subprotocols and
// returns the connection (nil if refused) and the HTTP status.
func handshake(t *testing.T, addr, path string, h http.Header, protocols ...string) (*websocket.Conn, *http.Response) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+path, h)
	if resp == nil {
		t.Fatalf("%s: %v", path, err)
	}
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp
}

// readType reads frames until one of type typ and returns it.
func readType(t *testing.T, c *websocket.Conn, typ string) map[string]any {
	t.Helper()
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m["type"] == typ {
			return m
		}
	}
}

// TestJoinTokens: a join's JWT is checked before the upgrade, from each
// place a client can put it, and the chat room shows the token's name.
func TestJoinTokens(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret), Audience: "den"})
	if err != nil {
		t.Fatal(err)
	}
	n := startMetricsNode(t, func(c *server.Config) {
		c.Tokens, c.TokenRequired = v, true
		c.Kinds = append(c.Kinds, whoami)
	})
	exp := time.Now().Add(time.Hour).Unix()
	ann := hs256(t, jwt.MapClaims{"sub": "u1", "name": "Ann", "aud": "den", "exp": exp, "rooms": []string{"chat/team-*"}})
	bearer := http.Header{"Authorization": {"Bearer " + ann}}

	c, resp := handshake(t, n.addr, "/rooms/chat/team-a?user=mallory", bearer)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("a good token in Authorization: %d", resp.StatusCode)
	}
	if j := readType(t, c, "join"); j["user"] != "Ann" {
		t.Fatalf("joined as %v, want the token's name over ?user=", j["user"])
	}
	c, resp = handshake(t, n.addr, "/rooms/chat/team-a", nil, "den", "bearer."+ann)
	if resp.StatusCode != http.StatusSwitchingProtocols || c.Subprotocol() != "den" {
		t.Fatalf("a token offered as a subprotocol: %d, protocol %q, want 101 and den", resp.StatusCode, c.Subprotocol())
	}
	if _, resp = handshake(t, n.addr, "/rooms/chat/team-a?token="+ann, nil); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("a token in the query: %d", resp.StatusCode)
	}

	anyRoom := hs256(t, jwt.MapClaims{"sub": "u2", "preferred_username": "cat", "aud": "den", "exp": exp, "team": "blue"})
	c, resp = handshake(t, n.addr, "/rooms/whoami/x", http.Header{"Authorization": {"Bearer " + anyRoom}})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("a token without a rooms claim: %d", resp.StatusCode)
	}
	who := readType(t, c, "whoami")
	if claims, _ := who["claims"].(map[string]any); who["name"] != "cat" || who["subject"] != "u2" || claims["team"] != "blue" {
		t.Fatalf("the room sees %v, want the token's identity and claims", who)
	}

	for _, tc := range []struct {
		what, path string
		h          http.Header
		want       int
	}{
		{"no token", "/rooms/chat/team-a", nil, http.StatusUnauthorized},
		{"another room", "/rooms/chat/lobby", bearer, http.StatusForbidden},
		{"another kind", "/rooms/counter/team-a", bearer, http.StatusForbidden},
		{"expired", "/rooms/chat/team-a", http.Header{"Authorization": {"Bearer " + hs256(t, jwt.MapClaims{"aud": "den", "exp": time.Now().Add(-time.Hour).Unix()})}}, http.StatusUnauthorized},
		{"wrong audience", "/rooms/chat/team-a", http.Header{"Authorization": {"Bearer " + hs256(t, jwt.MapClaims{"aud": "other", "exp": exp})}}, http.StatusUnauthorized},
		{"garbage", "/rooms/chat/team-a", http.Header{"Authorization": {"Bearer not.a.token"}}, http.StatusUnauthorized},
	} {
		_, resp := handshake(t, n.addr, tc.path, tc.h)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.what, resp.StatusCode, tc.want)
		}
		if challenge := resp.Header.Get("WWW-Authenticate"); (tc.want == http.StatusUnauthorized) != strings.HasPrefix(challenge, "Bearer ") {
			t.Errorf("%s: WWW-Authenticate %q", tc.what, challenge)
		}
	}
	if got := scrape(t, n.base)[`den_upgrades_refused_total{reason="auth"}`]; got != 6 {
		t.Errorf("auth refusals counted %v, want 6", got)
	}
	if strings.Contains(n.log.String(), ann) {
		t.Fatal("the log holds a token")
	}
}

// whoami is a kind that tells each member, and each HTTP caller, who the
// room thinks it is.
var whoami = rooms.Kind{Name: "whoami", New: func(*rooms.State) rooms.Handler { return whoamiRoom{} }}

type whoamiRoom struct{ rooms.Base }

func (whoamiRoom) Connect(c *rooms.Connect) error {
	s := c.Accept("member")
	var id rooms.Identity
	if c.Identity != nil {
		id = *c.Identity
	}
	b, err := json.Marshal(map[string]any{"type": "whoami", "name": id.Name, "subject": id.Subject, "claims": id.Claims, "tags": s.Tags()})
	if err != nil {
		return err
	}
	s.Send(true, b)
	return nil
}

// Request answers who the room thinks the caller is, null for no one.
func (whoamiRoom) Request(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(rooms.RequestIdentity(r))
}

// webhookNode starts a node that asks backend about every join, with the
// whoami kind and a handshake timeout well past the webhook's.
func webhookNode(t *testing.T, backend http.HandlerFunc, timeout time.Duration, tune ...func(*server.Config)) *metricsNode {
	t.Helper()
	b := httptest.NewServer(backend)
	t.Cleanup(b.Close)
	hook, err := auth.NewWebhook(auth.WebhookConfig{URL: b.URL, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return startMetricsNode(t, append([]func(*server.Config){func(c *server.Config) {
		c.Webhook, c.Gateway.HandshakeTimeout = hook, 10*time.Second
		c.Kinds = append(c.Kinds, whoami)
	}}, tune...)...)
}

// TestConnectWebhook: the backend's answer decides the join, its claims
// and tags reach the room, and a slow or dead backend fails the join
// closed.
func TestConnectWebhook(t *testing.T) {
	release := make(chan struct{})
	defer close(release) // before the backend closes: it waits for its slow handler
	n := webhookNode(t, func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Kind, Name string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		switch req.Name {
		case "ok":
			_, _ = w.Write([]byte(`{"allow":true,"claims":{"name":"Bob","plan":"gold"},"tags":["vip"]}`))
		case "slow":
			<-release
		default:
			_, _ = w.Write([]byte(`{"allow":false,"status":403,"reason":"not on the list"}`))
		}
	}, 300*time.Millisecond)
	c, resp := handshake(t, n.addr, "/rooms/chat/ok", nil)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("allowed: %d", resp.StatusCode)
	}
	if j := readType(t, c, "join"); j["user"] != "Bob" {
		t.Fatalf("joined as %v, want the webhook's name", j["user"])
	}
	c, resp = handshake(t, n.addr, "/rooms/whoami/ok", nil)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("allowed: %d", resp.StatusCode)
	}
	who := readType(t, c, "whoami")
	if claims, _ := who["claims"].(map[string]any); who["name"] != "Bob" || claims["plan"] != "gold" || fmt.Sprint(who["tags"]) != "[vip member]" {
		t.Fatalf("the room sees %v, want name Bob, the webhook's claims, and its tags before the room's", who)
	}
	if _, resp := handshake(t, n.addr, "/rooms/chat/no", nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("denied: %d, want 403", resp.StatusCode)
	}
	if _, resp := handshake(t, n.addr, "/rooms/chat/slow", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("slow backend: %d, want 503", resp.StatusCode)
	}
	dead, err := auth.NewWebhook(auth.WebhookConfig{URL: "http://127.0.0.1:1/", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n2 := startMetricsNode(t, func(c *server.Config) { c.Webhook, c.Gateway.HandshakeTimeout = dead, 10*time.Second })
	if _, resp := handshake(t, n2.addr, "/rooms/echo/x", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("backend down: %d, want 503", resp.StatusCode)
	}
	if got := scrape(t, n.base)[`den_upgrades_refused_total{reason="webhook"}`]; got != 2 {
		t.Errorf("webhook refusals counted %v, want 2", got)
	}
}

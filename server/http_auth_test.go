package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/den-rooms/den/auth"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/server"
)

// roomRequest sends an HTTP request to a room, with a bearer token if
// token is not empty, and returns its status, WWW-Authenticate and body.
func roomRequest(t *testing.T, method, url, token, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
}

// A room's HTTP requests pass the same token checks as its joins: with
// --token-required, none gets through without a token, a token for other
// rooms gets 403, a good one gets through; and each refusal is logged.
func TestRoomHTTPNeedsATokenAsJoinsDo(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	n := startMetricsNode(t, func(c *server.Config) { c.Tokens, c.TokenRequired = v, true })
	url := n.base + "/rooms/chat/lobby/messages"
	post := `{"user":"Ann","text":"hi"}`
	if code, challenge, _ := roomRequest(t, http.MethodPost, url, "", post); code != http.StatusUnauthorized || !strings.HasPrefix(challenge, "Bearer") {
		t.Errorf("POST without a token: %d %q, want 401 with a Bearer challenge", code, challenge)
	}
	if code, _, body := roomRequest(t, http.MethodGet, url, "", ""); code != http.StatusUnauthorized {
		t.Errorf("GET without a token: %d %s, want 401", code, body)
	}
	other := hs256(t, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(), "rooms": []string{"chat/team-*"}})
	if code, _, _ := roomRequest(t, http.MethodGet, url, other, ""); code != http.StatusForbidden {
		t.Errorf("GET with a token for other rooms: %d, want 403", code)
	}
	good := hs256(t, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(), "rooms": []string{"chat/lobby"}})
	if code, _, body := roomRequest(t, http.MethodPost, url, good, post); code != http.StatusCreated {
		t.Errorf("POST with a good token: %d %s, want 201", code, body)
	}
	if code, _, body := roomRequest(t, http.MethodGet, url, good, ""); code != http.StatusOK || !strings.Contains(body, `"text":"hi"`) {
		t.Errorf("GET with a good token: %d %s, want the message", code, body)
	}
	log := n.log.String()
	if strings.Count(log, `"msg":"request refused"`) != 3 || !strings.Contains(log, `"room":"lobby"`) {
		t.Errorf("want three refusals logged with their room; log:\n%s", log)
	}
	if strings.Contains(log, other) || strings.Contains(log, good) {
		t.Error("a token is in the log")
	}
}

// The connect webhook decides a room's HTTP requests too, told their
// method and path; a 401 it answers names the Bearer scheme.
func TestRoomHTTPAsksTheWebhook(t *testing.T) {
	var mu sync.Mutex
	var seen []map[string]any
	n := webhookNode(t, func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		seen = append(seen, req)
		mu.Unlock()
		if req["name"] == "closed" {
			_, _ = w.Write([]byte(`{"allow":false,"status":401,"reason":"log in first"}`))
			return
		}
		_, _ = w.Write([]byte(`{"allow":true}`))
	}, 5*time.Second)
	if code, challenge, _ := roomRequest(t, http.MethodPost, n.base+"/rooms/counter/closed/increment", "", ""); code != http.StatusUnauthorized || !strings.HasPrefix(challenge, "Bearer") {
		t.Errorf("refused by the webhook: %d %q, want 401 with a Bearer challenge", code, challenge)
	}
	if code, _, body := roomRequest(t, http.MethodPost, n.base+"/rooms/counter/open/increment", "", ""); code != http.StatusOK || body != `{"value":1}`+"\n" {
		t.Errorf("allowed by the webhook: %d %q", code, body)
	}
	if _, resp := handshake(t, n.addr, "/rooms/counter/closed", nil); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("a join the webhook answers 401: %d %v", resp.StatusCode, resp.Header)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || seen[1]["method"] != "POST" || seen[1]["path"] != "/rooms/counter/open/increment" {
		t.Fatalf("the webhook saw %v, want the requests' method and path", seen)
	}
	if _, ok := seen[2]["method"]; ok {
		t.Errorf("a join was sent to the webhook with a method: %v", seen[2])
	}
	if log := n.log.String(); !strings.Contains(log, `"msg":"join refused"`) || !strings.Contains(log, `"msg":"request refused"`) {
		t.Errorf("the refusals are not logged; log:\n%s", log)
	}
}

// whoamiOver asks the whoami room at url over HTTP who it thinks the
// caller is.
func whoamiOver(t *testing.T, url, token string) *rooms.Identity {
	t.Helper()
	code, _, body := roomRequest(t, http.MethodGet, url, token, "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	var id *rooms.Identity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatalf("GET %s: %v in %q", url, err, body)
	}
	return id
}

// A room's HTTP handler sees who the caller is as its connect handler
// does: the token's identity with the webhook's claims over it; none for
// a client without a token, nor on a node that checks nothing, whatever
// the client sends.
func TestRoomHTTPSeesTheIdentity(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	n := webhookNode(t, func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Name string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Name == "hooked" {
			_, _ = w.Write([]byte(`{"allow":true,"claims":{"name":"Bob","plan":"gold"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"allow":true}`))
	}, 5*time.Second, func(c *server.Config) { c.Tokens = v })
	cat := hs256(t, jwt.MapClaims{"sub": "u2", "preferred_username": "cat", "exp": time.Now().Add(time.Hour).Unix(), "team": "blue"})

	if id := whoamiOver(t, n.base+"/rooms/whoami/x", cat); id == nil || id.Subject != "u2" || id.Name != "cat" || id.Claims["team"] != "blue" {
		t.Errorf("with a token the room sees %+v, want u2, cat and the token's claims", id)
	}
	if id := whoamiOver(t, n.base+"/rooms/whoami/x?token="+cat, ""); id == nil || id.Subject != "u2" {
		t.Errorf("with a token in the query the room sees %+v, want u2", id)
	}
	if id := whoamiOver(t, n.base+"/rooms/whoami/hooked", cat); id == nil || id.Subject != "u2" || id.Name != "Bob" || id.Claims["team"] != "blue" || id.Claims["plan"] != "gold" {
		t.Errorf("with a token and the webhook's claims the room sees %+v, want u2, the webhook's name and both's claims", id)
	}
	if id := whoamiOver(t, n.base+"/rooms/whoami/hooked", ""); id == nil || id.Subject != "" || id.Name != "Bob" {
		t.Errorf("with the webhook's claims alone the room sees %+v, want Bob", id)
	}
	if id := whoamiOver(t, n.base+"/rooms/whoami/x", ""); id != nil {
		t.Errorf("without a token or the webhook's claims the room sees %+v, want nil", id)
	}

	open := startMetricsNode(t, func(c *server.Config) { c.Kinds = append(c.Kinds, whoami) })
	if id := whoamiOver(t, open.base+"/rooms/whoami/x", cat); id != nil {
		t.Errorf("on a node that checks nothing the room sees %+v, want nil", id)
	}
}

// A chat message POSTed with a token is the token's user's, as a join
// with one is: the verified name wins over the body's "user", which may
// then be left out, and is cut to 64 bytes as a join's is; without a
// token the body names the user.
func TestChatPostTakesTheTokensName(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	n := startMetricsNode(t, func(c *server.Config) { c.Tokens = v })
	exp := time.Now().Add(time.Hour).Unix()
	ann := hs256(t, jwt.MapClaims{"sub": "u1", "name": "Ann", "exp": exp})
	long := hs256(t, jwt.MapClaims{"sub": "u3", "name": strings.Repeat("é", 40), "exp": exp})
	c, resp := handshake(t, n.addr, "/rooms/chat/lobby", nil)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("join: %d", resp.StatusCode)
	}
	readType(t, c, "history")

	url := n.base + "/rooms/chat/lobby/messages"
	var users []string
	for _, tc := range []struct{ what, token, body, want string }{
		{"a token and another user", ann, `{"user":"mallory","text":"one"}`, "Ann"},
		{"a token and no user", ann, `{"text":"two"}`, "Ann"},
		{"a token with a long name", long, `{"text":"three"}`, strings.Repeat("é", 32)},
		{"no token", "", `{"user":"mallory","text":"four"}`, "mallory"},
	} {
		code, _, body := roomRequest(t, http.MethodPost, url, tc.token, tc.body)
		var m struct{ User, Text string }
		if err := json.Unmarshal([]byte(body), &m); code != http.StatusCreated || err != nil || m.User != tc.want {
			t.Fatalf("%s: %d %s, want 201 from %s", tc.what, code, body, tc.want)
		}
		if got := readType(t, c, "message"); got["user"] != tc.want || got["text"] != m.Text {
			t.Fatalf("%s: the room broadcast %v, want %q from %s", tc.what, got, m.Text, tc.want)
		}
		users = append(users, tc.want)
	}
	if code, _, body := roomRequest(t, http.MethodPost, url, "", `{"text":"five"}`); code != http.StatusBadRequest {
		t.Errorf("no token and no user: %d %s, want 400", code, body)
	}
	_, _, body := roomRequest(t, http.MethodGet, url, "", "")
	var stored []struct{ User string }
	if err := json.Unmarshal([]byte(body), &stored); err != nil || len(stored) != len(users) {
		t.Fatalf("history %s, want %d messages", body, len(users))
	}
	for i, m := range stored {
		if m.User != users[i] {
			t.Errorf("message %d stored from %q, want %q", i+1, m.User, users[i])
		}
	}
}

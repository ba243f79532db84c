package server_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/den-rooms/den/auth"
	"github.com/den-rooms/den/server"
)

// TestRegressWebhookTagsOverLimits: more tags from the webhook than a
// socket leaves for them is a backend answer den cannot keep: the join
// gets the webhook's 503, not the room's 500.
func TestRegressWebhookTagsOverLimits(t *testing.T) {
	n := webhookNode(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"allow":true,"tags":["t0","t1","t2","t3","t4","t5","t6","t7","t8","t9"]}`))
	}, 5*time.Second)
	_, resp := handshake(t, n.addr, "/rooms/whoami/x", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the webhook allowed with 10 tags: %d, want 503", resp.StatusCode)
	}
}

// TestRegressSubprotocolNotInvented: without tokens den selects no
// subprotocol, whatever the client offers.
func TestRegressSubprotocolNotInvented(t *testing.T) {
	n := startMetricsNode(t)
	c, resp := handshake(t, n.addr, "/rooms/chat/x", nil, "mqtt.v5", "graphql-ws")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("join: %d", resp.StatusCode)
	}
	if p := c.Subprotocol(); p != "" {
		t.Fatalf("den selected subprotocol %q for a chat room that speaks neither offer", p)
	}
}

// TestRegressWebhookNameWithToken: the webhook's name claim wins over the
// name the token gave.
func TestRegressWebhookNameWithToken(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	n := webhookNode(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"allow":true,"claims":{"name":"Bob"}}`))
	}, 5*time.Second, func(c *server.Config) { c.Tokens = v })
	tok := hs256(t, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix()})
	c, resp := handshake(t, n.addr, "/rooms/whoami/x", http.Header{"Authorization": {"Bearer " + tok}})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("join: %d", resp.StatusCode)
	}
	who := readType(t, c, "whoami")
	if claims, _ := who["claims"].(map[string]any); who["name"] != claims["name"] {
		t.Fatalf("the room sees Name %v but Claims[name] %v", who["name"], claims["name"])
	}
}

package server_test

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/den-rooms/den/auth"
	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/server"
)

// TestRegressWebhookFailureLogsNoCredentials: a connect webhook URL often
// carries its credentials (https://user:pass@host, ?key=...); a failed
// call is logged at every join, and the log must not hand them to
// whoever reads it.
func TestRegressWebhookFailureLogsNoCredentials(t *testing.T) {
	// A port that refuses: the call fails in net/http, whose error names
	// the URL.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	hook, err := auth.NewWebhook(auth.WebhookConfig{URL: "http://den:pa55word@" + addr + "/check?key=k3ysecret"})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	srv := serveNode(t, server.Config{Gateway: gateway.Config{Listen: "127.0.0.1:0"}, Data: t.TempDir(), Webhook: hook, Logger: zap.New(core)})
	if code, _, _ := roomRequest(t, http.MethodGet, "http://"+srv.Addr().String()+"/rooms/chat/lobby/messages", "", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("with the backend down: %d, want 503", code)
	}
	failed := logs.FilterMessage("connect webhook failed").All()
	if len(failed) != 1 {
		t.Fatalf("%d entries %q, want 1", len(failed), "connect webhook failed")
	}
	for k, v := range failed[0].ContextMap() {
		s, _ := v.(string)
		if strings.Contains(s, "pa55word") || strings.Contains(s, "k3ysecret") || strings.Contains(s, "den:") {
			t.Errorf("the log's %s holds the webhook's credentials: %s", k, s)
		}
	}
}

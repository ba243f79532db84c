package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRegressWebhookURLErrorHidesCredentials: den's start-up error goes to
// the terminal or the journal; a mistyped --connect-webhook must not put
// the credentials it carries there.
func TestRegressWebhookURLErrorHidesCredentials(t *testing.T) {
	for _, u := range []string{"ftp://den:pa55word@auth.example.com/check?key=k3ysecret", "http://den:pa55word@[::1/check?key=k3ysecret"} {
		_, err := parseServe([]string{"--connect-webhook", u}, &bytes.Buffer{}, func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), "--connect-webhook") {
			t.Fatalf("%s: err %v, want one naming --connect-webhook", u, err)
		}
		if s := err.Error(); strings.Contains(s, "pa55word") || strings.Contains(s, "k3ysecret") {
			t.Errorf("the error shows the webhook's credentials: %s", s)
		}
	}
}

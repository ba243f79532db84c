package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// TestRegressAdminTokenNoHeaderCarries: the admin API reads the token as
// the one word after "Bearer", so a token with a space, a tab or a control
// character in it (a "\r" from an env file saved with CRLF endings) is
// never matched: den started with the admin API answering 401 to all.
func TestRegressAdminTokenNoHeaderCarries(t *testing.T) {
	for _, tok := range []string{"s3cret\r", "two words", " s3cret", "s3\x00cret"} {
		_, err := parseServe(nil, &bytes.Buffer{}, func(k string) string {
			if k == "DEN_ADMIN_TOKEN" {
				return tok
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), "--admin-token") {
			t.Errorf("DEN_ADMIN_TOKEN=%q: err %v, want one naming --admin-token", tok, err)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimSpace(tok)) {
			t.Errorf("the error shows the token: %s", err)
		}
	}
}

// A shutdown whose time ran out is no error of its own (the dropped
// connections are logged), but storage that failed to close in it is:
// den reported the deadline and exited 0, the storage error lost with it.
func TestShutdownPastItsTimeKeepsOtherErrors(t *testing.T) {
	disk := errors.New("storage: node.db: disk I/O error")
	for _, c := range []struct {
		err  error
		want error
	}{
		{context.DeadlineExceeded, nil},
		{errors.Join(fmt.Errorf("gateway: %w", context.DeadlineExceeded), nil, nil), nil},
		{errors.Join(fmt.Errorf("gateway: %w", context.DeadlineExceeded), nil, disk), disk},
		{errors.Join(context.DeadlineExceeded, errors.Join(disk)), disk},
	} {
		got := beyondDeadline(c.err)
		if (got == nil) != (c.want == nil) || (c.want != nil && !errors.Is(got, c.want)) {
			t.Errorf("beyondDeadline(%v) = %v, want %v", c.err, got, c.want)
		}
		if c.want != nil && errors.Is(got, context.DeadlineExceeded) {
			t.Errorf("beyondDeadline(%v) = %v, still holding the deadline", c.err, got)
		}
	}
}

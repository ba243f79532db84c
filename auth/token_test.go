package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type tokenCase struct {
	name       string
	target     string
	header     map[string][]string
	want, from string
}

var tokenCases = []tokenCase{
	{"none", "/rooms/chat/a", nil, "", ""},
	{"bearer header", "/rooms/chat/a", map[string][]string{"Authorization": {"Bearer h.t.s"}}, "h.t.s", SourceHeader},
	{"scheme in any case", "/rooms/chat/a", map[string][]string{"Authorization": {"bEaReR   h.t.s  "}}, "h.t.s", SourceHeader},
	{"tab after scheme", "/rooms/chat/a", map[string][]string{"Authorization": {"Bearer\th.t.s"}}, "h.t.s", SourceHeader},
	{"basic is not bearer", "/rooms/chat/a?token=q.t.s", map[string][]string{"Authorization": {"Basic dXNlcjpwdw=="}}, "q.t.s", SourceQuery},
	{"bearerx is not bearer", "/rooms/chat/a", map[string][]string{"Authorization": {"Bearerx h.t.s"}}, "", ""},
	{"bearer without token", "/rooms/chat/a?token=q.t.s", map[string][]string{"Authorization": {"Bearer "}}, "q.t.s", SourceQuery},
	{"bare scheme", "/rooms/chat/a", map[string][]string{"Authorization": {"Bearer"}}, "", ""},
	{"subprotocol alone", "/rooms/chat/a", map[string][]string{"Sec-Websocket-Protocol": {"bearer.p.t.s"}}, "p.t.s", SourceProtocol},
	{"subprotocol among others", "/rooms/chat/a", map[string][]string{"Sec-Websocket-Protocol": {"den, bearer.p.t.s , chat.v2"}}, "p.t.s", SourceProtocol},
	{"subprotocol in a second header line", "/rooms/chat/a", map[string][]string{"Sec-Websocket-Protocol": {"den", "Bearer.p.t.s"}}, "p.t.s", SourceProtocol},
	{"empty bearer protocol", "/rooms/chat/a", map[string][]string{"Sec-Websocket-Protocol": {"den, bearer."}}, "", ""},
	{"no token protocol", "/rooms/chat/a", map[string][]string{"Sec-Websocket-Protocol": {"den, bearer"}}, "", ""},
	{"query", "/rooms/chat/a?x=1&token=q.t.s&y=2", nil, "q.t.s", SourceQuery},
	{"query first of two", "/rooms/chat/a?token=q1.t.s&token=q2.t.s", nil, "q1.t.s", SourceQuery},
	{"query escaped", "/rooms/chat/a?token=q%2Et.s", nil, "q.t.s", SourceQuery},
	{"query badly escaped", "/rooms/chat/a?token=q%zz", nil, "q%zz", SourceQuery},
	{"query empty", "/rooms/chat/a?token=&token=", nil, "", ""},
	{"query other name", "/rooms/chat/a?tokens=q.t.s&xtoken=q.t.s", nil, "", ""},
	{"header wins over subprotocol and query", "/rooms/chat/a?token=q.t.s", map[string][]string{
		"Authorization": {"Bearer h.t.s"}, "Sec-Websocket-Protocol": {"den, bearer.p.t.s"}}, "h.t.s", SourceHeader},
	{"subprotocol wins over query", "/rooms/chat/a?token=q.t.s", map[string][]string{
		"Sec-Websocket-Protocol": {"den, bearer.p.t.s"}}, "p.t.s", SourceProtocol},
}

func TestTokenFrom(t *testing.T) {
	for _, tc := range tokenCases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			for k, vs := range tc.header {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			tok, from := TokenFrom(r)
			if tok != tc.want || from != tc.from {
				t.Errorf("TokenFrom = %q, %q; want %q, %q", tok, from, tc.want, tc.from)
			}
		})
	}
	if tok, from := TokenFrom(nil); tok != "" || from != "" {
		t.Errorf("TokenFrom(nil) = %q, %q", tok, from)
	}
	if tok, from := TokenFrom(&http.Request{}); tok != "" || from != "" {
		t.Errorf("TokenFrom(empty request) = %q, %q", tok, from)
	}
}

// A real browser-style offer: a token TokenFrom finds in the subprotocol
// header verifies, and IsTokenProtocol marks the offer so the gateway
// never echoes it.
func TestTokenFromSubprotocolVerifies(t *testing.T) {
	k := fixture(t)
	v, err := NewVerifier(pemConfig(t, k))
	if err != nil {
		t.Fatal(err)
	}
	token := sign(t, "EdDSA", claims(), nil, k.ed)
	r := httptest.NewRequest(http.MethodGet, "/rooms/chat/a", nil)
	r.Header.Set("Sec-WebSocket-Protocol", "den, bearer."+token)
	got, from := TokenFrom(r)
	if from != SourceProtocol {
		t.Fatalf("source %q", from)
	}
	if _, err := v.Verify(got); err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Split(r.Header.Get("Sec-WebSocket-Protocol"), ",") {
		p = strings.TrimSpace(p)
		if IsTokenProtocol(p) != strings.HasPrefix(p, "bearer.") {
			t.Errorf("IsTokenProtocol(%.12q...) wrong", p)
		}
	}
}

func TestIsTokenProtocol(t *testing.T) {
	for p, want := range map[string]bool{
		"bearer.x": true, "BEARER.x": true, "bearer.": true,
		"bearer": false, "den": false, "": false, "xbearer.x": false, "bearer-x": false,
	} {
		if got := IsTokenProtocol(p); got != want {
			t.Errorf("IsTokenProtocol(%q) = %v", p, got)
		}
	}
}

func BenchmarkTokenFrom(b *testing.B) {
	for _, tc := range tokenCases {
		r := httptest.NewRequest(http.MethodGet, tc.target, nil)
		for k, vs := range tc.header {
			for _, v := range vs {
				r.Header.Add(k, v)
			}
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if tok, _ := TokenFrom(r); tok != tc.want {
					b.Fatal(tok)
				}
			}
		})
	}
}

package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func FuzzTokenFrom(f *testing.F) {
	for _, tc := range tokenCases {
		var authz, proto string
		for k, vs := range tc.header {
			switch k {
			case "Authorization":
				authz = vs[0]
			case "Sec-Websocket-Protocol":
				proto = strings.Join(vs, ", ")
			}
		}
		_, q, _ := strings.Cut(tc.target, "?")
		f.Add(authz, proto, q)
	}
	f.Add("Bearer \x00", "bearer.\xff, bearer.", "token=%")
	f.Add("bearer", ",,,bearer.x,", "&&token=a&token")
	f.Fuzz(func(t *testing.T, authz, proto, rawQuery string) {
		h := http.Header{}
		if authz != "" {
			h.Set("Authorization", authz)
		}
		if proto != "" {
			h.Set("Sec-WebSocket-Protocol", proto)
		}
		tok, from := TokenFrom(&http.Request{Header: h, URL: &url.URL{RawQuery: rawQuery}})
		if (tok == "") != (from == "") {
			t.Fatalf("token %q from %q", tok, from)
		}
		switch from {
		case "":
		case SourceHeader:
			if !strings.Contains(authz, tok) {
				t.Fatalf("header token %q not in %q", tok, authz)
			}
		case SourceProtocol:
			if !strings.Contains(strings.ToLower(proto), "bearer."+strings.ToLower(tok)) {
				t.Fatalf("protocol token %q not in %q", tok, proto)
			}
		case SourceQuery:
			if len(tok) > len(rawQuery) {
				t.Fatalf("query token %q longer than the query", tok)
			}
		default:
			t.Fatalf("unknown source %q", from)
		}
		// What the webhook forwards of this header never holds a token offer.
		for _, p := range withoutTokenProtocols(h.Values("Sec-WebSocket-Protocol")) {
			if IsTokenProtocol(p) {
				t.Fatalf("forwarded a token offer %q", p)
			}
		}
	})
}

// reasons are every text a *TokenError may print.
var reasons = []string{
	ReasonTooLong, ReasonMalformed, ReasonAlgorithm, ReasonUnknownKey, ReasonSignature,
	ReasonExpired, ReasonNotYetValid, ReasonIssuedLater, ReasonNoExpiry, ReasonAudience,
	ReasonIssuer, ReasonBadClaims, ReasonCritical, ReasonUnacceptable,
}

func FuzzVerify(f *testing.F) {
	k := fixture(f)
	var verifiers []*Verifier
	for _, cfg := range []Config{
		pemConfig(f, k),
		jwksConfig(f, k),
		{Secret: k.secret, Keys: loadKeys(f, writeJWKS(f, k)), Audience: "den", Issuer: "iss", RequireExpiry: true, Now: nowFunc},
	} {
		v, err := NewVerifier(cfg)
		if err != nil {
			f.Fatal(err)
		}
		verifiers = append(verifiers, v)
	}
	// Seeds are well-formed tokens signed by keys no verifier holds, so
	// no mutation of them can verify either.
	_, stranger, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	full := claims("aud", "den", "iss", "iss", "rooms", []string{"chat/*"}, "name", "Ada")
	f.Add("")
	f.Add("a.b.c")
	f.Add("...")
	f.Add(sign(f, "HS256", full, nil, k.otherSecret))
	f.Add(sign(f, "HS512", full, map[string]any{"kid": "rsa-1"}, k.otherSecret))
	f.Add(sign(f, "EdDSA", full, map[string]any{"kid": "ed-1"}, stranger))
	f.Add(sign(f, "EdDSA", full, nil, stranger))
	f.Add(sign(f, "none", full, nil, jwt.UnsafeAllowNoneSignatureType))
	f.Add(sign(f, "HS256", full, nil, pemOf(f, &k.rsa.PublicKey)))
	f.Add(forge(f, `{"alg":"RS256","kid":"rsa-2","crit":["x"]}`, full, "AAAA"))
	f.Add(forge(f, `{"alg":"ES256","kid":"ec-1"}`, full, strings.Repeat("A", 86)))
	f.Fuzz(func(t *testing.T, token string) {
		for _, v := range verifiers {
			id, err := v.Verify(token)
			if err == nil {
				t.Fatalf("random token verified: %q (%+v)", token, id)
			}
			if token == "" {
				if !errors.Is(err, ErrNoToken) {
					t.Fatalf("empty token: %v", err)
				}
				continue
			}
			var te *TokenError
			if !errors.As(err, &te) || !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v (%T) is not a *TokenError", err, err)
			}
			known := false
			for _, r := range reasons {
				known = known || te.Reason == r
			}
			if !known || err.Error() != ErrInvalidToken.Error()+": "+te.Reason {
				t.Fatalf("error text %q is not one of the fixed reasons", err)
			}
		}
	})
}

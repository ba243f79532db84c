package auth

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// claims are a plain valid token's claims at the fixed clock.
func claims(extra ...any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "user-1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for i := 0; i+1 < len(extra); i += 2 {
		k := extra[i].(string)
		if extra[i+1] == nil {
			delete(c, k)
			continue
		}
		c[k] = extra[i+1]
	}
	return c
}

// Configs the matrix draws on.
func pemConfig(tb testing.TB, k *testKeys) Config {
	return Config{Secret: k.secret, Keys: loadKeys(tb, writePEM(tb, k, false)), Now: nowFunc}
}

func publicOnlyConfig(tb testing.TB, k *testKeys) Config {
	return Config{Keys: loadKeys(tb, writePEM(tb, k, false)), Now: nowFunc}
}

func jwksConfig(tb testing.TB, k *testKeys) Config {
	return Config{Secret: k.secret, Keys: loadKeys(tb, writeJWKS(tb, k)), Now: nowFunc}
}

type verifyCase struct {
	name  string
	cfg   func(testing.TB, *testKeys) Config
	token func(testing.TB, *testKeys) string
	want  string // a Reason*, or "" to accept
}

func with(base func(testing.TB, *testKeys) Config, edit func(*Config)) func(testing.TB, *testKeys) Config {
	return func(tb testing.TB, k *testKeys) Config {
		c := base(tb, k)
		edit(&c)
		return c
	}
}

var verifyCases = []verifyCase{
	// Each algorithm with its right key.
	{"HS256", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "HS256", claims(), nil, k.secret) }, ""},
	{"HS384", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "HS384", claims(), nil, k.secret) }, ""},
	{"HS512", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "HS512", claims(), nil, k.secret) }, ""},
	{"RS256", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "RS256", claims(), nil, k.rsa) }, ""},
	{"RS384", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "RS384", claims(), nil, k.rsa) }, ""},
	{"RS512", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "RS512", claims(), nil, k.rsa) }, ""},
	{"PS256", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "PS256", claims(), nil, k.rsa) }, ""},
	{"PS384", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "PS384", claims(), nil, k.rsa) }, ""},
	{"PS512", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "PS512", claims(), nil, k.rsa) }, ""},
	{"EdDSA from a certificate", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "EdDSA", claims(), nil, k.ed) }, ""},
	{"ES256", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "ES256", claims(), nil, k.ec256) }, ""},
	{"ES384", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "ES384", claims(), nil, k.ec384) }, ""},
	{"RS256 from an RSA PUBLIC KEY block", func(tb testing.TB, k *testKeys) Config {
		return Config{Keys: loadKeys(tb, writePEM(tb, k, true)), Now: nowFunc}
	}, func(tb testing.TB, k *testKeys) string { return sign(tb, "RS256", claims(), nil, k.rsa2) }, ""},

	// Wrong keys.
	{"RS256 by a key not configured", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "RS256", claims(), nil, k.rsa2) }, ReasonSignature},
	{"HS256 by another secret", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "HS256", claims(), nil, k.otherSecret) }, ReasonSignature},
	{"HS256 without a secret configured", publicOnlyConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "HS256", claims(), nil, k.secret) }, ReasonAlgorithm},
	{"EdDSA with no Ed25519 key", with(pemConfig, func(c *Config) { c.Keys = c.Keys[:1] }), func(tb testing.TB, k *testKeys) string { return sign(tb, "EdDSA", claims(), nil, k.ed) }, ReasonAlgorithm},
	{"ES512 with no P-521 key", pemConfig, func(tb testing.TB, k *testKeys) string {
		return forge(tb, `{"alg":"ES512","typ":"JWT"}`, claims(), strings.Repeat("A", 176))
	}, ReasonAlgorithm},

	// alg none and key confusion.
	{"alg none", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "none", claims(), nil, jwt.UnsafeAllowNoneSignatureType)
	}, ReasonAlgorithm},
	{"alg None spelled otherwise", pemConfig, func(tb testing.TB, k *testKeys) string { return forge(tb, `{"alg":"None"}`, claims(), "") }, ReasonAlgorithm},
	{"alg missing", pemConfig, func(tb testing.TB, k *testKeys) string { return forge(tb, `{"typ":"JWT"}`, claims(), "") }, ReasonAlgorithm},
	{"HS256 keyed with the RSA public key PEM, no secret configured", publicOnlyConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims(), nil, pemOf(tb, &k.rsa.PublicKey))
	}, ReasonAlgorithm},
	{"HS256 keyed with the RSA public key PEM, a secret configured", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims(), nil, pemOf(tb, &k.rsa.PublicKey))
	}, ReasonSignature},
	{"HS256 keyed with the RSA public key DER", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims(), nil, x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey))
	}, ReasonSignature},
	{"crit header", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims(), map[string]any{"crit": []string{"exp"}}, k.secret)
	}, ReasonCritical},

	// Times.
	{"expired", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("exp", now.Add(-time.Second).Unix()), nil, k.secret)
	}, ReasonExpired},
	{"expiring this very second", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("exp", now.Unix()), nil, k.secret)
	}, ReasonExpired},
	{"expired within leeway", with(pemConfig, func(c *Config) { c.Leeway = 30 * time.Second }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("exp", now.Add(-20*time.Second).Unix()), nil, k.secret)
	}, ""},
	{"expired beyond leeway", with(pemConfig, func(c *Config) { c.Leeway = 30 * time.Second }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("exp", now.Add(-40*time.Second).Unix()), nil, k.secret)
	}, ReasonExpired},
	{"not yet valid", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("nbf", now.Add(time.Minute).Unix()), nil, k.secret)
	}, ReasonNotYetValid},
	{"nbf within leeway", with(pemConfig, func(c *Config) { c.Leeway = 2 * time.Minute }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("nbf", now.Add(time.Minute).Unix()), nil, k.secret)
	}, ""},
	{"nbf now", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("nbf", now.Unix()), nil, k.secret)
	}, ""},
	{"issued in the future", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("iat", now.Add(time.Minute).Unix()), nil, k.secret)
	}, ReasonIssuedLater},
	{"issued in the future within leeway", with(pemConfig, func(c *Config) { c.Leeway = time.Minute }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("iat", now.Add(time.Minute).Unix()), nil, k.secret)
	}, ""},
	{"no exp, not required", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("exp", nil), nil, k.secret)
	}, ""},
	{"no exp, required", with(pemConfig, func(c *Config) { c.RequireExpiry = true }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("exp", nil), nil, k.secret)
	}, ReasonNoExpiry},
	{"exp, required", with(pemConfig, func(c *Config) { c.RequireExpiry = true }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims(), nil, k.secret)
	}, ""},
	{"exp not a number", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("exp", "tomorrow"), nil, k.secret)
	}, ReasonBadClaims},

	// Audience and issuer.
	{"audience right", with(pemConfig, func(c *Config) { c.Audience = "den" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("aud", "den"), nil, k.secret)
	}, ""},
	{"audience among several", with(pemConfig, func(c *Config) { c.Audience = "den" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("aud", []string{"api", "den"}), nil, k.secret)
	}, ""},
	{"audience wrong", with(pemConfig, func(c *Config) { c.Audience = "den" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("aud", []string{"api", "dens"}), nil, k.secret)
	}, ReasonAudience},
	{"audience missing when required", with(pemConfig, func(c *Config) { c.Audience = "den" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims(), nil, k.secret)
	}, ReasonAudience},
	{"audience empty when required", with(pemConfig, func(c *Config) { c.Audience = "den" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("aud", []string{}), nil, k.secret)
	}, ReasonAudience},
	{"audience \"\" when required, issuer too", with(pemConfig, func(c *Config) { c.Audience, c.Issuer = "den", "iss" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("aud", "", "iss", "iss"), nil, k.secret)
	}, ReasonAudience},
	{"issuer \"\" when required", with(pemConfig, func(c *Config) { c.Issuer = "iss" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("iss", ""), nil, k.secret)
	}, ReasonIssuer},
	{"expired and wrong audience tells expired", with(pemConfig, func(c *Config) { c.Audience = "den" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("aud", "api", "exp", now.Add(-time.Hour).Unix()), nil, k.secret)
	}, ReasonExpired},
	{"audience ignored when not configured", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("aud", "elsewhere"), nil, k.secret)
	}, ""},
	{"issuer right", with(pemConfig, func(c *Config) { c.Issuer = "https://id.example" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("iss", "https://id.example"), nil, k.secret)
	}, ""},
	{"issuer wrong", with(pemConfig, func(c *Config) { c.Issuer = "https://id.example" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("iss", "https://id.example.evil"), nil, k.secret)
	}, ReasonIssuer},
	{"issuer missing", with(pemConfig, func(c *Config) { c.Issuer = "https://id.example" }), func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims(), nil, k.secret)
	}, ReasonIssuer},

	// Key ids.
	{"kid picks the JWKS key", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "RS256", claims(), map[string]any{"kid": "rsa-2"}, k.rsa2)
	}, ""},
	{"kid names another key than the signer", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "RS256", claims(), map[string]any{"kid": "rsa-1"}, k.rsa2)
	}, ReasonSignature},
	{"kid unknown", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "RS256", claims(), map[string]any{"kid": "rsa-9"}, k.rsa)
	}, ReasonUnknownKey},
	{"kid names a key of another type", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "EdDSA", claims(), map[string]any{"kid": "rsa-1"}, k.ed)
	}, ReasonUnknownKey},
	{"no kid tries every key that fits", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "PS256", claims(), nil, k.rsa2)
	}, ""},
	{"kid on EdDSA from JWKS", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "EdDSA", claims(), map[string]any{"kid": "ed-1"}, k.ed)
	}, ""},
	{"JWKS alg pins ES256", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "ES256", claims(), map[string]any{"kid": "ec-1"}, k.ec256)
	}, ""},
	{"JWKS encryption key is not used", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "ES384", claims(), nil, k.ec384)
	}, ReasonAlgorithm},
	{"kid ignored when no key has an id", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "RS256", claims(), map[string]any{"kid": "whatever"}, k.rsa)
	}, ""},
	{"kid on an HMAC token", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims(), map[string]any{"kid": "rsa-1"}, k.secret)
	}, ""},
	{"kid not a string", jwksConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "RS256", claims(), map[string]any{"kid": 7}, k.rsa)
	}, ""},

	// Shape.
	{"two segments", pemConfig, func(testing.TB, *testKeys) string { return "eyJhbGciOiJIUzI1NiJ9.e30" }, ReasonMalformed},
	{"four segments", pemConfig, func(tb testing.TB, k *testKeys) string { return sign(tb, "HS256", claims(), nil, k.secret) + ".x" }, ReasonMalformed},
	{"not base64", pemConfig, func(testing.TB, *testKeys) string { return "!!!.???.***" }, ReasonMalformed},
	{"claims not JSON", pemConfig, func(tb testing.TB, k *testKeys) string { return forgeRaw(`{"alg":"HS256"}`, `not json`, "") }, ReasonMalformed},
	{"signature tampered", pemConfig, func(tb testing.TB, k *testKeys) string {
		t := sign(tb, "HS256", claims(), nil, k.secret)
		return t[:len(t)-2] + flip(t[len(t)-2]) + t[len(t)-1:]
	}, ReasonSignature},
	{"claims tampered", pemConfig, func(tb testing.TB, k *testKeys) string {
		t := sign(tb, "RS256", claims(), nil, k.rsa)
		parts := strings.Split(t, ".")
		return forgeRaw(`{"alg":"RS256","typ":"JWT"}`, `{"sub":"admin"}`, parts[2])
	}, ReasonSignature},
	{"too long", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("pad", strings.Repeat("x", MaxTokenBytes)), nil, k.secret)
	}, ReasonTooLong},
	{"sub not a string", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("sub", 42), nil, k.secret)
	}, ReasonBadClaims},
	{"rooms not strings", pemConfig, func(tb testing.TB, k *testKeys) string {
		return sign(tb, "HS256", claims("rooms", []any{"chat/*", 3}), nil, k.secret)
	}, ReasonBadClaims},
}

// forge builds an unsigned-looking token from a literal header, claims and
// a signature segment, for headers no signer would write.
func forge(tb testing.TB, header string, c jwt.MapClaims, sig string) string {
	tb.Helper()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	s, err := t.SigningString()
	if err != nil {
		tb.Fatal(err)
	}
	_, payload, _ := strings.Cut(s, ".")
	return b64(header) + "." + payload + "." + sig
}

func forgeRaw(header, payload, sig string) string {
	return b64(header) + "." + b64(payload) + "." + sig
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// flip changes one base64url character to another.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestVerifyMatrix(t *testing.T) {
	k := fixture(t)
	for _, tc := range verifyCases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.cfg(t, k))
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			token := tc.token(t, k)
			id, err := v.Verify(token)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Verify refused a good token: %v", err)
				}
				if id.Subject != "user-1" {
					t.Errorf("Subject = %q", id.Subject)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted; want %q", tc.want)
			}
			var te *TokenError
			if !errors.As(err, &te) || !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v (%T) is not a *TokenError wrapping ErrInvalidToken", err, err)
			}
			if te.Reason != tc.want {
				t.Errorf("reason %q, want %q", te.Reason, tc.want)
			}
			if len(token) > 20 && strings.Contains(err.Error(), token[len(token)-20:]) {
				t.Errorf("error %q echoes the token", err)
			}
		})
	}
}

func TestVerifyNoToken(t *testing.T) {
	v, err := NewVerifier(pemConfig(t, fixture(t)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(""); !errors.Is(err, ErrNoToken) || errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify(\"\") = %v, want ErrNoToken alone", err)
	}
}

func TestVerifyUsesTheClock(t *testing.T) {
	k := fixture(t)
	clock := now
	cfg := pemConfig(t, k)
	cfg.Now = func() time.Time { return clock }
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, "HS256", claims(), nil, k.secret)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("before exp: %v", err)
	}
	clock = now.Add(2 * time.Hour)
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("after exp: %v", err)
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	k := fixture(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty", Config{}, "no verification key"},
		{"short secret", Config{Secret: []byte("short")}, "at least 32"},
		{"negative leeway", Config{Secret: k.secret, Leeway: -time.Second}, "negative leeway"},
		{"private key as public", Config{Keys: []Key{{Public: k.rsa}}}, "unsupported key type"},
		{"nil key", Config{Keys: []Key{{}}}, "no public key"},
		{"alg that does not fit", Config{Keys: []Key{{Public: &k.rsa.PublicKey, Alg: "HS256"}}}, "does not fit"},
		{"ES384 pinned on P-256", Config{Keys: []Key{{Public: &k.ec256.PublicKey, Alg: "ES384"}}}, "does not fit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewVerifier = %v, want an error with %q", err, tc.want)
			}
		})
	}
	if _, err := NewVerifier(Config{}); !errors.Is(err, ErrNoKey) {
		t.Errorf("empty config: %v, want ErrNoKey", err)
	}
}

func TestAlgorithms(t *testing.T) {
	k := fixture(t)
	v, err := NewVerifier(Config{Keys: []Key{{Public: k.ed.Public()}, {Public: &k.ec256.PublicKey}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(v.Algorithms(), ","); got != "EdDSA,ES256" {
		t.Errorf("Algorithms = %s", got)
	}
}

func TestIdentity(t *testing.T) {
	k := fixture(t)
	v, err := NewVerifier(pemConfig(t, k))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		want   string
	}{
		{"name claim", claims("name", "Ada", "preferred_username", "ada"), "Ada"},
		{"preferred_username", claims("preferred_username", "ada"), "ada"},
		{"sub", claims(), "user-1"},
		{"name not a string", claims("name", 5, "preferred_username", "ada"), "ada"},
		{"no sub", claims("sub", nil), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(sign(t, "HS256", tc.claims, nil, k.secret))
			if err != nil {
				t.Fatal(err)
			}
			if id.Name != tc.want {
				t.Errorf("Name = %q, want %q", id.Name, tc.want)
			}
		})
	}
	id, err := v.Verify(sign(t, "ES256", claims("team", "blue"), nil, k.ec256))
	if err != nil {
		t.Fatal(err)
	}
	if !id.Expires.Equal(now.Add(time.Hour)) {
		t.Errorf("Expires = %v", id.Expires)
	}
	if id.Claims["team"] != "blue" {
		t.Errorf("Claims = %v", id.Claims)
	}
	id, err = v.Verify(sign(t, "HS256", claims("exp", nil), nil, k.secret))
	if err != nil {
		t.Fatal(err)
	}
	if !id.Expires.IsZero() {
		t.Errorf("Expires without exp = %v", id.Expires)
	}
}

func TestMayJoin(t *testing.T) {
	k := fixture(t)
	v, err := NewVerifier(pemConfig(t, k))
	if err != nil {
		t.Fatal(err)
	}
	type room struct {
		kind, name string
		may        bool
	}
	for _, tc := range []struct {
		name  string
		rooms any // nil: no claim
		check []room
	}{
		{"no claim joins anything", nil, []room{{"chat", "x", true}, {"counter", "y", true}}},
		{"empty list joins nothing", []string{}, []room{{"chat", "x", false}}},
		{"one string", "chat/lobby", []room{{"chat", "lobby", true}, {"chat", "lobby2", false}, {"echo", "lobby", false}}},
		{"kind wildcard", []string{"*/lobby"}, []room{{"chat", "lobby", true}, {"echo", "lobby", true}, {"chat", "other", false}}},
		{"name wildcard", []string{"chat/*"}, []room{{"chat", "a", true}, {"chat", "", true}, {"echo", "a", false}}},
		{"question mark", []string{"counter/team-?"}, []room{{"counter", "team-a", true}, {"counter", "team-ab", false}, {"counter", "team-", false}}},
		{"class", []string{"chat/room-[0-9]"}, []room{{"chat", "room-7", true}, {"chat", "room-x", false}}},
		{"several", []string{"chat/a", "echo/*"}, []room{{"chat", "a", true}, {"echo", "z", true}, {"chat", "b", false}}},
		{"star does not cross a slash", []string{"chat/*"}, []room{{"chat", "a/b", false}}},
		{"no slash matches nothing", []string{"chat"}, []room{{"chat", "chat", false}, {"chat", "", false}}},
		{"bad pattern matches nothing", []string{"chat/[", "[/x", "*/a[", "chat/ok"}, []room{{"chat", "[", false}, {"chat", "ok", true}, {"x", "a[", false}}},
		{"bad name half after a failing kind", []string{"echo/["}, []room{{"chat", "[", false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := claims()
			if tc.rooms != nil {
				c["rooms"] = tc.rooms
			}
			id, err := v.Verify(sign(t, "HS256", c, nil, k.secret))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.check {
				if got := id.MayJoin(r.kind, r.name); got != r.may {
					t.Errorf("MayJoin(%q, %q) = %v, want %v", r.kind, r.name, got, r.may)
				}
			}
		})
	}
	var nilID *Identity
	if nilID.MayJoin("chat", "x") {
		t.Error("a nil Identity may join")
	}
	if (&Identity{Rooms: []string{"chat/a"}}).MayJoin("chat", "b") {
		t.Error("an Identity built by hand with Rooms is not limited by them")
	}
}

func BenchmarkVerify(b *testing.B) {
	k := fixture(b)
	for _, tc := range verifyCases {
		switch tc.name {
		case "HS256", "RS256", "PS256", "EdDSA from a certificate", "ES256", "kid picks the JWKS key", "alg none", "expired":
		default:
			continue
		}
		b.Run(tc.name, func(b *testing.B) {
			v, err := NewVerifier(tc.cfg(b, k))
			if err != nil {
				b.Fatal(err)
			}
			token := tc.token(b, k)
			b.ReportAllocs()
			for b.Loop() {
				_, err := v.Verify(token)
				if (err == nil) != (tc.want == "") {
					b.Fatalf("Verify: %v", err)
				}
			}
		})
	}
}

// "exp":0 is 1970-01-01, long past: the token is refused as expired, not
// taken for one that never expires.
func TestExpZeroIsExpired(t *testing.T) {
	k := fixture(t)
	v, err := NewVerifier(pemConfig(t, k))
	if err != nil {
		t.Fatal(err)
	}
	for _, exp := range []float64{0, -1} {
		id, err := v.Verify(sign(t, "HS256", claims("exp", exp), nil, k.secret))
		var te *TokenError
		if !errors.As(err, &te) || te.Reason != ReasonExpired {
			t.Errorf("exp %g: %v (Expires %v), want %q", exp, err, id, ReasonExpired)
		}
	}
}

// An nbf or iat past what int64 seconds hold is in the far future: it does
// not wrap round into the past and pass.
func TestHugeTimesNotWrapped(t *testing.T) {
	k := fixture(t)
	v, err := NewVerifier(pemConfig(t, k))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		claim string
		want  string
	}{{"nbf", ReasonNotYetValid}, {"iat", ReasonIssuedLater}} {
		for _, val := range []float64{1e19, 1e300} {
			_, err := v.Verify(sign(t, "HS256", claims(c.claim, val), nil, k.secret))
			var te *TokenError
			if !errors.As(err, &te) || te.Reason != c.want {
				t.Errorf("%s %g: %v, want %q", c.claim, val, err, c.want)
			}
		}
	}
}

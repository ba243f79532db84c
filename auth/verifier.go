package auth

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenBytes bounds a token: Verify refuses a longer one before
// decoding it. Real tokens are well under 2 KiB; the bound keeps a hostile
// one from costing more than a request head.
const MaxTokenBytes = 8 << 10

// Config says which tokens a Verifier accepts. Its zero value has no key
// and is refused by NewVerifier; everything else defaults to off.
type Config struct {
	// Secret is the HMAC key for HS256, HS384 and HS512 tokens, at least
	// MinSecretBytes long. Nil accepts no HMAC token.
	Secret []byte
	// Keys are the public keys for RS*, PS*, EdDSA and ES* tokens, as
	// LoadKeys returns them.
	Keys []Key
	// Audience, when set, must be one of the token's "aud" values; a token
	// without "aud" is then refused.
	Audience string
	// Issuer, when set, must equal the token's "iss".
	Issuer string
	// RequireExpiry refuses tokens without "exp". Off by default so that
	// long-lived service tokens work; turn it on for browser tokens.
	RequireExpiry bool
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 0.
	Leeway time.Duration
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Verifier checks tokens against one Config. Build it with NewVerifier;
// it is immutable and safe for use by any goroutine.
type Verifier struct {
	secret   []byte
	keys     []Key
	keyAlgs  [][]string // keyAlgs[i] is what keys[i] may verify
	haveKIDs bool
	algs     []string
	parser   *jwt.Parser
	cfg      Config
}

// NewVerifier checks cfg and builds a Verifier. It fails with ErrNoKey
// when cfg has neither a secret nor a key, and with a message naming the
// key when one is unusable (a short secret, a small RSA key, an
// unsupported curve, an alg that does not fit the key's type).
func NewVerifier(cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 && len(cfg.Keys) == 0 {
		return nil, ErrNoKey
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("auth: negative leeway %v", cfg.Leeway)
	}
	v := &Verifier{cfg: cfg}
	if len(cfg.Secret) > 0 {
		if len(cfg.Secret) < MinSecretBytes {
			return nil, fmt.Errorf("auth: HMAC secret of %d bytes; at least %d required", len(cfg.Secret), MinSecretBytes)
		}
		v.secret = slices.Clone(cfg.Secret)
		v.algs = append(v.algs, hmacAlgs...)
	}
	for i, k := range cfg.Keys {
		fit, err := k.algs()
		if err != nil {
			return nil, fmt.Errorf("auth: key %d%s: %w", i, kidSuffix(k.ID), err)
		}
		v.keys = append(v.keys, k)
		v.keyAlgs = append(v.keyAlgs, fit)
		v.haveKIDs = v.haveKIDs || k.ID != ""
		for _, a := range fit {
			if !slices.Contains(v.algs, a) {
				v.algs = append(v.algs, a)
			}
		}
	}
	opts := []jwt.ParserOption{
		// The method list is the first line against alg "none" and
		// HMAC-with-a-public-key: an alg no configured key fits is refused
		// before any key is looked up.
		jwt.WithValidMethods(v.algs),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	if cfg.RequireExpiry {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Algorithms lists the "alg" values this Verifier can accept, in the order
// the keys were given.
func (v *Verifier) Algorithms() []string { return slices.Clone(v.algs) }

// Identity is who a verified token speaks for.
type Identity struct {
	// Subject is the "sub" claim, "" when absent.
	Subject string
	// Name is for display: the "name" claim, else "preferred_username",
	// else Subject.
	Name string
	// Claims are all of the token's claims as JSON decodes them (numbers
	// are float64). Treat as read-only.
	Claims map[string]any
	// Rooms are the "rooms" claim's patterns; see MayJoin.
	Rooms []string
	// Expires is the "exp" claim, zero when the token has none.
	Expires time.Time
}

// Verify checks a token's signature and claims and returns its Identity.
// An empty token is ErrNoToken; every other refusal is a *TokenError
// wrapping ErrInvalidToken, whose Reason may be sent to the client.
// Verify never panics, whatever the input.
func (v *Verifier) Verify(token string) (*Identity, error) {
	if token == "" {
		return nil, ErrNoToken
	}
	if len(token) > MaxTokenBytes {
		return nil, invalid(ReasonTooLong)
	}
	claims := jwt.MapClaims{}
	t, err := v.parser.ParseWithClaims(token, claims, v.keyFor)
	if err != nil {
		return nil, invalid(v.reason(t, claims, err))
	}
	if reason := timesOutOfRange(claims); reason != "" {
		return nil, invalid(reason)
	}
	return identityOf(claims)
}

// maxSeconds is the end of the year 9999, in seconds since 1970.
const maxSeconds = 253402300799

// timesOutOfRange refuses what the jwt library lets through: an "exp" of
// 0 or less, which it takes for no expiry, and an "nbf" or "iat" past any
// date, which it converts to a time long past.
func timesOutOfRange(claims jwt.MapClaims) string {
	if exp, ok := claims["exp"].(float64); ok && exp <= 0 {
		return ReasonExpired
	}
	if nbf, ok := claims["nbf"].(float64); ok && nbf > maxSeconds {
		return ReasonNotYetValid
	}
	if iat, ok := claims["iat"].(float64); ok && iat > maxSeconds {
		return ReasonIssuedLater
	}
	return ""
}

// keyFor picks the keys a parsed (not yet verified) token may be checked
// against. Only keys whose type fits the token's alg are offered, so the
// signature check never sees, say, an RSA key's bytes as an HMAC secret.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if _, crit := t.Header["crit"]; crit {
		// RFC 7515 §4.1.11: extensions named in crit must be understood,
		// and den understands none.
		return nil, invalid(ReasonCritical)
	}
	alg := t.Method.Alg()
	if slices.Contains(hmacAlgs, alg) {
		// The secret has no id; a kid on an HMAC token selects nothing.
		return v.secret, nil
	}
	kid, hasKID := t.Header["kid"].(string)
	byID := hasKID && kid != "" && v.haveKIDs
	var set jwt.VerificationKeySet
	for i, k := range v.keys {
		if byID && k.ID != kid {
			continue
		}
		if slices.Contains(v.keyAlgs[i], alg) {
			set.Keys = append(set.Keys, k.Public)
		}
	}
	if len(set.Keys) == 0 {
		if byID {
			return nil, invalid(ReasonUnknownKey)
		}
		return nil, invalid(ReasonAlgorithm)
	}
	return set, nil
}

// reason turns the jwt library's error into one of ours. Several claim
// errors may come joined; the order below picks the one most useful to a
// client (an expired token is told it is expired, not that its audience is
// also wrong).
func (v *Verifier) reason(t *jwt.Token, claims jwt.MapClaims, err error) string {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ReasonMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// alg missing or unknown to the library
		return ReasonAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if t != nil && t.Method != nil && !slices.Contains(v.algs, t.Method.Alg()) {
			return ReasonAlgorithm
		}
		return ReasonSignature
	case errors.Is(err, jwt.ErrInvalidType):
		return ReasonBadClaims
	case errors.Is(err, jwt.ErrTokenExpired):
		return ReasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return ReasonNotYetValid
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ReasonIssuedLater
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ReasonAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ReasonIssuer
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// Which one: exp, aud or iss, the only ones Config can require.
		if exp, _ := claims.GetExpirationTime(); exp == nil && v.cfg.RequireExpiry {
			return ReasonNoExpiry
		}
		if aud, _ := claims.GetAudience(); v.cfg.Audience != "" && (len(aud) == 0 || len(aud) == 1 && aud[0] == "") {
			return ReasonAudience
		}
		return ReasonIssuer
	}
	return ReasonUnacceptable
}

// identityOf reads the Identity out of verified claims. A claim den reads
// that has the wrong JSON type refuses the token rather than being
// guessed at.
func identityOf(claims jwt.MapClaims) (*Identity, error) {
	sub, err := claims.GetSubject()
	if err != nil {
		return nil, invalid(ReasonBadClaims)
	}
	id := &Identity{Subject: sub, Claims: claims}
	if exp, _ := claims.GetExpirationTime(); exp != nil {
		id.Expires = exp.Time
	}
	for _, c := range []string{"name", "preferred_username"} {
		if s, ok := claims[c].(string); ok && s != "" {
			id.Name = s
			break
		}
	}
	if id.Name == "" {
		id.Name = sub
	}
	if raw, ok := claims["rooms"]; ok {
		if id.Rooms, ok = roomPatterns(raw); !ok {
			return nil, invalid(ReasonBadClaims)
		}
	}
	return id, nil
}

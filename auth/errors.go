package auth

import "errors"

var (
	// ErrNoToken means the request carried no token at all, as opposed to
	// a bad one: a deployment that also accepts anonymous users may let it
	// through.
	ErrNoToken = errors.New("auth: no token")
	// ErrInvalidToken is wrapped by every *TokenError: the token was
	// present but is not acceptable. Answer 401.
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrNoKey is returned by NewVerifier when Config names no key: a
	// verifier that can accept nothing is a configuration mistake.
	ErrNoKey = errors.New("auth: no verification key configured (set a secret or public keys)")
	// ErrBackend is wrapped by Decision.Err when the webhook backend could
	// not be asked or gave no usable answer.
	ErrBackend = errors.New("auth: auth backend unavailable")
)

// Reasons a token is refused. They are the only values of TokenError.Reason:
// short, fixed and safe to send to a client, since none repeats any part of
// the token.
const (
	ReasonTooLong      = "token too long"
	ReasonMalformed    = "malformed token"
	ReasonAlgorithm    = "unsupported algorithm"
	ReasonUnknownKey   = "unknown key id"
	ReasonSignature    = "bad signature"
	ReasonExpired      = "token expired"
	ReasonNotYetValid  = "token not yet valid"
	ReasonIssuedLater  = "token issued in the future"
	ReasonNoExpiry     = "token has no expiry"
	ReasonAudience     = "wrong audience"
	ReasonIssuer       = "wrong issuer"
	ReasonBadClaims    = "malformed claims"
	ReasonCritical     = "unsupported critical header"
	ReasonUnacceptable = "invalid token"
)

// TokenError is why Verify refused a present token. errors.Is(err,
// ErrInvalidToken) holds for every one.
type TokenError struct {
	// Reason is one of the Reason* constants.
	Reason string
}

// Error reads "auth: invalid token: <reason>".
func (e *TokenError) Error() string { return ErrInvalidToken.Error() + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalidToken) true.
func (e *TokenError) Unwrap() error { return ErrInvalidToken }

func invalid(reason string) error { return &TokenError{Reason: reason} }

package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
)

// MinRSABits is the smallest RSA modulus a Key may have. Shorter keys are
// refused when loaded rather than trusted quietly.
const MinRSABits = 2048

// MinSecretBytes is the shortest HMAC secret Config accepts: RFC 7518
// §3.2 asks for a key at least as long as the hash (32 bytes for HS256).
const MinSecretBytes = 32

// Key is one public key tokens may be signed with.
type Key struct {
	// ID is the JWKS "kid", or "" for a key from a PEM file. A token whose
	// kid header names an ID is checked against that key only.
	ID string
	// Alg, when set (a JWKS "alg"), is the one algorithm this key may
	// verify; "" allows every algorithm that fits its type.
	Alg string
	// Public is an *rsa.PublicKey (RS256/384/512, PS256/384/512), an
	// ed25519.PublicKey (EdDSA) or an *ecdsa.PublicKey on P-256, P-384 or
	// P-521 (ES256, ES384, ES512 respectively).
	Public crypto.PublicKey
}

var (
	rsaAlgs  = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	hmacAlgs = []string{"HS256", "HS384", "HS512"}
)

// algs lists the algorithms k may verify, or an error naming why k is
// unusable. The key's type decides: an RSA key never verifies an HMAC or
// ECDSA token, which is what stops algorithm confusion.
func (k Key) algs() ([]string, error) {
	var fit []string
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		if pub == nil || pub.N == nil {
			return nil, errors.New("empty RSA key")
		}
		if pub.N.BitLen() < MinRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; at least %d required", pub.N.BitLen(), MinRSABits)
		}
		fit = rsaAlgs
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, errors.New("Ed25519 key of wrong size")
		}
		fit = []string{"EdDSA"}
	case *ecdsa.PublicKey:
		if pub == nil || pub.Curve == nil {
			return nil, errors.New("empty ECDSA key")
		}
		switch pub.Curve {
		case elliptic.P256():
			fit = []string{"ES256"}
		case elliptic.P384():
			fit = []string{"ES384"}
		case elliptic.P521():
			fit = []string{"ES512"}
		default:
			return nil, fmt.Errorf("ECDSA curve %s not supported", pub.Curve.Params().Name)
		}
	case nil:
		return nil, errors.New("no public key")
	default:
		return nil, fmt.Errorf("unsupported key type %T (want RSA, Ed25519 or ECDSA public key)", k.Public)
	}
	if k.Alg == "" {
		return fit, nil
	}
	if !slices.Contains(fit, k.Alg) {
		return nil, fmt.Errorf("alg %q does not fit a key of type %T", k.Alg, k.Public)
	}
	return []string{k.Alg}, nil
}

// LoadKeys reads public keys from a file: a JWKS document (JSON with a
// "keys" array, each key keeping its kid and alg) or PEM holding one or
// more PUBLIC KEY (PKIX), RSA PUBLIC KEY (PKCS #1) or CERTIFICATE blocks.
// Private keys are refused: a gateway only verifies, and a signing key
// has no business on it.
func LoadKeys(path string) ([]Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: keys: %w", err)
	}
	keys, err := ParseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("auth: keys %s: %w", path, err)
	}
	return keys, nil
}

// ParseKeys is LoadKeys on a file's contents: JSON when the first
// non-space byte is '{', PEM otherwise. Every key it returns is usable
// (its type and size are checked here, not first at NewVerifier).
func ParseKeys(data []byte) ([]Key, error) {
	var keys []Key
	var err error
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		keys, err = parseJWKS(trimmed)
	} else {
		keys, err = parsePEM(data)
	}
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no public keys found")
	}
	for i, k := range keys {
		if _, err := k.algs(); err != nil {
			return nil, fmt.Errorf("key %d%s: %w", i, kidSuffix(k.ID), err)
		}
	}
	return keys, nil
}

func kidSuffix(id string) string {
	if id == "" {
		return ""
	}
	return fmt.Sprintf(" (kid %q)", id)
}

func parsePEM(data []byte) ([]Key, error) {
	var keys []Key
	for n := 0; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var pub any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
			return nil, fmt.Errorf("PEM block %d is a private key; give the public key only", n)
		default:
			return nil, fmt.Errorf("PEM block %d: unsupported type %q", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		keys = append(keys, Key{Public: pub})
	}
	if len(keys) == 0 {
		return nil, errors.New("neither a JWKS document nor PEM")
	}
	return keys, nil
}

func parseJWKS(data []byte) ([]Key, error) {
	// Keys are decoded one at a time rather than as a jose.JSONWebKeySet so
	// that one key of a type den does not know (RFC 7517 §5: SHOULD be
	// ignored) does not fail the whole set.
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var keys []Key
	for i, raw := range set.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, fmt.Errorf("JWKS key %d: %w", i, err)
		}
		if jwk.Use == "enc" {
			continue // an encryption key never signs a token
		}
		if !jwk.IsPublic() {
			if _, sym := jwk.Key.([]byte); sym {
				return nil, fmt.Errorf("JWKS key %d%s is symmetric; give an HMAC secret as Config.Secret", i, kidSuffix(jwk.KeyID))
			}
			return nil, fmt.Errorf("JWKS key %d%s is a private key; give the public key only", i, kidSuffix(jwk.KeyID))
		}
		keys = append(keys, Key{ID: jwk.KeyID, Alg: jwk.Algorithm, Public: jwk.Key})
	}
	return keys, nil
}

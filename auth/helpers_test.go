package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// testKeys are the signing keys of the tests. RSA generation is slow, so
// one set serves every test (and each fuzz worker) in the process.
type testKeys struct {
	secret      []byte
	rsa, rsa2   *rsa.PrivateKey
	ed          ed25519.PrivateKey
	ec256       *ecdsa.PrivateKey
	ec384       *ecdsa.PrivateKey
	edCertDER   []byte // a self-signed certificate for ed's public key
	otherSecret []byte
}

var fixtureOnce = sync.OnceValues(func() (*testKeys, error) {
	k := &testKeys{
		secret:      []byte("0123456789abcdef0123456789abcdef-den"),
		otherSecret: []byte("fedcba9876543210fedcba9876543210-den"),
	}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	if k.ec256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "den test issuer"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(1<<33, 0),
	}
	if k.edCertDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.ed.Public(), k.ed); err != nil {
		return nil, err
	}
	return k, nil
})

func fixture(tb testing.TB) *testKeys {
	tb.Helper()
	k, err := fixtureOnce()
	if err != nil {
		tb.Fatalf("generating test keys: %v", err)
	}
	return k
}

// now is the tests' fixed clock.
var now = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func nowFunc() time.Time { return now }

// sign makes a token with alg, claims, extra header fields and key.
func sign(tb testing.TB, alg string, claims jwt.MapClaims, header map[string]any, key any) string {
	tb.Helper()
	t := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	for k, v := range header {
		t.Header[k] = v
	}
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatalf("signing %s: %v", alg, err)
	}
	return s
}

// pemOf encodes a public key as a PKIX PUBLIC KEY block.
func pemOf(tb testing.TB, pub crypto.PublicKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// writeFile writes data to a file in tb's temporary folder and returns
// its path.
func writeFile(tb testing.TB, name string, data []byte) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// writePEM writes the fixture's public keys as one PEM file: RSA as PKIX,
// the P-256 and P-384 keys as PKIX, Ed25519 inside a certificate, and the
// second RSA key as PKCS #1, so every block type LoadKeys reads is in it.
// Not rsa2 when withRSA2 is false.
func writePEM(tb testing.TB, k *testKeys, withRSA2 bool) string {
	tb.Helper()
	var data []byte
	data = append(data, pemOf(tb, &k.rsa.PublicKey)...)
	data = append(data, pemOf(tb, &k.ec256.PublicKey)...)
	data = append(data, pemOf(tb, &k.ec384.PublicKey)...)
	data = append(data, "some text between blocks, as openssl writes\n"...)
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.edCertDER})...)
	if withRSA2 {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa2.PublicKey)})...)
	}
	return writeFile(tb, "keys.pem", data)
}

// writeJWKS writes the fixture's public keys as a JWKS with kids rsa-1,
// rsa-2, ed-1 and ec-1 (P-256, alg ES256), plus keys LoadKeys must skip:
// one of an unknown type and one for encryption.
func writeJWKS(tb testing.TB, k *testKeys) string {
	tb.Helper()
	var raw []json.RawMessage
	for _, jwk := range []jose.JSONWebKey{
		{Key: &k.rsa.PublicKey, KeyID: "rsa-1", Use: "sig"},
		{Key: &k.rsa2.PublicKey, KeyID: "rsa-2"},
		{Key: k.ed.Public(), KeyID: "ed-1"},
		{Key: &k.ec256.PublicKey, KeyID: "ec-1", Algorithm: "ES256"},
		{Key: &k.ec384.PublicKey, KeyID: "enc-1", Use: "enc"},
	} {
		b, err := jwk.MarshalJSON()
		if err != nil {
			tb.Fatal(err)
		}
		raw = append(raw, b)
	}
	raw = append(raw, json.RawMessage(`{"kty":"FUTURE","kid":"later","x":"AAAA"}`))
	data, err := json.Marshal(map[string]any{"keys": raw})
	if err != nil {
		tb.Fatal(err)
	}
	return writeFile(tb, "jwks.json", data)
}

func loadKeys(tb testing.TB, path string) []Key {
	tb.Helper()
	keys, err := LoadKeys(path)
	if err != nil {
		tb.Fatalf("LoadKeys: %v", err)
	}
	return keys
}

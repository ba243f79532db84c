package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestLoadKeysPEM(t *testing.T) {
	k := fixture(t)
	keys := loadKeys(t, writePEM(t, k, true))
	if len(keys) != 5 {
		t.Fatalf("got %d keys, want 5", len(keys))
	}
	want := []func(any) bool{
		func(p any) bool { return k.rsa.PublicKey.Equal(p) },
		func(p any) bool { return k.ec256.PublicKey.Equal(p) },
		func(p any) bool { return k.ec384.PublicKey.Equal(p) },
		func(p any) bool { return k.ed.Public().(ed25519.PublicKey).Equal(p) },
		func(p any) bool { return k.rsa2.PublicKey.Equal(p) },
	}
	for i, key := range keys {
		if key.ID != "" || key.Alg != "" {
			t.Errorf("key %d: PEM key with id %q alg %q", i, key.ID, key.Alg)
		}
		if !want[i](key.Public) {
			t.Errorf("key %d is not the one written (%T)", i, key.Public)
		}
	}
}

func TestLoadKeysJWKS(t *testing.T) {
	k := fixture(t)
	keys := loadKeys(t, writeJWKS(t, k))
	var ids []string
	for _, key := range keys {
		ids = append(ids, key.ID+":"+key.Alg)
	}
	// enc-1 (use enc) and the unknown kty are skipped.
	if got := strings.Join(ids, " "); got != "rsa-1: rsa-2: ed-1: ec-1:ES256" {
		t.Errorf("keys %s", got)
	}
}

func TestLoadKeysRefuses(t *testing.T) {
	k := fixture(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(k.ed)
	if err != nil {
		t.Fatal(err)
	}
	p224DER, err := x509.MarshalPKIXPublicKey(&p224.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty", "", "neither a JWKS document nor PEM"},
		{"garbage", "hello", "neither a JWKS document nor PEM"},
		{"private PEM", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})), "private key"},
		{"RSA private PEM", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)})), "private key"},
		{"unknown block", string(pem.EncodeToMemory(&pem.Block{Type: "DH PARAMETERS", Bytes: []byte{1}})), "unsupported type"},
		{"broken block", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}})), "PEM block 0"},
		{"small RSA", string(pemOf(t, &small.PublicKey)), "at least 2048"},
		{"P-224", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: p224DER})), "not supported"},
		{"JWKS not JSON", "{keys", "JWKS"},
		{"JWKS empty", `{"keys":[]}`, "no public keys"},
		{"JWKS only unknown", `{"keys":[{"kty":"FUTURE"}]}`, "no public keys"},
		{"JWKS symmetric", `{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}`, "symmetric"},
		{"JWKS private", `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"e","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}`, "private key"},
		{"JWKS broken RSA", `{"keys":[{"kty":"RSA","n":"AQ"}]}`, "JWKS key 0"},
		{"JWKS alg not fitting", `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"e","alg":"RS256","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`, "does not fit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadKeys(writeFile(t, "keys", []byte(tc.data)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadKeys = %v, want an error with %q", err, tc.want)
			}
		})
	}
	if _, err := LoadKeys(t.TempDir() + "/missing.pem"); err == nil {
		t.Error("LoadKeys of a missing file succeeded")
	}
}

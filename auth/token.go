package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Tokens are JSON Web Tokens signed with Ed25519 (alg EdDSA), with the
// claims of the token specification
// (https://distribution.github.io/distribution/spec/auth/jwt/), so that any
// verifier of registry tokens can read them. They are built with the
// standard library: the format is three base64url parts, and verifying
// accepts exactly one algorithm and one key, which leaves no room for the
// algorithm confusions of general JOSE libraries.

// Token uses: access tokens carry no "use" claim.
const (
	useAccess  = ""
	useRefresh = "refresh"
)

// maxTokenLen bounds a token before any decoding.
const maxTokenLen = 16 << 10

// claims are the claims of regcache's tokens.
type claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  string   `json:"aud"`
	Expiry    int64    `json:"exp"`
	NotBefore int64    `json:"nbf"`
	IssuedAt  int64    `json:"iat"`
	ID        string   `json:"jti"`
	Access    []Access `json:"access,omitempty"`
	// Use is "refresh" on refresh tokens, which grant nothing themselves.
	Use string `json:"use,omitempty"`
	// Password, on refresh tokens, fingerprints the user's password hash
	// when it was issued: another password ends the token.
	Password string `json:"pwd,omitempty"`
}

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
	Kid string `json:"kid,omitempty"`
}

// signer signs and verifies tokens with one Ed25519 key.
type signer struct {
	key ed25519.PrivateKey
	pub ed25519.PublicKey
	kid string
}

func newSigner(key ed25519.PrivateKey) signer {
	pub := key.Public().(ed25519.PublicKey)
	return signer{key: key, pub: pub, kid: KeyID(pub)}
}

// KeyID names a public key in tokens' kid header: the first 16 bytes of
// its SHA-256, base64url.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

var b64 = base64.RawURLEncoding

func (s signer) sign(c claims) (string, error) {
	h, err := json.Marshal(header{Alg: "EdDSA", Typ: "JWT", Kid: s.kid})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	return signed + "." + b64.EncodeToString(ed25519.Sign(s.key, []byte(signed))), nil
}

// errMalformed is the reason for a token that is not a JWT at all.
var errMalformed = errors.New("malformed")

// verify checks a token's form and signature and returns its claims.
func (s signer) verify(tok string) (claims, error) {
	var c claims
	if len(tok) > maxTokenLen {
		return c, errMalformed
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, errMalformed
	}
	var h header
	raw, err := b64.DecodeString(parts[0])
	if err != nil || json.Unmarshal(raw, &h) != nil {
		return c, errMalformed
	}
	if h.Alg != "EdDSA" || (h.Kid != "" && h.Kid != s.kid) {
		return c, errors.New("not signed by this registry's key")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || !ed25519.Verify(s.pub, []byte(parts[0]+"."+parts[1]), sig) {
		return c, errors.New("the signature does not verify")
	}
	raw, err = b64.DecodeString(parts[1])
	if err != nil {
		return c, errMalformed
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("unreadable claims: %v", err)
	}
	return c, nil
}

// newID returns a random token ID.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// MinSecretSize is the least number of bytes of the shared peer secret.
const MinSecretSize = 32

// TokenTTL is how long a signed peer request is accepted.
const TokenTTL = 30 * time.Second

// authScheme prefixes the Authorization header of peer requests.
const authScheme = "RegcachePeer "

// Sentinel errors of token verification. Test with errors.Is.
var (
	// ErrNoToken: the request carries no peer token (401).
	ErrNoToken = errors.New("no peer token")
	// ErrBadToken: the token is malformed, expired, or signed for another
	// request or with another secret (403).
	ErrBadToken = errors.New("invalid peer token")
)

// ReadSecret reads the shared secret of the peer channel from path. Every
// replica holds the same file (e.g. a mounted Secret). Surrounding white
// space is dropped; at least MinSecretSize bytes must remain. The secret's
// value is never part of an error.
func ReadSecret(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("peer secret file: none given (--peer-secret-file, cluster.secretFile): " +
			"replicas authenticate each other with a shared secret of at least 32 bytes, e.g. head -c 48 /dev/urandom | base64 > peer.secret")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("peer secret file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(raw)))
	if len(secret) < MinSecretSize {
		return nil, fmt.Errorf("peer secret file %s: %d bytes; want at least %d, e.g. head -c 48 /dev/urandom | base64 > %s",
			path, len(secret), MinSecretSize, path)
	}
	return secret, nil
}

// Sign sets the Authorization header of req as the replica sender would,
// with the shared secret: for tools and tests speaking to a peer channel.
func Sign(req *http.Request, secret []byte, sender string) {
	signer{secret: secret, now: time.Now}.sign(req, sender)
}

// signer signs and verifies peer requests with the shared secret. A token
// binds the method, the path and query, the sender's advertised address
// and an expiry: it cannot be replayed on another request line, by
// another sender name, nor after it expired.
type signer struct {
	secret []byte
	now    func() time.Time
}

func (s signer) mac(method, uri, sender string, expiry int64) []byte {
	m := hmac.New(sha256.New, s.secret)
	fmt.Fprintf(m, "%s\n%s\n%s\n%d", method, uri, sender, expiry)
	return m.Sum(nil)
}

// sign sets the Authorization header of req, sent by sender.
func (s signer) sign(req *http.Request, sender string) {
	expiry := s.now().Add(TokenTTL).Unix()
	mac := s.mac(req.Method, req.URL.RequestURI(), sender, expiry)
	req.Header.Set("Authorization", fmt.Sprintf("%s%s;%d;%s", authScheme, sender, expiry, hex.EncodeToString(mac)))
}

// verify checks the token of req and returns the sender it names.
func (s signer) verify(req *http.Request) (string, error) {
	h := req.Header.Get("Authorization")
	if h == "" {
		return "", ErrNoToken
	}
	rest, ok := strings.CutPrefix(h, authScheme)
	if !ok {
		return "", fmt.Errorf("%w: want the %q scheme", ErrBadToken, strings.TrimSpace(authScheme))
	}
	parts := strings.Split(rest, ";")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: malformed", ErrBadToken)
	}
	sender := parts[0]
	expiry, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", fmt.Errorf("%w: malformed expiry", ErrBadToken)
	}
	mac, err := hex.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("%w: malformed signature", ErrBadToken)
	}
	now := s.now()
	// Checked after the signature would be cheaper, but a token's expiry
	// is no secret: refusing it first gives the clearer error.
	if exp := time.Unix(expiry, 0); !now.Before(exp) || exp.After(now.Add(TokenTTL+time.Minute)) {
		return "", fmt.Errorf("%w: expired or too far in the future (clocks of the replicas apart?)", ErrBadToken)
	}
	if !hmac.Equal(mac, s.mac(req.Method, req.URL.RequestURI(), sender, expiry)) {
		return "", fmt.Errorf("%w: signature does not match (another secret, or signed for another request)", ErrBadToken)
	}
	return sender, nil
}

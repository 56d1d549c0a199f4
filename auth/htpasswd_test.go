package auth_test

import (
	"bytes"
	"crypto/ed25519"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/regcache/regcache/auth"
)

// Only bcrypt hashes are accepted: anything else is refused at load,
// naming the file, the line, the user and the kind, never the hash.
func TestHtpasswdRefusesOtherHashes(t *testing.T) {
	t.Parallel()
	good, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	for _, tc := range []struct {
		name, line, want string
	}{
		{"apr1", "carol:$apr1$abcdefgh$0123456789012345678901", `line 3: user "carol": the password hash is Apache MD5 ($apr1$); only bcrypt`},
		{"sha1", "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", `line 3: user "carol": the password hash is SHA-1 ({SHA})`},
		{"crypt", "carol:abJnggxhB/yWI", `line 3: user "carol": the password hash is DES crypt`},
		{"sha512-crypt", "carol:$6$salt$hash", `line 3: user "carol": the password hash is SHA-512-crypt ($6$)`},
		{"plain", "carol:hunter2hunter2", `line 3: user "carol": the password hash is plain text`},
		{"no colon", "carol hunter2", `line 3: want user:bcrypt-hash`},
		{"duplicate", "alice:" + string(good), `line 3: user "alice" is also on line 1`},
		{"broken bcrypt", "carol:$2y$05$short", `line 3: user "carol": malformed bcrypt hash`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "htpasswd")
			content := "alice:" + string(good) + "\n# a comment\n" + tc.line + "\n"
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := auth.LoadUsers(path, nil, discard())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v; want one naming %s and %q", err, path, tc.want)
			}
			if _, hash, _ := strings.Cut(tc.line, ":"); len(hash) > 6 && strings.Contains(err.Error(), hash) {
				t.Errorf("the error shows the hash: %v", err)
			}
		})
	}
}

// The file is reloaded when it changes; a broken edit keeps the users
// loaded before and is logged once.
func TestHtpasswdReload(t *testing.T) {
	t.Parallel()
	c := newClock()
	path := filepath.Join(t.TempDir(), "htpasswd")
	htpasswd(t, path, map[string]string{"alice": "a1"})
	var logs bytes.Buffer
	users, err := auth.LoadUsers(path, c.Now, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !users.Check("alice", "a1") || users.Check("alice", "") || users.Check("bob", "b1") {
		t.Fatal("checks of the first file")
	}
	// Replaced by rename, as a Kubernetes Secret update does.
	next := path + ".new"
	htpasswd(t, next, map[string]string{"alice": "a2", "bob": "b1"})
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	if !users.Check("alice", "a1") {
		t.Fatal("reloaded sooner than a second after the last look")
	}
	c.Advance(time.Second)
	if users.Check("alice", "a1") || !users.Check("alice", "a2") || !users.Check("bob", "b1") {
		t.Fatal("the changed file was not reloaded")
	}
	if err := os.WriteFile(path, []byte("alice:{SHA}x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		c.Advance(time.Second)
		if !users.Check("bob", "b1") {
			t.Fatal("a broken file replaced the users")
		}
	}
	if n := strings.Count(logs.String(), "htpasswd file not reloaded"); n != 1 {
		t.Errorf("the broken file was logged %d times; want once:\n%s", n, logs.String())
	}
}

// The signing key is generated once, mode 0600, and read back; a key of
// another kind is refused with what is accepted.
func TestSigningKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "token-signing.key")
	k1, created, err := auth.LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v); want 0600", fi.Mode().Perm(), err)
	}
	k2, created, err := auth.LoadOrCreateKey(path)
	if err != nil || created || !k1.Equal(k2) {
		t.Fatalf("reload: created %v, err %v, same %v", created, err, k1.Equal(k2))
	}
	var _ ed25519.PrivateKey = k2
	rsa := filepath.Join(t.TempDir(), "rsa.pem")
	os.WriteFile(rsa, []byte("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"), 0o600)
	if _, err := auth.LoadKey(rsa); err == nil || !strings.Contains(err.Error(), "Ed25519") {
		t.Errorf("an RSA key: %v", err)
	}
}

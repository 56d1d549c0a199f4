package registry_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/storage"
)

// The admin token alone cannot make regcache send a variable or file of
// its host to a server of the caller's choosing: credential sets name
// allowed login servers and reference allowed secret locations only.
func TestCredentialSetsAreConfined(t *testing.T) {
	t.Parallel()
	s := newCredStack(t)
	for _, tc := range []struct {
		name, body, field, value string
	}{
		{"login server not allowed", `{"name":"exfil","loginServer":"attacker.example","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`,
			"loginServer", "attacker.example"},
		{"any variable", `{"name":"exfil","loginServer":"docker.io","usernameSecretIdentifier":"env://HOME","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`,
			"usernameSecretIdentifier", "env://HOME"},
		{"the prefix alone", `{"name":"exfil","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_"}`,
			"passwordSecretIdentifier", "env://REGCACHE_SECRET_"},
		{"any file", `{"name":"exfil","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"file:///etc/passwd"}`,
			"passwordSecretIdentifier", "file:///etc/passwd"},
		{"a sibling of the secrets directory", `{"name":"exfil","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"file:///run/secrets-other/x"}`,
			"passwordSecretIdentifier", "file:///run/secrets-other/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := admin(t, s, "POST", setsPath, tc.body)
			var e adminError
			json.Unmarshal(body, &e)
			if resp.StatusCode != 400 || e.Error.Code != "INVALID_FIELD" || e.Error.Field != tc.field || e.Error.Value != tc.value {
				t.Fatalf("%d %s; want 400 INVALID_FIELD on %s=%s", resp.StatusCode, body, tc.field, tc.value)
			}
		})
	}
	if resp, body := admin(t, s, "GET", setsPath+"/exfil", ""); resp.StatusCode != 404 {
		t.Errorf("a refused set exists: %d %s", resp.StatusCode, body)
	}
}

// A file reference inside an allowed directory that leads out of it
// through a symlink is not read.
func TestFileSecretSymlinkEscape(t *testing.T) {
	t.Parallel()
	dir, outside := t.TempDir(), t.TempDir()
	secret := filepath.Join(outside, "host-secret")
	if err := os.WriteFile(secret, []byte("host-s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "password")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user"), []byte("u"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newManagerIn(t, credentials.SecretLocations{FileDirs: []string{dir}})
	set, err := m.Create(t.Context(), credentials.Set{Name: "linked", LoginServer: "docker.io",
		UsernameSecretRef: "file://" + filepath.Join(dir, "user"), PasswordSecretRef: "file://" + filepath.Join(dir, "password")})
	if err != nil {
		t.Fatal(err)
	}
	if set.Status.State != credentials.StateUnhealthy || !strings.Contains(set.Status.Reason, "symlink") {
		t.Errorf("status %+v; want Unhealthy naming the symlink escape", set.Status)
	}
	if _, err := m.Authenticator(t.Context(), "linked"); err == nil {
		t.Errorf("the secret behind a symlink out of the secrets directory was resolved")
	}
}

// A registry holds at most credentials.MaxSets sets.
func TestCredentialSetLimit(t *testing.T) {
	t.Parallel()
	s := newCredStack(t)
	existing := len(listSets(t, s))
	for i := existing; i < credentials.MaxSets; i++ {
		body := fmt.Sprintf(`{"name":"set-%03d","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`, i)
		if resp, b := admin(t, s, "POST", setsPath, body); resp.StatusCode != 201 {
			t.Fatalf("set %d: %d %s", i, resp.StatusCode, b)
		}
	}
	resp, body := admin(t, s, "POST", setsPath, `{"name":"one-too-many","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`)
	var e adminError
	json.Unmarshal(body, &e)
	if resp.StatusCode != 409 || e.Error.Code != "LIMIT_REACHED" {
		t.Fatalf("set %d: %d %s; want 409 LIMIT_REACHED", credentials.MaxSets+1, resp.StatusCode, body)
	}
}

// newManagerIn is a credentials.Manager with the given secret locations
// whose docker.io is a closed port.
func newManagerIn(t *testing.T, locs credentials.SecretLocations) *credentials.Manager {
	t.Helper()
	endpoints, err := cache.NewEndpoints(map[string]string{"docker.io": "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	m, err := credentials.NewManager(t.Context(), credentials.Options{Records: meta, Endpoints: endpoints,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), SecretLocations: locs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// listSets returns the credential sets the admin API lists.
func listSets(t *testing.T, s *stack) []credentials.Set {
	t.Helper()
	resp, body := admin(t, s, "GET", setsPath, "")
	var sets []credentials.Set
	if resp.StatusCode != 200 || json.Unmarshal(body, &sets) != nil {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	return sets
}

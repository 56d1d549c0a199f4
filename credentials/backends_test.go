package credentials_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
)

// resolveSet creates a set with the given password reference (and a
// username that resolves) and returns what Authenticator gives, plus the
// set's status.
func resolveSet(t *testing.T, lookupEnv func(string) (string, bool), passRef string) (string, credentials.Status, error) {
	t.Helper()
	logger, logs := newLog()
	endpoints, _ := cache.NewEndpoints(map[string]string{"registry.test": "http://127.0.0.1:1"})
	var locs credentials.SecretLocations
	if p, ok := strings.CutPrefix(passRef, "file://"); ok {
		locs.FileDirs = []string{filepath.Dir(p)}
	}
	m, err := credentials.NewManager(t.Context(), credentials.Options{
		Records: newMemRecords(), Endpoints: endpoints, Log: logger, LookupEnv: lookupEnv, CheckTimeout: 2 * time.Second,
		SecretLocations: locs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(t.Context(), credentials.Set{Name: "the-set", LoginServer: "registry.test", UsernameSecretRef: "env://REGCACHE_SECRET_USER", PasswordSecretRef: passRef}); err != nil {
		t.Fatalf("create: %v", err)
	}
	auth, err := m.Authenticator(t.Context(), "the-set")
	s, _ := m.Get(t.Context(), "the-set")
	if err != nil {
		if !strings.Contains(err.Error(), `"the-set"`) {
			t.Errorf("error %q does not name the set", err)
		}
		if s.Status.State != credentials.StateUnhealthy {
			t.Errorf("status %+v after a failed resolution, want Unhealthy", s.Status)
		}
		for _, secret := range []string{"the-username", "s3cr3t"} {
			if strings.Contains(err.Error(), secret) || strings.Contains(s.Status.Reason, secret) || strings.Contains(logs.String(), secret) {
				t.Errorf("a secret value appears in the error, status or log: %v / %s / %s", err, s.Status.Reason, logs)
			}
		}
		return "", s.Status, err
	}
	cfg, err := auth.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Username != "the-username" {
		t.Errorf("username %q", cfg.Username)
	}
	if strings.Contains(logs.String(), cfg.Password) {
		t.Errorf("the password appears in the log:\n%s", logs)
	}
	return cfg.Password, s.Status, nil
}

func envWith(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		if k == "REGCACHE_SECRET_USER" {
			return "the-username", true
		}
		v, ok := kv[k]
		return v, ok
	}
}

func TestFileBackend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return "file://" + p
	}
	plain := write("plain", "s3cr3t", 0o600)
	newline := write("newline", "s3cr3t\n", 0o600)
	crlf := write("crlf", "s3cr3t\r\n", 0o600)
	twoNewlines := write("two", "s3cr3t\n\n", 0o600)
	empty := write("empty", "", 0o600)
	onlyNewline := write("only-newline", "\n", 0o600)
	big := write("big", strings.Repeat("x", 64<<10+1), 0o600)
	unreadable := write("unreadable", "s3cr3t", 0o000)
	if err := os.Mkdir(filepath.Join(dir, "a-dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ref, want string
		err             error
		reason          string
	}{
		{"plain", plain, "s3cr3t", nil, ""},
		{"one trailing newline is dropped", newline, "s3cr3t", nil, ""},
		{"CRLF is dropped", crlf, "s3cr3t", nil, ""},
		{"only one newline is dropped", twoNewlines, "s3cr3t\n", nil, ""},
		{"missing", "file://" + filepath.Join(dir, "nope"), "", credentials.ErrSecretNotFound, "file not found: " + filepath.Join(dir, "nope")},
		{"empty", empty, "", credentials.ErrInvalidSecret, "is empty"},
		{"only a newline", onlyNewline, "", credentials.ErrInvalidSecret, "is empty"},
		{"too large", big, "", credentials.ErrInvalidSecret, "larger than"},
		{"directory", "file://" + filepath.Join(dir, "a-dir"), "", credentials.ErrInvalidSecret, "is a directory"},
	}
	if os.Getuid() != 0 { // root reads any file
		tests = append(tests, struct {
			name, ref, want string
			err             error
			reason          string
		}{"permission denied", unreadable, "", credentials.ErrPermissionDenied, "permission denied"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, st, err := resolveSet(t, envWith(nil), tc.ref)
			if tc.err == nil {
				if err != nil || got != tc.want {
					t.Fatalf("resolved %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.reason) || !strings.Contains(st.Reason, tc.reason) {
				t.Fatalf("err %v, status %+v; want %v with %q", err, st, tc.err, tc.reason)
			}
		})
	}
}

func TestFileBackendRereadsRotatedFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "password")
	os.WriteFile(p, []byte("first-s3cr3t"), 0o600)
	logger, _ := newLog()
	endpoints, _ := cache.NewEndpoints(map[string]string{"127.0.0.1:1": "http://127.0.0.1:1"})
	m, err := credentials.NewManager(t.Context(), credentials.Options{Records: newMemRecords(), Endpoints: endpoints, Log: logger, LookupEnv: envWith(nil), CheckTimeout: time.Second,
		SecretLocations: credentials.SecretLocations{FileDirs: []string{dir}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(t.Context(), credentials.Set{Name: "rotating", LoginServer: "127.0.0.1:1", UsernameSecretRef: "env://REGCACHE_SECRET_USER", PasswordSecretRef: "file://" + p}); err != nil {
		t.Fatal(err)
	}
	password := func() string {
		a, err := m.Authenticator(t.Context(), "rotating")
		if err != nil {
			t.Fatal(err)
		}
		c, _ := a.Authorization()
		return c.Password
	}
	if got := password(); got != "first-s3cr3t" {
		t.Fatalf("password %q", got)
	}
	// Kubernetes updates a mounted Secret by swapping a symlink; Docker
	// replaces the file. Either way: a new file at the same path.
	tmp := filepath.Join(dir, "password.new")
	os.WriteFile(tmp, []byte("second-s3cr3t\n"), 0o600)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if got := password(); got != "first-s3cr3t" {
		t.Fatalf("within the cache TTL the cached value is used; got %q", got)
	}
	m.Refused("rotating", "127.0.0.1:1", false) // the upstream said 401
	if got := password(); got != "second-s3cr3t" {
		t.Fatalf("after a refusal the file is read again; got %q", got)
	}
}

func TestEnvBackend(t *testing.T) {
	t.Parallel()
	env := envWith(map[string]string{"REGCACHE_SECRET_TOKEN": "s3cr3t", "REGCACHE_SECRET_EMPTY": ""})
	tests := []struct {
		name, ref, want string
		err             error
		reason          string
	}{
		{"set", "env://REGCACHE_SECRET_TOKEN", "s3cr3t", nil, ""},
		{"unset", "env://REGCACHE_SECRET_DOCKERHUB_TOKEN", "", credentials.ErrSecretNotFound, "env: REGCACHE_SECRET_DOCKERHUB_TOKEN is not set"},
		{"empty", "env://REGCACHE_SECRET_EMPTY", "", credentials.ErrInvalidSecret, "env: REGCACHE_SECRET_EMPTY is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, st, err := resolveSet(t, env, tc.ref)
			if tc.err == nil {
				if err != nil || got != tc.want {
					t.Fatalf("resolved %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.reason) || !strings.Contains(st.Reason, tc.reason) {
				t.Fatalf("err %v, status %+v; want %v with %q", err, st, tc.err, tc.reason)
			}
		})
	}
}

func TestVaultNotConfigured(t *testing.T) {
	t.Parallel()
	_, st, err := resolveSet(t, envWith(nil), "vault://secret/hub#password")
	if !errors.Is(err, credentials.ErrBackendUnavailable) || !strings.Contains(st.Reason, "VAULT_ADDR") {
		t.Fatalf("err %v, status %+v; want ErrBackendUnavailable saying how to configure Vault", err, st)
	}
	v, err := credentials.NewVault(credentials.VaultConfig{}, func(string) string { return "" }, nil)
	if v != nil || err != nil {
		t.Fatalf("NewVault without an address = %v, %v; want nil, nil", v, err)
	}
}

package credentials_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/e2e/peers"
	"github.com/regcache/regcache/e2e/vaultserver"
)

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestVaultReal runs the vault backend's tests with the real
// hashicorp/vault/api client against a real Vault-API server: OpenBao
// (../shared/openbao/bao) started on loopback for the test, or the Vault
// that VAULT_ADDR and VAULT_TOKEN name (a token allowed to write secret/,
// policies, tokens and auth methods; KV v2 at secret/). Without either it
// skips, except in CI, where it fails.
func TestVaultReal(t *testing.T) {
	t.Parallel()
	v := peers.StartVault(t)
	ctx := t.Context()
	secrets := map[string]string{"username": "vault-user-" + randomHex(4), "password": "vault-pass-" + randomHex(8)}
	hubData := func(password string) map[string]any {
		return map[string]any{"username": secrets["username"], "password": password, "pin": 12345, "flag": true, "empty": ""}
	}
	hubPath := v.PutSecret(t, "hub", hubData(secrets["password"]))
	otherPath := v.PutSecret(t, "other", map[string]any{"password": "other-" + randomHex(8)})
	ref := func(name, field string) string { return "vault://secret/" + v.Prefix + "/" + name + "#" + field }
	hub := credentials.Set{Name: "hub", UsernameSecretRef: ref("hub", "username"), PasswordSecretRef: ref("hub", "password")}
	extra := credentials.Set{Name: "extra", UsernameSecretRef: ref("missing", "username"), PasswordSecretRef: ref("hub", "nofield")}
	// The policy regcache prints is what the tokens get, nothing more.
	printed, ok := credentials.Policy(hub, extra)
	if !ok {
		t.Fatal("no policy")
	}
	policy := v.PutPolicy(t, "read", printed)
	tokenFile := func(t *testing.T, token string) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	logger, logs := newLog()
	newVault := func(t *testing.T, cfg credentials.VaultConfig, log *slog.Logger) *credentials.Vault {
		t.Helper()
		return newTestVault(t, v.Addr, cfg, log)
	}
	resolve := func(vault *credentials.Vault, raw string) (string, error) {
		r, err := credentials.ParseRef("passwordSecretIdentifier", raw)
		if err != nil {
			t.Fatal(err)
		}
		return vault.Resolve(ctx, r)
	}
	allSecrets := func() []string { return []string{secrets["username"], secrets["password"], "12345"} }
	noSecretIn := func(t *testing.T, what, s string) {
		t.Helper()
		for _, secret := range allSecrets() {
			if strings.Contains(s, secret) {
				t.Errorf("%s contains a secret value: %s", what, s)
			}
		}
	}

	t.Run("token with the printed policy", func(t *testing.T) {
		token := v.NewToken(t, &api.TokenCreateRequest{Policies: []string{policy}, TTL: "1h"})
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, token)}, logger)
		for _, f := range []string{"username", "password"} {
			if got, err := resolve(vault, ref("hub", f)); err != nil || got != secrets[f] {
				t.Fatalf("%s: %v (value matches: %v)", f, err, got == secrets[f])
			}
		}
		if got, err := resolve(vault, ref("hub", "pin")); err != nil || got != "12345" {
			t.Errorf("a number field resolves to its text: %v", err)
		}
		errCases := []struct {
			name, ref string
			err       error
			msg       string
		}{
			{"path outside the policy", ref("other", "password"), credentials.ErrPermissionDenied, "vault: permission denied reading secret/data/" + otherPath},
			{"missing secret", ref("missing", "username"), credentials.ErrSecretNotFound, "vault: no secret at secret/data/" + v.Prefix + "/missing"},
			{"missing field", ref("hub", "nofield"), credentials.ErrSecretNotFound, `has no field "nofield"`},
			{"boolean field", ref("hub", "flag"), credentials.ErrInvalidSecret, `field "flag" of secret/data/` + hubPath + " is a boolean"},
			{"empty field", ref("hub", "empty"), credentials.ErrInvalidSecret, `field "empty" of secret/data/` + hubPath + " is empty"},
		}
		for _, tc := range errCases {
			_, err := resolve(vault, tc.ref)
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: %v, want %v with %q", tc.name, err, tc.err, tc.msg)
			}
			noSecretIn(t, tc.name+" error", err.Error())
		}
		// The server enforces the printed policy: read on exactly the
		// referenced data paths, nothing else.
		c := v.Client(t, token)
		if s, err := c.Logical().ReadWithContext(ctx, "secret/data/"+hubPath); err != nil || s == nil {
			t.Errorf("read secret/data/%s with the policy: %v", hubPath, err)
		}
		denied := map[string]func() error{
			"read secret/data/" + otherPath: func() error { _, err := c.Logical().ReadWithContext(ctx, "secret/data/"+otherPath); return err },
			"read secret/metadata/" + hubPath: func() error {
				_, err := c.Logical().ReadWithContext(ctx, "secret/metadata/"+hubPath)
				return err
			},
			"write secret/data/" + hubPath: func() error {
				_, err := c.Logical().WriteWithContext(ctx, "secret/data/"+hubPath, map[string]any{"data": map[string]any{"password": "x"}})
				return err
			},
		}
		for what, do := range denied {
			var re *api.ResponseError
			if err := do(); !errors.As(err, &re) || re.StatusCode != 403 {
				t.Errorf("%s with only the printed policy: %v, want 403 permission denied", what, err)
			}
		}
		// Rotation: a new version is read after the cache is dropped.
		rotated := "vault-pass-rotated-" + randomHex(8)
		if _, err := v.Admin.KVv2("secret").Put(ctx, hubPath, hubData(rotated)); err != nil {
			t.Fatal(err)
		}
		if got, err := resolve(vault, ref("hub", "password")); err != nil || got != rotated {
			t.Fatalf("after rotation: %v (new value: %v)", err, got == rotated)
		}
		secrets["rotated"] = rotated
	})

	t.Run("token without the policy", func(t *testing.T) {
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, v.NewToken(t, &api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"}))}, logger)
		_, err := resolve(vault, ref("hub", "password"))
		want := "vault: permission denied reading secret/data/" + hubPath
		if !errors.Is(err, credentials.ErrPermissionDenied) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v, want %q", err, want)
		}
	})

	t.Run("revoked token is read again from the token file", func(t *testing.T) {
		first := v.NewToken(t, &api.TokenCreateRequest{Policies: []string{policy}, TTL: "1h"})
		file := tokenFile(t, first)
		vault := newVault(t, credentials.VaultConfig{TokenFile: file}, logger)
		if _, err := resolve(vault, ref("hub", "username")); err != nil {
			t.Fatal(err)
		}
		// A Vault agent rewrote the sink file; the old token was revoked.
		os.WriteFile(file, []byte(v.NewToken(t, &api.TokenCreateRequest{Policies: []string{policy}, TTL: "1h"})), 0o600)
		if err := v.Admin.Auth().Token().RevokeOrphanWithContext(ctx, first); err != nil {
			t.Fatal(err)
		}
		if got, err := resolve(vault, ref("hub", "username")); err != nil || got != secrets["username"] {
			t.Fatalf("after revocation: %v", err)
		}
	})

	t.Run("bad token", func(t *testing.T) {
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, "hvs.not-a-token")}, logger)
		_, err := resolve(vault, ref("hub", "username"))
		if !errors.Is(err, credentials.ErrPermissionDenied) || !strings.Contains(err.Error(), "was refused") {
			t.Fatalf("%v", err)
		}
		if strings.Contains(err.Error(), "hvs.not-a-token") {
			t.Errorf("the error repeats the token: %v", err)
		}
		vault = newVault(t, credentials.VaultConfig{TokenFile: filepath.Join(t.TempDir(), "none")}, logger)
		if _, err := resolve(vault, ref("hub", "username")); !errors.Is(err, credentials.ErrBackendUnavailable) || !strings.Contains(err.Error(), "vault.tokenFile") {
			t.Fatalf("missing token file: %v", err)
		}
	})

	// Token lifetimes are the server's, in whole seconds: these wait for
	// what the server reports (a renewal, a new login), not a fixed time.
	t.Run("token lifetime", func(t *testing.T) {
		t.Run("renewable token is renewed", func(t *testing.T) {
			t.Parallel()
			tok := v.NewToken(t, &api.TokenCreateRequest{Policies: []string{policy}, TTL: "2s", ExplicitMaxTTL: "1h"})
			firstExpiry := tokenExpiry(t, v.Admin, tok)
			vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, tok)}, logger)
			runVault(t, vault)
			if _, err := resolve(vault, ref("hub", "username")); err != nil {
				t.Fatal(err)
			}
			// Until the first TTL has passed, and the server says the
			// token was renewed (which it would not be without Run).
			waitFor(t, "the token renewed past its first TTL", func() bool {
				return time.Now().After(firstExpiry) && tokenExpiry(t, v.Admin, tok).After(firstExpiry)
			})
			if _, err := resolve(vault, ref("hub", "username")); err != nil {
				t.Fatalf("after the token's first TTL: %v", err)
			}
		})

		t.Run("approle logs in again at the maximum TTL", func(t *testing.T) {
			t.Parallel()
			mount, roleID, secretID := v.AppRole(t, "regcache", map[string]any{
				"token_policies": []string{policy}, "token_ttl": "2s", "token_max_ttl": "3s",
			})
			secretIDFile := filepath.Join(t.TempDir(), "secret-id")
			os.WriteFile(secretIDFile, []byte(secretID), 0o600)
			own, ownLogs := newLog()
			vault := newVault(t, credentials.VaultConfig{Auth: "approle", AppRoleMount: mount, RoleID: roleID, SecretIDFile: secretIDFile}, own)
			runVault(t, vault)
			logins := func() int { return strings.Count(ownLogs.String(), "logged in to vault") }
			if got, err := resolve(vault, ref("hub", "username")); err != nil || got != secrets["username"] {
				t.Fatalf("first resolution: %v", err)
			}
			// No resolution meanwhile: only Run can log in again.
			waitFor(t, "a second AppRole login", func() bool { return logins() >= 2 })
			// Resolutions through the next turnover all succeed.
			waitFor(t, "a third AppRole login", func() bool {
				if got, err := resolve(vault, ref("hub", "username")); err != nil || got != secrets["username"] {
					t.Fatalf("resolution during token turnover: %v", err)
				}
				return logins() >= 3
			})
			noSecretIn(t, "log", ownLogs.String())
			if strings.Contains(ownLogs.String(), secretID) {
				t.Errorf("the secret ID was logged")
			}
			// A wrong secret ID is refused with Vault's reason.
			os.WriteFile(secretIDFile, []byte("wrong"), 0o600)
			bad := newVault(t, credentials.VaultConfig{Auth: "approle", AppRoleMount: mount, RoleID: roleID, SecretIDFile: secretIDFile}, own)
			want := "approle login at auth/" + mount + "/login was refused"
			if _, err := resolve(bad, ref("hub", "username")); !errors.Is(err, credentials.ErrPermissionDenied) || !strings.Contains(err.Error(), want) {
				t.Fatalf("wrong secret ID: %v, want %q", err, want)
			}
		})
	})

	t.Run("deleted secret", func(t *testing.T) {
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, v.NewToken(t, &api.TokenCreateRequest{Policies: []string{policy}, TTL: "1h"}))}, logger)
		if err := v.Admin.KVv2("secret").Delete(ctx, hubPath); err != nil {
			t.Fatal(err)
		}
		_, err := resolve(vault, ref("hub", "password"))
		if !errors.Is(err, credentials.ErrSecretNotFound) {
			t.Fatalf("%v", err)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		vault := newTestVault(t, "http://127.0.0.1:1", credentials.VaultConfig{TokenFile: tokenFile(t, "x")}, logger)
		_, err := resolve(vault, ref("hub", "password"))
		if !errors.Is(err, credentials.ErrBackendUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("%v", err)
		}
	})
	for _, s := range []string{secrets["username"], secrets["password"], secrets["rotated"]} {
		if s != "" && strings.Contains(logs.String(), s) {
			t.Errorf("a secret value was logged:\n%s", logs)
		}
	}
}

// tokenExpiry is the expiry of token as the server reports it.
func tokenExpiry(t *testing.T, admin *api.Client, token string) time.Time {
	t.Helper()
	s, err := admin.Auth().Token().LookupWithContext(t.Context(), token)
	if err != nil {
		t.Fatalf("look the token up (expired: it was not renewed?): %v", err)
	}
	raw, _ := s.Data["expire_time"].(string)
	at, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		t.Fatalf("token expire_time %q: %v", raw, err)
	}
	return at
}

// waitFor polls cond until it holds; 30 s without fails the test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestVaultKubernetesAuth: regcache logs in with Vault's Kubernetes auth
// method and reads with the token it gets; a service-account token the
// server refuses is a permission error, and is never logged. It runs
// against the Vault-compatible server of e2e/vaultserver, because a real
// Vault validates the service-account token with a cluster's TokenReview
// API and there is no cluster here.
func TestVaultKubernetesAuth(t *testing.T) {
	t.Parallel()
	s := vaultserver.New()
	t.Cleanup(s.Close)
	admin, err := api.NewClient(&api.Config{Address: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	admin.SetToken(s.RootToken)
	password := "k8s-pass-" + randomHex(8)
	if _, err := admin.KVv2("secret").Put(t.Context(), "regcache/hub", map[string]any{"password": password}); err != nil {
		t.Fatal(err)
	}
	policy, _ := credentials.Policy(credentials.Set{Name: "hub", UsernameSecretRef: "env://REGCACHE_SECRET_U", PasswordSecretRef: "vault://secret/regcache/hub#password"})
	if err := admin.Sys().PutPolicy("regcache", policy); err != nil {
		t.Fatal(err)
	}
	jwt := "eyJ-test-jwt-" + randomHex(8)
	s.AddKubernetesRole("regcache", jwt, []string{"regcache"}, time.Hour, 0)
	jwtFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(jwtFile, []byte(jwt), 0o600)
	logger, logs := newLog()
	r, _ := credentials.ParseRef("passwordSecretIdentifier", "vault://secret/regcache/hub#password")
	vault := newTestVault(t, s.URL, credentials.VaultConfig{Auth: "kubernetes", KubernetesRole: "regcache", KubernetesTokenFile: jwtFile}, logger)
	if got, err := vault.Resolve(t.Context(), r); err != nil || got != password {
		t.Fatalf("%v", err)
	}
	if n := s.Count("login:kubernetes"); n != 1 {
		t.Errorf("%d Kubernetes logins, want 1", n)
	}
	os.WriteFile(jwtFile, []byte("another-jwt"), 0o600)
	other := newTestVault(t, s.URL, credentials.VaultConfig{Auth: "kubernetes", KubernetesRole: "regcache", KubernetesTokenFile: jwtFile}, logger)
	_, err = other.Resolve(t.Context(), r)
	if !errors.Is(err, credentials.ErrPermissionDenied) || !strings.Contains(err.Error(), "kubernetes login at auth/kubernetes/login was refused: permission denied") {
		t.Fatalf("wrong JWT: %v", err)
	}
	if strings.Contains(logs.String(), jwt) || strings.Contains(logs.String(), password) {
		t.Errorf("the service-account token or the secret was logged:\n%s", logs)
	}
}

// newTestVault returns the Vault backend for the server at addr, reading
// nothing from the environment; it is closed when the test ends.
func newTestVault(t *testing.T, addr string, cfg credentials.VaultConfig, log *slog.Logger) *credentials.Vault {
	t.Helper()
	cfg.Address = addr
	vault, err := credentials.NewVault(cfg, func(string) string { return "" }, log)
	if err != nil || vault == nil {
		t.Fatalf("NewVault: %v", err)
	}
	t.Cleanup(vault.Close)
	return vault
}

// runVault runs the token keeper until the test ends.
func runVault(t *testing.T, v *credentials.Vault) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestVaultConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  credentials.VaultConfig
		want string
	}{
		{credentials.VaultConfig{}, ""},
		{credentials.VaultConfig{Auth: "token", TokenFile: "/x"}, ""},
		{credentials.VaultConfig{Auth: "approle", RoleID: "r", SecretIDFile: "/s"}, ""},
		{credentials.VaultConfig{Auth: "approle", RoleIDFile: "/r", SecretIDFile: "/s"}, ""},
		{credentials.VaultConfig{Auth: "kubernetes", KubernetesRole: "regcache"}, ""},
		{credentials.VaultConfig{Auth: "approle", SecretIDFile: "/s"}, "roleId"},
		{credentials.VaultConfig{Auth: "approle", RoleID: "r"}, "secretIdFile"},
		{credentials.VaultConfig{Auth: "kubernetes"}, "kubernetesRole"},
		{credentials.VaultConfig{Auth: "token", RoleID: "r"}, "auth: approle"},
		{credentials.VaultConfig{Auth: "ldap"}, "want token, approle or kubernetes"},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

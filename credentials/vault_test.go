package credentials_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/e2e/vaultserver"
)

// vaultTarget is a Vault to run the backend tests against: the
// Vault-compatible test server, or a real Vault (VAULT_ADDR, VAULT_TOKEN).
type vaultTarget struct {
	addr   string
	admin  *api.Client // root (or sufficiently privileged) token
	prefix string      // every secret and policy of this run lives under it
	server *vaultserver.Server
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newVaultTarget(t *testing.T, addr, token string, server *vaultserver.Server) *vaultTarget {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	v := &vaultTarget{addr: addr, admin: c, prefix: "regcache-test-" + randomHex(4), server: server}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, p := range []string{"hub", "other", "missing"} {
			c.KVv2("secret").DeleteMetadata(ctx, v.prefix+"/"+p)
		}
		c.Sys().DeletePolicy(v.prefix)
	})
	return v
}

// TestVault runs the vault backend's tests with the real hashicorp/vault/api
// client against the Vault-compatible server of e2e/vaultserver.
func TestVault(t *testing.T) {
	t.Parallel()
	s := vaultserver.New()
	t.Cleanup(s.Close)
	runVaultSuite(t, newVaultTarget(t, s.URL, s.RootToken, s))
}

// TestVaultReal runs the same tests against a real Vault when VAULT_ADDR and
// VAULT_TOKEN are set (a token allowed to write secret/, policies, tokens
// and AppRole roles, e.g. a dev server's root token; KV v2 at secret/). It
// is the one test that skips in CI.
func TestVaultReal(t *testing.T) {
	t.Parallel()
	addr, token := os.Getenv("VAULT_ADDR"), os.Getenv("VAULT_TOKEN")
	if addr == "" || token == "" {
		t.Skip("VAULT_ADDR and VAULT_TOKEN are not set: no real Vault to test against")
	}
	runVaultSuite(t, newVaultTarget(t, addr, token, nil))
}

func runVaultSuite(t *testing.T, v *vaultTarget) {
	ctx := t.Context()
	secrets := map[string]string{"username": "vault-user-" + randomHex(4), "password": "vault-pass-" + randomHex(8)}
	if _, err := v.admin.KVv2("secret").Put(ctx, v.prefix+"/hub", map[string]any{
		"username": secrets["username"], "password": secrets["password"], "pin": 12345, "flag": true, "empty": "",
	}); err != nil {
		t.Fatalf("write secret: %v", err)
	}
	if _, err := v.admin.KVv2("secret").Put(ctx, v.prefix+"/other", map[string]any{"password": "other-" + randomHex(8)}); err != nil {
		t.Fatalf("write secret: %v", err)
	}
	ref := func(path, field string) string { return "vault://secret/" + v.prefix + "/" + path + "#" + field }
	hub := credentials.Set{Name: "hub", UsernameSecretRef: ref("hub", "username"), PasswordSecretRef: ref("hub", "password")}
	extra := credentials.Set{Name: "extra", UsernameSecretRef: ref("missing", "username"), PasswordSecretRef: ref("hub", "nofield")}
	// The policy regcache prints is what the token gets, nothing more.
	policy, ok := credentials.Policy(hub, extra)
	if !ok {
		t.Fatal("no policy")
	}
	if err := v.admin.Sys().PutPolicy(v.prefix, policy); err != nil {
		t.Fatalf("write the printed policy: %v", err)
	}
	newToken := func(t *testing.T, req *api.TokenCreateRequest) string {
		t.Helper()
		s, err := v.admin.Auth().Token().Create(req)
		if err != nil {
			t.Fatalf("create token: %v", err)
		}
		return s.Auth.ClientToken
	}
	tokenFile := func(t *testing.T, token string) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	logger, logs := newLog()
	newVault := func(t *testing.T, cfg credentials.VaultConfig) *credentials.Vault {
		t.Helper()
		cfg.Address = v.addr
		vault, err := credentials.NewVault(cfg, func(string) string { return "" }, logger)
		if err != nil || vault == nil {
			t.Fatalf("NewVault: %v", err)
		}
		return vault
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
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, newToken(t, &api.TokenCreateRequest{Policies: []string{v.prefix}, TTL: "1h"}))})
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
			{"path outside the policy", ref("other", "password"), credentials.ErrPermissionDenied, "vault: permission denied reading secret/data/" + v.prefix + "/other"},
			{"missing secret", ref("missing", "username"), credentials.ErrSecretNotFound, "vault: no secret at secret/data/" + v.prefix + "/missing"},
			{"missing field", ref("hub", "nofield"), credentials.ErrSecretNotFound, `has no field "nofield"`},
			{"boolean field", ref("hub", "flag"), credentials.ErrInvalidSecret, `field "flag" of secret/data/` + v.prefix + "/hub is a boolean"},
			{"empty field", ref("hub", "empty"), credentials.ErrInvalidSecret, `field "empty" of secret/data/` + v.prefix + "/hub is empty"},
		}
		for _, tc := range errCases {
			_, err := resolve(vault, tc.ref)
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: %v, want %v with %q", tc.name, err, tc.err, tc.msg)
			}
			noSecretIn(t, tc.name+" error", err.Error())
		}
		// Rotation: a new version is read after the cache is dropped.
		rotated := "vault-pass-rotated-" + randomHex(8)
		if _, err := v.admin.KVv2("secret").Patch(ctx, v.prefix+"/hub", map[string]any{"password": rotated}); err != nil {
			// Real Vault needs the patch capability; the test server has no PATCH: write the whole secret.
			if _, err := v.admin.KVv2("secret").Put(ctx, v.prefix+"/hub", map[string]any{"username": secrets["username"], "password": rotated, "pin": 12345, "flag": true, "empty": ""}); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := resolve(vault, ref("hub", "password")); err != nil || got != rotated {
			t.Fatalf("after rotation: %v (new value: %v)", err, got == rotated)
		}
		secrets["rotated"] = rotated
	})

	t.Run("token without the policy", func(t *testing.T) {
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, newToken(t, &api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"}))})
		_, err := resolve(vault, ref("hub", "password"))
		want := "vault: permission denied reading secret/data/" + v.prefix + "/hub"
		if !errors.Is(err, credentials.ErrPermissionDenied) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v, want %q", err, want)
		}
	})

	t.Run("revoked token is read again from the token file", func(t *testing.T) {
		first := newToken(t, &api.TokenCreateRequest{Policies: []string{v.prefix}, TTL: "1h"})
		file := tokenFile(t, first)
		vault := newVault(t, credentials.VaultConfig{TokenFile: file})
		if _, err := resolve(vault, ref("hub", "username")); err != nil {
			t.Fatal(err)
		}
		// A Vault agent rewrote the sink file; the old token was revoked.
		os.WriteFile(file, []byte(newToken(t, &api.TokenCreateRequest{Policies: []string{v.prefix}, TTL: "1h"})), 0o600)
		if err := v.admin.Auth().Token().RevokeOrphan(first); err != nil {
			t.Fatal(err)
		}
		if got, err := resolve(vault, ref("hub", "username")); err != nil || got != secrets["username"] {
			t.Fatalf("after revocation: %v", err)
		}
	})

	t.Run("bad token", func(t *testing.T) {
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, "hvs.not-a-token")})
		_, err := resolve(vault, ref("hub", "username"))
		if !errors.Is(err, credentials.ErrPermissionDenied) || !strings.Contains(err.Error(), "was refused") {
			t.Fatalf("%v", err)
		}
		if strings.Contains(err.Error(), "hvs.not-a-token") {
			t.Errorf("the error repeats the token: %v", err)
		}
		vault = newVault(t, credentials.VaultConfig{TokenFile: filepath.Join(t.TempDir(), "none")})
		if _, err := resolve(vault, ref("hub", "username")); !errors.Is(err, credentials.ErrBackendUnavailable) || !strings.Contains(err.Error(), "vault.tokenFile") {
			t.Fatalf("missing token file: %v", err)
		}
	})

	t.Run("renewable token is renewed", func(t *testing.T) {
		tok := newToken(t, &api.TokenCreateRequest{Policies: []string{v.prefix}, TTL: "3s", ExplicitMaxTTL: "1h"})
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, tok)})
		runVault(t, vault)
		if _, err := resolve(vault, ref("hub", "username")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second) // past the first TTL
		if _, err := resolve(vault, ref("hub", "username")); err != nil {
			t.Fatalf("after the token's first TTL: %v", err)
		}
		look, err := v.admin.Auth().Token().Lookup(tok)
		if err != nil {
			t.Fatalf("the token expired: it was not renewed: %v", err)
		}
		if ttl, _ := look.TokenTTL(); ttl <= 0 {
			t.Fatalf("token TTL %v", ttl)
		}
		if v.server != nil && v.server.Count("renew-self") == 0 {
			t.Errorf("no renew-self request")
		}
	})

	t.Run("approle logs in again at the maximum TTL", func(t *testing.T) {
		if err := v.admin.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil && !strings.Contains(err.Error(), "already in use") {
			t.Fatalf("enable approle: %v", err)
		}
		role := "regcache-" + v.prefix
		if _, err := v.admin.Logical().Write("auth/approle/role/"+role, map[string]any{
			"token_policies": []string{v.prefix}, "token_ttl": "2s", "token_max_ttl": "3s",
		}); err != nil {
			t.Fatalf("create role: %v", err)
		}
		rid, err := v.admin.Logical().Read("auth/approle/role/" + role + "/role-id")
		if err != nil {
			t.Fatal(err)
		}
		sid, err := v.admin.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
		if err != nil {
			t.Fatal(err)
		}
		secretID := sid.Data["secret_id"].(string)
		secretIDFile := filepath.Join(t.TempDir(), "secret-id")
		os.WriteFile(secretIDFile, []byte(secretID), 0o600)
		vault := newVault(t, credentials.VaultConfig{Auth: "approle", RoleID: rid.Data["role_id"].(string), SecretIDFile: secretIDFile})
		runVault(t, vault)
		deadline := time.Now().Add(7 * time.Second)
		for time.Now().Before(deadline) {
			if got, err := resolve(vault, ref("hub", "username")); err != nil || got != secrets["username"] {
				t.Fatalf("resolution during token turnover: %v", err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if v.server != nil && v.server.Count("login:approle") < 2 {
			t.Errorf("%d AppRole logins in 7s with a 3s maximum TTL, want a new login", v.server.Count("login:approle"))
		}
		noSecretIn(t, "log", logs.String())
		if strings.Contains(logs.String(), secretID) {
			t.Errorf("the secret ID was logged")
		}
		// A wrong secret ID is refused with Vault's reason.
		os.WriteFile(secretIDFile, []byte("wrong"), 0o600)
		bad := newVault(t, credentials.VaultConfig{Auth: "approle", RoleID: rid.Data["role_id"].(string), SecretIDFile: secretIDFile})
		if _, err := resolve(bad, ref("hub", "username")); !errors.Is(err, credentials.ErrPermissionDenied) || !strings.Contains(err.Error(), "approle login at auth/approle/login was refused") {
			t.Fatalf("wrong secret ID: %v", err)
		}
	})

	if v.server != nil {
		t.Run("kubernetes login", func(t *testing.T) {
			jwt := "eyJ-test-jwt-" + randomHex(8)
			v.server.AddKubernetesRole("regcache", jwt, []string{v.prefix}, time.Hour, 0)
			jwtFile := filepath.Join(t.TempDir(), "token")
			os.WriteFile(jwtFile, []byte(jwt), 0o600)
			vault := newVault(t, credentials.VaultConfig{Auth: "kubernetes", KubernetesRole: "regcache", KubernetesTokenFile: jwtFile})
			if got, err := resolve(vault, ref("hub", "username")); err != nil || got != secrets["username"] {
				t.Fatalf("%v", err)
			}
			os.WriteFile(jwtFile, []byte("another-jwt"), 0o600)
			other := newVault(t, credentials.VaultConfig{Auth: "kubernetes", KubernetesRole: "regcache", KubernetesTokenFile: jwtFile})
			_, err := resolve(other, ref("hub", "username"))
			if !errors.Is(err, credentials.ErrPermissionDenied) || !strings.Contains(err.Error(), "kubernetes login at auth/kubernetes/login was refused: permission denied") {
				t.Fatalf("wrong JWT: %v", err)
			}
			if strings.Contains(logs.String(), jwt) {
				t.Errorf("the service-account token was logged")
			}
		})
	}

	t.Run("deleted secret", func(t *testing.T) {
		vault := newVault(t, credentials.VaultConfig{TokenFile: tokenFile(t, newToken(t, &api.TokenCreateRequest{Policies: []string{v.prefix}, TTL: "1h"}))})
		if err := v.admin.KVv2("secret").Delete(ctx, v.prefix+"/hub"); err != nil {
			t.Fatal(err)
		}
		_, err := resolve(vault, ref("hub", "password"))
		if !errors.Is(err, credentials.ErrSecretNotFound) {
			t.Fatalf("%v", err)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		vault, err := credentials.NewVault(credentials.VaultConfig{Address: "http://127.0.0.1:1", TokenFile: tokenFile(t, "x")}, func(string) string { return "" }, logger)
		if err != nil {
			t.Fatal(err)
		}
		_, err = resolve(vault, ref("hub", "password"))
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

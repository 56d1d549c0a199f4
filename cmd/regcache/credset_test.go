package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/storage"
)

// newCredCLIServer is the registry handler with a real credentials.Manager.
func newCredCLIServer(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	endpoints, _ := cache.NewEndpoints(map[string]string{"docker.io": "http://127.0.0.1:1"})
	var store *cache.Store
	mgr, err := credentials.NewManager(ctx, credentials.Options{
		Records: meta, Endpoints: endpoints, Log: logger, CheckTimeout: 2 * time.Second,
		LookupEnv: func(k string) (string, bool) {
			return map[string]string{"REGCACHE_SECRET_U": "cli-user", "REGCACHE_SECRET_P": "cli-s3cr3t"}[k], k == "REGCACHE_SECRET_U" || k == "REGCACHE_SECRET_P"
		},
		InUse: func(set string) []string { return rulesUsing(store, set) },
	})
	if err != nil {
		t.Fatal(err)
	}
	store, err = cache.NewStore(ctx, meta, mgr, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	puller := cache.NewPuller(store, endpoints, mgr, blobs, meta, logger, cache.Options{})
	t.Cleanup(puller.Close)
	h, err := registry.New(registry.Config{Backend: puller, Rules: store, AdminToken: cliToken, Log: logger, CredentialSets: mgr})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestCredentialSetCLI(t *testing.T) {
	t.Parallel()
	url := newCredCLIServer(t)
	env := map[string]string{"REGCACHE_SERVER": url, "REGCACHE_TOKEN": cliToken}
	cli := func(args ...string) (string, error) {
		t.Helper()
		out, _, err := runCLI(t, t.Context(), env, args...)
		return out, err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("regcache %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	var set credentials.Set
	out := must("credential-set", "create", "-n", "HubSet", "-l", "docker.io", "-u", "env://REGCACHE_SECRET_U", "-p", "env://REGCACHE_SECRET_P")
	if err := json.Unmarshal([]byte(out), &set); err != nil || set.Name != "HubSet" || set.UsernameSecretRef != "env://REGCACHE_SECRET_U" || set.Status.State != "Healthy" {
		t.Fatalf("create output %s (%v)", out, err)
	}
	if _, err := cli("credential-set", "create", "-n", "Literal", "-l", "docker.io", "-u", "env://REGCACHE_SECRET_U", "-p", "my-password-literal"); err == nil ||
		strings.Contains(err.Error(), "my-password-literal") || !strings.Contains(err.Error(), "INVALID_FIELD") {
		t.Errorf("create with a literal secret: %v", err)
	}
	must("credential-set", "create", "-n", "VaultSet", "-l", "docker.io", "-u", "vault://secret/regcache/hub#username", "-p", "vault://secret/regcache/hub#password")
	table := must("credential-set", "list", "-o", "table")
	for _, want := range []string{"NAME", "LOGIN SERVER", "HubSet", "VaultSet", "Unhealthy", "vault: not configured"} {
		if !strings.Contains(table, want) {
			t.Errorf("list table lacks %q:\n%s", want, table)
		}
	}
	if out := must("credential-set", "show", "-n", "HubSet", "-o", "table"); !strings.Contains(out, "Healthy") {
		t.Errorf("show table:\n%s", out)
	}
	out = must("credential-set", "update", "-n", "HubSet", "-p", "file:///run/secrets/hub")
	if json.Unmarshal([]byte(out), &set); set.PasswordSecretRef != "file:///run/secrets/hub" || set.UsernameSecretRef != "env://REGCACHE_SECRET_U" || set.Status.State != "Unhealthy" {
		t.Errorf("update output %s", out)
	}
	if _, err := cli("credential-set", "update", "-n", "HubSet"); err == nil {
		t.Errorf("update with nothing to change succeeded")
	}
	policy := must("credential-set", "policy", "-n", "VaultSet")
	want := "path \"secret/data/regcache/hub\" {\n  capabilities = [\"read\"]\n}\n"
	if !strings.HasSuffix(policy, want) || strings.Count(policy, "path ") != 1 {
		t.Errorf("policy:\n%s\nwant one block ending\n%s", policy, want)
	}
	if all := must("credential-set", "policy", "--all"); !strings.HasSuffix(all, want) {
		t.Errorf("policy --all:\n%s", all)
	}
	if _, err := cli("credential-set", "policy", "-n", "HubSet"); err == nil || !strings.Contains(err.Error(), "no vault:// secret") {
		t.Errorf("policy of a set without vault refs: %v", err)
	}
	if _, err := cli("credential-set", "policy"); err == nil {
		t.Errorf("policy without -n or --all succeeded")
	}
	must("cache", "create", "-n", "HubRule", "-s", "docker.io/library/*", "-t", "hub/*", "-c", "VaultSet")
	if _, err := cli("credential-set", "delete", "-n", "VaultSet"); err == nil || !strings.Contains(err.Error(), "HubRule") || !strings.Contains(err.Error(), "IN_USE") {
		t.Errorf("delete in use: %v", err)
	}
	must("cache", "update", "-n", "HubRule", "--remove-cred-set")
	must("credential-set", "delete", "-n", "VaultSet")
	if _, err := cli("credential-set", "show", "-n", "VaultSet"); err == nil || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Errorf("show after delete: %v", err)
	}
	if out := must("credential-set", "list"); strings.Contains(out, "cli-s3cr3t") || strings.Contains(out, "cli-user") {
		t.Errorf("a secret value in the output:\n%s", out)
	}
}

func TestCredentialConfig(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "config.yaml", `
credentialSets:
  - name: hub-cfg
    loginServer: docker.io
    usernameSecret: vault://secret/regcache/hub#username
    passwordSecret: file:///run/secrets/hub-password
vault:
  address: https://vault.example.com:8200
  auth: approle
  roleId: 1234-abcd
  secretIdFile: /run/secrets/vault-secret-id
credentialCacheTTL: 2m
credentialHealthInterval: 30s
rules:
  - name: hub-rule
    source: docker.io/library/*
    target: hub/*
    credentialSet: hub-cfg
`)
	cfg, err := parseServe(t, []string{"--config", path, "--credential-health-interval", "10s"}, map[string]string{"REGCACHE_CREDENTIAL_CACHE_TTL": "90s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.CredentialSets) != 1 || cfg.CredentialSets[0].PasswordSecretRef != "file:///run/secrets/hub-password" ||
		cfg.Vault.Auth != "approle" || cfg.Vault.SecretIDFile != "/run/secrets/vault-secret-id" ||
		cfg.CredentialCacheTTL != 90*time.Second || cfg.CredentialHealthInterval != 10*time.Second {
		t.Errorf("config %+v", cfg)
	}
	bad := []struct{ yaml, want string }{
		{"credentialSets:\n  - name: hub-cfg\n    loginServer: docker.io\n    usernameSecret: env://REGCACHE_SECRET_U\n    passwordSecret: plain-password-in-config\n", "passwordSecretIdentifier"},
		{"credentialSets:\n  - name: hub-cfg\n    loginServer: docker.io\n    usernameSecret: env://REGCACHE_SECRET_U\n    password: x\n", `unknown key "password"`},
		{"vault:\n  auth: approle\n", "roleId"},
		{"vault:\n  token: s.abc\n", `unknown key "token"`},
		{"credentialHealthInterval: -1s\n", "must be positive"},
	}
	for _, tc := range bad {
		_, err := parseServe(t, []string{"--config", writeFile(t, "bad.yaml", tc.yaml)}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "plain-password-in-config") {
			t.Errorf("the error echoes a literal secret: %v", err)
		}
	}
	if _, err := parseServe(t, nil, map[string]string{"REGCACHE_CREDENTIAL_CACHE_TTL": "soon"}); err == nil {
		t.Errorf("a bad duration in the environment was accepted")
	}
}

// TestConfigRulesNeedTheirSets: a rule of the config file must use a set
// that exists, for its login server; the server refuses to start otherwise.
func TestConfigRulesNeedTheirSets(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	endpoints, _ := cache.NewEndpoints(nil)
	hub := credentials.Set{Name: "hub-cfg", LoginServer: "docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_U", PasswordSecretRef: "env://REGCACHE_SECRET_P"}
	tests := []struct {
		rule cache.Rule
		want string
	}{
		{cache.Rule{Name: "hub-rule", Source: "docker.io/library/*", Target: "hub/*", CredentialSet: "hub-cfg"}, ""},
		{cache.Rule{Name: "hub-rule", Source: "docker.io/library/*", Target: "hub/*", CredentialSet: "missing-set"}, `rule "hub-rule": invalid credentialSetName "missing-set": no credential set with this name exists`},
		{cache.Rule{Name: "ghcr-rule", Source: "ghcr.io/org/*", Target: "ghcr/*", CredentialSet: "hub-cfg"}, "is for login server docker.io but the rule's source is on ghcr.io"},
	}
	for _, tc := range tests {
		meta, err := storage.OpenMeta(filepath.Join(t.TempDir(), "meta.db"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{CredentialSets: []credentials.Set{hub}, Rules: []cache.Rule{tc.rule}}
		creds, err := newCredentials(t.Context(), cfg, meta, endpoints, nil, nil, logger)
		if err == nil {
			_, err = cache.NewStore(t.Context(), meta, creds, cfg.Rules, logger)
		}
		meta.Close()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("rule %+v: %v, want %q", tc.rule, err, tc.want)
		}
	}
}

// TestUnhealthySetPullError: a pull through a rule whose credential set
// cannot be resolved fails with UNAUTHORIZED and a message that names the
// set once (not "credential set X: credential set X is unhealthy: ...")
// and the command that shows the reason; the reason (where the secret is
// kept) is the operator's, not the client's.
func TestUnhealthySetPullError(t *testing.T) {
	t.Parallel()
	url := newCredCLIServer(t)
	env := map[string]string{"REGCACHE_SERVER": url, "REGCACHE_TOKEN": cliToken}
	for _, args := range [][]string{
		{"credential-set", "create", "-n", "Broken", "-l", "docker.io", "-u", "env://REGCACHE_SECRET_U", "-p", "env://REGCACHE_SECRET_NOT_SET_ANYWHERE"},
		{"cache", "create", "-n", "HubRule", "-s", "docker.io/library/*", "-t", "hub/*", "-c", "Broken"},
	} {
		if _, _, err := runCLI(t, t.Context(), env, args...); err != nil {
			t.Fatalf("regcache %s: %v", strings.Join(args, " "), err)
		}
	}
	resp, err := http.Get(url + "/v2/hub/nginx/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnauthorized || len(body.Errors) != 1 || body.Errors[0].Code != "UNAUTHORIZED" {
		t.Fatalf("status %d, errors %+v; want 401 UNAUTHORIZED", resp.StatusCode, body.Errors)
	}
	msg := body.Errors[0].Message
	if n := strings.Count(msg, `credential set "Broken"`); n != 1 {
		t.Errorf("message %q names the set %d times, want once", msg, n)
	}
	if !strings.Contains(msg, "regcache credential-set show -n Broken") || strings.Contains(msg, "NOT_SET_ANYWHERE") {
		t.Errorf("message %q: want the command that shows the reason, not the reason (a secret's location)", msg)
	}
	out, _, err := runCLI(t, t.Context(), env, "credential-set", "show", "-n", "Broken", "-o", "table")
	if err != nil || !strings.Contains(out, "NOT_SET_ANYWHERE") {
		t.Errorf("credential-set show: %v\n%s\nwant the reason (the missing variable)", err, out)
	}
}

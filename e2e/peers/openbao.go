package peers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"
)

// openBaoPath is where the OpenBao binary (the open-source fork of
// HashiCorp Vault, with the same HTTP API) is kept, relative to the root
// of the module: a sibling directory of the checkout.
const openBaoPath = "../shared/openbao/bao"

// openBaoRootToken is the root token of the OpenBao dev servers started here.
const openBaoRootToken = "root"

// Vault is a real Vault-API server a test runs against: OpenBao started
// for the test by StartVault, or the Vault that VAULT_ADDR and VAULT_TOKEN
// name. The helpers that create things in it (PutSecret, PutPolicy,
// NewToken, AppRole) name them after Prefix and delete them at cleanup, so
// a test touches only what it created, also in a Vault it shares.
type Vault struct {
	// Addr is the server's address, e.g. http://127.0.0.1:port.
	Addr string
	// Token may do everything the tests need: write secret/ (KV v2),
	// policies, tokens and auth methods (the dev server's root token, or
	// VAULT_TOKEN).
	Token string
	// Admin is a client with Token. Its idle connections are closed at
	// cleanup, so that tests checking for leaked goroutines stay clean.
	Admin *api.Client
	// Prefix is unique to this StartVault call.
	Prefix string

	auditLog string     // OpenBao's raw audit log; "" for an external Vault
	owner    testing.TB // the test of StartVault, for cleanups of shared things
	appRole  sync.Once
}

// StartVault returns the Vault-API server for a test. When VAULT_ADDR and
// VAULT_TOKEN are set it is that Vault (any real Vault or OpenBao; the
// token must be allowed what Token describes). Otherwise it starts OpenBao
// as a dev server (in memory, KV v2 at secret/) on a 127.0.0.1 port, found
// at ../shared/openbao/bao next to the module root or as bao on $PATH, and
// stops it at cleanup. A missing binary skips the test, and fails it when
// CI=true.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	v := &Vault{Prefix: "regcache-test-" + randomHex(t, 4), owner: t}
	if addr := os.Getenv(api.EnvVaultAddress); addr != "" {
		v.Addr, v.Token = addr, os.Getenv(api.EnvVaultToken)
		if v.Token == "" {
			t.Fatalf("VAULT_ADDR is %s but VAULT_TOKEN is not set: set it to a token allowed to write secret/, policies, tokens and auth methods, or unset VAULT_ADDR to test against OpenBao", addr)
		}
	} else {
		v.Addr, v.auditLog = startOpenBao(t)
		v.Token = openBaoRootToken
	}
	v.Admin = v.Client(t, v.Token)
	return v
}

// Client returns a client of the server with token; its idle connections
// are closed at cleanup.
func (v *Vault) Client(t testing.TB, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig() // TLS settings from VAULT_CACERT, ... for an external Vault
	if cfg.Error != nil {
		t.Fatalf("vault client config: %v", cfg.Error)
	}
	cfg.Address = v.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("vault client: %v", err)
	}
	c.SetToken(token)
	if v.auditLog != "" {
		c.ClearNamespace() // a dev server has none; ignore VAULT_NAMESPACE
	}
	t.Cleanup(cfg.HttpClient.CloseIdleConnections)
	return c
}

// startOpenBao starts an OpenBao dev server and returns its address and
// the path of its audit log.
func startOpenBao(t testing.TB) (addr, auditLog string) {
	t.Helper()
	bin := openBaoBinary(t)
	dir := t.TempDir()
	// Declarative audit device (the API refuses to enable one): with
	// log_raw, responses show the tokens handed out, for IssuedTokens.
	auditLog = filepath.Join(dir, "audit.log")
	config := filepath.Join(dir, "audit.hcl")
	hcl := fmt.Sprintf("audit \"file\" \"raw\" {\n  options {\n    file_path = %q\n    log_raw   = \"true\"\n  }\n}\n", auditLog)
	if err := os.WriteFile(config, []byte(hcl), 0o600); err != nil {
		t.Fatalf("start OpenBao: write config: %v", err)
	}
	// HOME is the test's: a dev server may keep its token in
	// ~/.vault-token, which is the user's own file. BAO_* and VAULT_*
	// variables would change what the server does.
	env := childEnv([]string{"HOME=" + dir}, "BAO_", "VAULT_")
	out := &syncBuffer{}
	var (
		p       *process
		host    string
		lastErr error
	)
	for attempt := 0; attempt < bindAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("start OpenBao: %v", err)
		}
		host = loopback(port)
		off := out.Len()
		p, err = startProcess(bin, []string{"server", "-dev", "-dev-root-token-id=" + openBaoRootToken,
			"-dev-listen-address=" + host, "-dev-no-store-token", "-config=" + config}, env, out)
		if err != nil {
			t.Fatalf("start OpenBao: %v", err)
		}
		// 200: initialized, unsealed and active.
		lastErr = waitReady(t.Context(), "http://"+host+"/v1/sys/health", nil, func(code int) bool { return code == http.StatusOK }, p, readyTimeout)
		if lastErr == nil {
			break
		}
		p.kill()
		if !errors.Is(lastErr, errExited) || !bindFailed(out.since(off)) {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start OpenBao %s: %v\noutput:\n%s", bin, lastErr, out.String())
	}
	t.Cleanup(func() {
		if timedOut, _ := p.terminate(stopGrace); timedOut {
			t.Errorf("OpenBao %s did not exit within %v of SIGTERM; killed", host, stopGrace)
		}
		if t.Failed() {
			t.Logf("OpenBao %s output:\n%s", host, out.String())
		}
	})
	return "http://" + host, auditLog
}

// openBaoBinary returns the path of OpenBao's bao: ../shared/openbao/bao
// relative to the module root (found from the working directory, which is
// the test's package directory), else bao on $PATH. When neither exists
// the test is skipped, except in CI (CI=true), where it fails.
func openBaoBinary(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("find OpenBao: %v", err)
	}
	shared := filepath.Join(root, filepath.FromSlash(openBaoPath))
	if fi, err := os.Stat(shared); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return shared
	}
	if path, err := exec.LookPath("bao"); err == nil {
		return path
	}
	msg := fmt.Sprintf("OpenBao not found: neither %s nor bao on $PATH (or set VAULT_ADDR and VAULT_TOKEN to test against a running Vault)", shared)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: CI requires it", msg)
	}
	t.Skip(msg)
	return ""
}

// moduleRoot returns the directory of the go.mod above the working
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// cleanup runs f at the end of the test with a context of its own (the
// test's context is cancelled by then); a failure is logged, not fatal.
func cleanup(t testing.TB, what string, f func(ctx context.Context) error) {
	t.Cleanup(func() {
		if err := f(context.Background()); err != nil {
			t.Logf("vault cleanup: %s: %v", what, err)
		}
	})
}

// PutSecret writes data as a new version of the KV v2 secret
// secret/<Prefix>/<name> and returns its path under the mount
// (<Prefix>/<name>). The secret, every version, is deleted at cleanup.
func (v *Vault) PutSecret(t testing.TB, name string, data map[string]any) string {
	t.Helper()
	path := v.Prefix + "/" + name
	if _, err := v.Admin.KVv2("secret").Put(t.Context(), path, data); err != nil {
		t.Fatalf("write secret %s: %v", path, err)
	}
	cleanup(t, "delete secret "+path, func(ctx context.Context) error {
		return v.Admin.KVv2("secret").DeleteMetadata(ctx, path)
	})
	return path
}

// PolicyName is the name PutPolicy gives the policy name: <Prefix>-<name>.
func (v *Vault) PolicyName(name string) string { return v.Prefix + "-" + name }

// PutPolicy writes the ACL policy PolicyName(name) through
// sys/policies/acl and returns its name; it is deleted at cleanup.
func (v *Vault) PutPolicy(t testing.TB, name, policy string) string {
	t.Helper()
	full := v.PolicyName(name)
	if err := v.Admin.Sys().PutPolicyWithContext(t.Context(), full, policy); err != nil {
		t.Fatalf("write policy %s: %v", full, err)
	}
	cleanup(t, "delete policy "+full, func(ctx context.Context) error {
		return v.Admin.Sys().DeletePolicyWithContext(ctx, full)
	})
	return full
}

// NewToken creates a token, revoked at cleanup.
func (v *Vault) NewToken(t testing.TB, req *api.TokenCreateRequest) string {
	t.Helper()
	s, err := v.Admin.Auth().Token().CreateWithContext(t.Context(), req)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	token := s.Auth.ClientToken
	cleanup(t, "revoke a token", func(ctx context.Context) error {
		err := v.Admin.Auth().Token().RevokeOrphanWithContext(ctx, token)
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && slices.Contains(re.Errors, "token to revoke not found") {
			return nil // revoked by the test already
		}
		return err
	})
	return token
}

// AppRole enables the AppRole auth method at the mount <Prefix>-approle
// (once per Vault), writes role with settings (token_policies, token_ttl,
// ...) and returns the mount, the role ID and a new secret ID. The mount,
// with its roles, is disabled at the end of the test that started the
// Vault (which revokes the tokens it issued).
func (v *Vault) AppRole(t testing.TB, role string, settings map[string]any) (mount, roleID, secretID string) {
	t.Helper()
	ctx := t.Context()
	mount = v.Prefix + "-approle"
	var err error
	v.appRole.Do(func() {
		err = v.Admin.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "approle"})
		if err == nil {
			cleanup(v.owner, "disable auth "+mount, func(ctx context.Context) error {
				return v.Admin.Sys().DisableAuthWithContext(ctx, mount)
			})
		}
	})
	if err != nil {
		t.Fatalf("enable approle at %s: %v", mount, err)
	}
	base := "auth/" + mount + "/role/" + role
	if _, err := v.Admin.Logical().WriteWithContext(ctx, base, settings); err != nil {
		t.Fatalf("write role %s: %v", base, err)
	}
	rid, err := v.Admin.Logical().ReadWithContext(ctx, base+"/role-id")
	if err != nil || rid == nil {
		t.Fatalf("read %s/role-id: %v", base, err)
	}
	sid, err := v.Admin.Logical().WriteWithContext(ctx, base+"/secret-id", nil)
	if err != nil || sid == nil {
		t.Fatalf("write %s/secret-id: %v", base, err)
	}
	roleID, _ = rid.Data["role_id"].(string)
	secretID, _ = sid.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatalf("role %s: no role ID or secret ID in Vault's answers", base)
	}
	return mount, roleID, secretID
}

// IssuedTokens returns every token the server has handed out so far
// (logins, token creations; not Token, which the test chose), for tests
// that check that no token leaks.
// They are read from the raw audit log of an OpenBao started by
// StartVault (which records a login's new token only when the login
// request carried no token, as a client's does); an external Vault's
// tokens cannot be listed, so for one the result is nil and the test log
// says so.
func (v *Vault) IssuedTokens(t testing.TB) []string {
	t.Helper()
	if v.auditLog == "" {
		t.Logf("the tokens an external Vault handed out cannot be listed: not searched for")
		return nil
	}
	f, err := os.Open(v.auditLog)
	if err != nil {
		t.Fatalf("read OpenBao's audit log: %v", err)
	}
	defer f.Close()
	var tokens []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var entry struct {
			Type     string `json:"type"`
			Response struct {
				Auth struct {
					ClientToken string `json:"client_token"`
				} `json:"auth"`
			} `json:"response"`
		}
		if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
			t.Fatalf("OpenBao's audit log: %v", err)
		}
		// Renewals answer with the token again: each is listed once.
		if tok := entry.Response.Auth.ClientToken; entry.Type == "response" && tok != "" && tok != v.Token && !seen[tok] {
			seen[tok] = true
			tokens = append(tokens, tok)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read OpenBao's audit log: %v", err)
	}
	return tokens
}

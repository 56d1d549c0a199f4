package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/hashicorp/vault/api"
	"golang.org/x/crypto/bcrypt"

	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/e2e/peers"
)

// credBackend prepares one secrets backend for the credential set flow.
type credBackend struct {
	name string
	// setup stores the first password and returns the set's references,
	// the server's extra arguments and environment.
	setup func(t *testing.T, f *credFlow) (userRef, passRef string, args, env []string)
	// afterCreate runs after the set was created (vault: grant the policy
	// the CLI prints).
	afterCreate func(t *testing.T, f *credFlow)
	// rotate makes the set hand out password2.
	rotate func(t *testing.T, f *credFlow)
	// breakIt makes the secret unresolvable; the status reason must
	// contain the returned text.
	breakIt func(t *testing.T, f *credFlow) string
}

// credFlow is the state of one run of the flow.
type credFlow struct {
	bin                string
	rc                 *peers.Regcache
	user, pass1, pass2 string
	dir                string
	secrets            []string // every value that must never leak
	mu                 sync.Mutex
	captured           strings.Builder // every CLI output and admin API response
	vault              *peers.Vault    // OpenBao, or the Vault VAULT_ADDR names
	vaultPath          string          // of the secret under the mount "secret"
}

func (f *credFlow) addSecret(s ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets = append(f.secrets, s...)
}

// cli runs a regcache command against the server and captures its output.
func (f *credFlow) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	stdout, stderr, code := peers.Run(t, f.bin, append(args, "--server", f.rc.URL(), "--token", f.rc.Token())...)
	f.mu.Lock()
	fmt.Fprintf(&f.captured, "$ regcache %s\n%s%s\n", strings.Join(args, " "), stdout, stderr)
	f.mu.Unlock()
	return stdout, stderr, code
}

func (f *credFlow) must(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, code := f.cli(t, args...)
	if code != 0 {
		t.Fatalf("regcache %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

func (f *credFlow) show(t *testing.T) credentials.Set {
	t.Helper()
	var s credentials.Set
	out := f.must(t, "credential-set", "show", "-n", "HubCreds", "-o", "json")
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("show output %s: %v", out, err)
	}
	return s
}

// waitState polls `credential-set show` until the set has state and a
// reason containing reason.
func (f *credFlow) waitState(t *testing.T, state, reason string) credentials.Set {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := f.show(t)
		if s.Status.State == state && strings.Contains(s.Status.Reason, reason) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("credential set status %+v, want %s with %q", s.Status, state, reason)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// writeHtpasswd writes an htpasswd file of bcrypt hashes for user and
// pass, and for each further user, password pair of more.
func writeHtpasswd(t *testing.T, path, user, pass string, more ...string) {
	t.Helper()
	var lines strings.Builder
	pairs := append([]string{user, pass}, more...)
	for i := 0; i+1 < len(pairs); i += 2 {
		hash, err := bcrypt.GenerateFromPassword([]byte(pairs[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines.WriteString(pairs[i] + ":" + string(hash) + "\n")
	}
	if err := os.WriteFile(path, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic replaces a file as Kubernetes and Docker update mounted
// secrets: a new file renamed over the old one.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func randomSecret(t *testing.T, prefix string) string {
	return prefix + "-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + fmt.Sprint(time.Now().UnixNano())
}

var credBackends = []credBackend{
	{
		name: "file",
		setup: func(t *testing.T, f *credFlow) (string, string, []string, []string) {
			os.WriteFile(filepath.Join(f.dir, "username"), []byte(f.user+"\n"), 0o600)
			os.WriteFile(filepath.Join(f.dir, "password"), []byte(f.pass1+"\n"), 0o600)
			return "file://" + filepath.Join(f.dir, "username"), "file://" + filepath.Join(f.dir, "password"), []string{"--secret-file-dir", f.dir}, nil
		},
		rotate: func(t *testing.T, f *credFlow) { writeAtomic(t, filepath.Join(f.dir, "password"), f.pass2+"\n") },
		breakIt: func(t *testing.T, f *credFlow) string {
			os.Remove(filepath.Join(f.dir, "password"))
			return "file not found: " + filepath.Join(f.dir, "password")
		},
	},
	{
		name: "env",
		setup: func(t *testing.T, f *credFlow) (string, string, []string, []string) {
			return "env://REGCACHE_SECRET_E2E_HUB_USER", "env://REGCACHE_SECRET_E2E_HUB_PASS", nil,
				[]string{"REGCACHE_SECRET_E2E_HUB_USER=" + f.user, "REGCACHE_SECRET_E2E_HUB_PASS=" + f.pass1, "REGCACHE_SECRET_E2E_HUB_PASS_NEXT=" + f.pass2}
		},
		// A process's environment is fixed: rotating an env:// secret is
		// pointing the set at a variable holding the new value.
		rotate: func(t *testing.T, f *credFlow) {
			f.must(t, "credential-set", "update", "-n", "HubCreds", "-p", "env://REGCACHE_SECRET_E2E_HUB_PASS_NEXT")
		},
		breakIt: func(t *testing.T, f *credFlow) string {
			f.must(t, "credential-set", "update", "-n", "HubCreds", "-p", "env://REGCACHE_SECRET_E2E_HUB_PASS_UNSET")
			return "env: REGCACHE_SECRET_E2E_HUB_PASS_UNSET is not set"
		},
	},
	{
		// A real Vault-API server: OpenBao, or the Vault VAULT_ADDR names.
		name: "vault",
		setup: func(t *testing.T, f *credFlow) (string, string, []string, []string) {
			f.vault = peers.StartVault(t)
			v := f.vault
			// 1. The secrets.
			f.vaultPath = v.PutSecret(t, "dockerhub", map[string]any{"username": f.user, "password": f.pass1})
			v.PutSecret(t, "other", map[string]any{"password": "other-" + f.pass1})
			// 2. An AppRole for regcache whose policy is written once the
			// set exists (the CLI prints it).
			mount, roleID, secretID := v.AppRole(t, "regcache", map[string]any{"token_policies": v.PolicyName("regcache"), "token_ttl": "1h"})
			f.addSecret(secretID)
			secretIDFile := filepath.Join(f.dir, "vault-secret-id")
			os.WriteFile(secretIDFile, []byte(secretID+"\n"), 0o600)
			config := filepath.Join(f.dir, "regcache.yaml")
			os.WriteFile(config, []byte(fmt.Sprintf("vault:\n  address: %s\n  auth: approle\n  appRoleMount: %s\n  roleId: %s\n  secretIdFile: %s\n",
				v.Addr, mount, roleID, secretIDFile)), 0o600)
			return "vault://secret/" + f.vaultPath + "#username", "vault://secret/" + f.vaultPath + "#password", []string{"--config", config}, nil
		},
		afterCreate: func(t *testing.T, f *credFlow) {
			v := f.vault
			// 3. Without a policy regcache's token may read nothing.
			f.waitState(t, credentials.StateUnhealthy, "vault: permission denied reading secret/data/"+f.vaultPath)
			// 4. The printed policy, written with the server's policy API,
			// is enough.
			policy := f.must(t, "credential-set", "policy", "-n", "HubCreds")
			if !strings.Contains(policy, "path \"secret/data/"+f.vaultPath+"\" {\n  capabilities = [\"read\"]\n}") || strings.Count(policy, "path ") != 1 {
				t.Fatalf("policy:\n%s", policy)
			}
			name := v.PutPolicy(t, "regcache", policy)
			// The server enforces it: a token with only that policy reads
			// exactly that path and is refused elsewhere.
			c := v.Client(t, v.NewToken(t, &api.TokenCreateRequest{Policies: []string{name}, TTL: "10m"}))
			ctx := t.Context()
			if s, err := c.Logical().ReadWithContext(ctx, "secret/data/"+f.vaultPath); err != nil || s == nil || s.Data["data"] == nil {
				t.Fatalf("read secret/data/%s with only the printed policy: %v", f.vaultPath, err)
			}
			for _, p := range []string{"secret/data/" + v.Prefix + "/other", "secret/metadata/" + f.vaultPath, "sys/policies/acl/" + name} {
				var re *api.ResponseError
				if _, err := c.Logical().ReadWithContext(ctx, p); !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
					t.Errorf("read %s with only the printed policy: %v, want 403", p, err)
				}
			}
			var re *api.ResponseError
			if _, err := c.KVv2("secret").Put(ctx, f.vaultPath, map[string]any{"password": "x"}); !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
				t.Errorf("write secret/data/%s with only the printed policy: %v, want 403", f.vaultPath, err)
			}
		},
		// Rotation is a new version of the secret.
		rotate: func(t *testing.T, f *credFlow) {
			if _, err := f.vault.Admin.KVv2("secret").Put(t.Context(), f.vaultPath, map[string]any{"username": f.user, "password": f.pass2}); err != nil {
				t.Fatal(err)
			}
		},
		breakIt: func(t *testing.T, f *credFlow) string {
			// The policy loses the path (someone tightened it too far).
			f.vault.PutPolicy(t, "regcache", `path "secret/data/`+f.vault.Prefix+`/other" { capabilities = ["read"] }`)
			return "vault: permission denied reading secret/data/" + f.vaultPath
		},
	},
}

// TestCredentialSets runs the whole credential set flow through the built
// binary against docker-registry with htpasswd (bcrypt) authentication, once
// per secrets backend: create the set and a rule, pull; the same pull
// without the set is UNAUTHORIZED; rotate the password upstream and in the
// secret, pull uncached content with no restart of regcache; break the
// secret: the set turns Unhealthy with the reason, uncached pulls fail
// naming the set, cached content is still served. Then no secret value may
// be found in the server log, the CLI outputs and admin responses, /metrics
// or the data directory.
func TestCredentialSets(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	for _, b := range credBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f := &credFlow{bin: bin, dir: t.TempDir()}
			f.user, f.pass1, f.pass2 = randomSecret(t, "user"), randomSecret(t, "pass1"), randomSecret(t, "pass2")
			f.addSecret(f.user, f.pass1, f.pass2)
			htpasswd := filepath.Join(f.dir, "htpasswd")
			writeHtpasswd(t, htpasswd, f.user, f.pass1)
			up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{Htpasswd: htpasswd})
			seedAuth := remote.WithAuth(&authn.Basic{Username: f.user, Password: f.pass1})
			v1 := peers.SeedImage(t, up.Host+"/library/app:v1", false, seedAuth)
			v2 := peers.SeedImage(t, up.Host+"/library/app:v2", true, seedAuth)
			peers.SeedImage(t, up.Host+"/library/app:v3", true, seedAuth)

			userRef, passRef, args, env := b.setup(t, f)
			f.rc = peers.StartRegcacheWith(t, bin, peers.ServeOptions{Env: env},
				append([]string{"--upstream", "docker.io=" + up.URL(), "--credential-health-interval", "500ms"}, args...)...)

			f.must(t, "credential-set", "create", "-n", "HubCreds", "-l", "docker.io", "-u", userRef, "-p", passRef)
			if b.afterCreate != nil {
				b.afterCreate(t, f)
			}
			f.waitState(t, credentials.StateHealthy, "")
			f.must(t, "cache", "create", "-n", "HubApp", "-s", "docker.io/library/app", "-t", "app", "-c", "HubCreds")
			f.must(t, "cache", "create", "-n", "HubAnon", "-s", "docker.io/library/*", "-t", "anon/*")
			if out := f.must(t, "credential-set", "list", "-o", "table"); !strings.Contains(out, "HubCreds") || !strings.Contains(out, "Healthy") {
				t.Fatalf("list:\n%s", out)
			}

			// The pull succeeds through the set; without it, UNAUTHORIZED.
			checkImage(t, f.rc.Addr+"/app:v1", v1)
			checkOCIError(t, "GET", f.rc.URL()+"/v2/anon/app/manifests/v1", http.StatusUnauthorized, "UNAUTHORIZED")
			if _, stderr, code := f.cli(t, "credential-set", "delete", "-n", "HubCreds"); code == 0 || !strings.Contains(stderr, "HubApp") {
				t.Fatalf("delete of a set in use: exit %d, %s; want refused naming the rule", code, stderr)
			}

			// Rotate: the upstream and the secret get a new password.
			writeHtpasswd(t, htpasswd, f.user, f.pass2)
			// distribution 2.8 re-reads a modified htpasswd file: no
			// restart of the upstream either.
			if !acceptsPassword(t, up, f.user, f.pass2) || acceptsPassword(t, up, f.user, f.pass1) {
				t.Fatalf("docker-registry did not switch to the rotated password in its htpasswd file")
			}
			b.rotate(t, f)
			checkImage(t, f.rc.Addr+"/app:v2", v2) // uncached, no regcache restart
			f.waitState(t, credentials.StateHealthy, "")

			// Break the secret.
			reason := b.breakIt(t, f)
			s := f.waitState(t, credentials.StateUnhealthy, reason)
			if out := f.must(t, "credential-set", "show", "-n", "HubCreds", "-o", "table"); !strings.Contains(out, "Unhealthy") || !strings.Contains(out, reason) {
				t.Fatalf("show table does not give the reason:\n%s", out)
			}
			t.Logf("unhealthy: %s", s.Status.Reason)
			resp, body := get(t, f.rc.URL()+"/v2/app/manifests/v3")
			// The client learns which set and where an operator looks; the
			// reason (a secret's location) stays with the operator.
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"UNAUTHORIZED"`) || !strings.Contains(body, `credential set \"HubCreds\"`) ||
				!strings.Contains(body, "credential-set show -n HubCreds") || strings.Contains(body, reason) {
				t.Fatalf("pull of uncached content through the broken set: %d %s; want UNAUTHORIZED naming the set and where to look, not the reason", resp.StatusCode, body)
			}
			checkImage(t, f.rc.Addr+"/app:v1", v1) // cached content is still served
			checkImage(t, f.rc.Addr+"/app:v2", v2)

			// Secret hygiene.
			if f.vault != nil {
				f.addSecret(f.vault.IssuedTokens(t)...)
			}
			for _, path := range []string{"/admin/v1/credential-sets", "/admin/v1/credential-sets/HubCreds", "/admin/v1/credential-sets-policy", "/admin/v1/cache-rules"} {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, f.rc.URL()+path, nil)
				req.Header.Set("Authorization", "Bearer "+f.rc.Token())
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				f.captured.WriteString("GET " + path + "\n" + string(raw) + "\n")
			}
			if resp, body := get(t, f.rc.URL()+"/metrics"); resp.StatusCode == http.StatusOK {
				f.captured.WriteString("GET /metrics\n" + body)
			} else {
				t.Logf("no /metrics to search (status %d)", resp.StatusCode)
			}
			f.rc.Stop()
			checkNoSecrets(t, f)
		})
	}
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// acceptsPassword reports whether the upstream accepts user:pass.
func acceptsPassword(t *testing.T, up *peers.Upstream, user, pass string) bool {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, up.URL()+"/v2/", nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// checkNoSecrets searches the server log, every captured CLI output and
// admin response, /metrics and every file of the data directory for the
// secret values.
func checkNoSecrets(t *testing.T, f *credFlow) {
	t.Helper()
	f.mu.Lock()
	haystacks := map[string]string{"server log": f.rc.Logs(), "CLI outputs and admin responses": f.captured.String()}
	secrets := append([]string(nil), f.secrets...)
	f.mu.Unlock()
	filepath.WalkDir(f.rc.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("read %s: %v", path, err)
			return nil
		}
		haystacks[path] = string(b)
		return nil
	})
	if _, ok := haystacks[filepath.Join(f.rc.DataDir, "meta.db")]; !ok {
		t.Errorf("no meta.db in %s", f.rc.DataDir)
	}
	for what, text := range haystacks {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("a secret value appears in %s", what)
			}
		}
	}
	t.Logf("searched %d places for %d secret values", len(haystacks), len(secrets))
}

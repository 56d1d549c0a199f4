package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
	// scan records every CLI output and HTTP response of the flow and
	// holds every value that must never leak.
	scan      *secretScan
	vault     *peers.Vault // OpenBao, or the Vault VAULT_ADDR names
	vaultPath string       // of the secret under the mount "secret"
}

func (f *credFlow) addSecret(s ...string) { f.scan.addSecret(s...) }

// cli runs a regcache command against the server and records its output
// (not its arguments, which may carry a secret on purpose).
func (f *credFlow) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	stdout, stderr, code := peers.Run(t, f.bin, append(args, "--server", f.rc.URL(), "--token", f.rc.Token())...)
	f.scan.record("CLI output", stdout+stderr)
	return stdout, stderr, code
}

// request sends a request to the server through the recording client and
// returns the status and body; token adds the admin token.
func (f *credFlow) request(t *testing.T, method, path, body string, token bool) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.rc.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token {
		req.Header.Set("Authorization", "Bearer "+f.rc.Token())
	}
	resp, err := f.scan.client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pull pulls ref through the server, recording every response.
func (f *credFlow) pull(t *testing.T, ref string, want peers.Image) {
	t.Helper()
	checkImageWith(t, ref, want, remote.WithTransport(f.scan.transport(nil)))
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
// without the set is UNAUTHORIZED; rotate the password upstream (a pull of
// uncached content fails until the secret follows) and in the secret, pull
// uncached content with no restart of regcache; break the secret: the set
// turns Unhealthy with the reason, uncached pulls fail naming the set,
// cached content is still served; admin requests that fail (a wrong token,
// a password given where a reference belongs, unknown sets and fields).
//
// Then secret hygiene: the server runs with debug logging, and no secret
// value, in clear or base64 (as Basic auth carries it), may be found in
// its log, in any header or body of any response it gave (pulls, errors,
// the admin API, /metrics), in the CLI outputs, or in any file of its data
// directory.
func TestCredentialSets(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	for _, b := range credBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f := &credFlow{bin: bin, dir: t.TempDir(), scan: newSecretScan()}
			f.user, f.pass1, f.pass2 = randomSecret(t, "user"), randomSecret(t, "pass1"), randomSecret(t, "pass2")
			f.addSecret(f.user, f.pass1, f.pass2)
			htpasswd := filepath.Join(f.dir, "htpasswd")
			writeHtpasswd(t, htpasswd, f.user, f.pass1)
			up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{Htpasswd: htpasswd})
			seedAuth := remote.WithAuth(&authn.Basic{Username: f.user, Password: f.pass1})
			v1 := peers.SeedImage(t, up.Host+"/library/app:v1", false, seedAuth)
			v2 := peers.SeedImage(t, up.Host+"/library/app:v2", true, seedAuth)
			peers.SeedImage(t, up.Host+"/library/app:v3", true, seedAuth)
			peers.SeedImage(t, up.Host+"/library/app:v4", true, seedAuth)

			userRef, passRef, args, env := b.setup(t, f)
			f.rc = peers.StartRegcacheWith(t, bin, peers.ServeOptions{Env: env},
				append([]string{"--upstream", "docker.io=" + up.URL(), "--credential-health-interval", "500ms", "--log-level", "debug"}, args...)...)

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
			f.pull(t, f.rc.Addr+"/app:v1", v1)
			if code, body := f.request(t, "GET", "/v2/anon/app/manifests/v1", "", false); code != http.StatusUnauthorized || !strings.Contains(body, `"UNAUTHORIZED"`) {
				t.Fatalf("pull without the set: %d %s; want 401 UNAUTHORIZED", code, body)
			}
			if _, stderr, code := f.cli(t, "credential-set", "delete", "-n", "HubCreds"); code == 0 || !strings.Contains(stderr, "HubApp") {
				t.Fatalf("delete of a set in use: exit %d, %s; want refused naming the rule", code, stderr)
			}
			f.adminErrors(t, userRef)

			// Rotate: the upstream and the secret get a new password.
			writeHtpasswd(t, htpasswd, f.user, f.pass2)
			// distribution 2.8 re-reads a modified htpasswd file: no
			// restart of the upstream either.
			if !acceptsPassword(t, up, f.user, f.pass2) || acceptsPassword(t, up, f.user, f.pass1) {
				t.Fatalf("docker-registry did not switch to the rotated password in its htpasswd file")
			}
			// Until the secret follows, the upstream refuses the old one.
			if code, body := f.request(t, "GET", "/v2/app/manifests/v4", "", false); code != http.StatusUnauthorized {
				t.Fatalf("pull with the old password: %d %s; want 401", code, body)
			}
			b.rotate(t, f)
			f.pull(t, f.rc.Addr+"/app:v2", v2) // uncached, no regcache restart
			f.waitState(t, credentials.StateHealthy, "")

			// Break the secret.
			reason := b.breakIt(t, f)
			s := f.waitState(t, credentials.StateUnhealthy, reason)
			if out := f.must(t, "credential-set", "show", "-n", "HubCreds", "-o", "table"); !strings.Contains(out, "Unhealthy") || !strings.Contains(out, reason) {
				t.Fatalf("show table does not give the reason:\n%s", out)
			}
			t.Logf("unhealthy: %s", s.Status.Reason)
			code, body := f.request(t, "GET", "/v2/app/manifests/v3", "", false)
			// The client learns which set and where an operator looks; the
			// reason (a secret's location) stays with the operator.
			if code != http.StatusUnauthorized || !strings.Contains(body, `"UNAUTHORIZED"`) || !strings.Contains(body, `credential set \"HubCreds\"`) ||
				!strings.Contains(body, "credential-set show -n HubCreds") || strings.Contains(body, reason) {
				t.Fatalf("pull of uncached content through the broken set: %d %s; want UNAUTHORIZED naming the set and where to look, not the reason", code, body)
			}
			f.pull(t, f.rc.Addr+"/app:v1", v1) // cached content is still served
			f.pull(t, f.rc.Addr+"/app:v2", v2)

			// Secret hygiene.
			if f.vault != nil {
				f.addSecret(f.vault.IssuedTokens(t)...)
			}
			for _, path := range []string{"/admin/v1/credential-sets", "/admin/v1/credential-sets/HubCreds", "/admin/v1/cache-rules", "/admin/v1/cache-rules/HubApp"} {
				if code, body := f.request(t, "GET", path, "", true); code != http.StatusOK {
					t.Errorf("GET %s: %d %s", path, code, body)
				}
			}
			f.request(t, "GET", "/admin/v1/credential-sets-policy", "", true) // 404 without vault:// references
			if code, _ := f.request(t, "GET", "/metrics", "", false); code != http.StatusOK {
				t.Logf("no /metrics to search (status %d)", code)
			}
			f.rc.Stop()
			f.scan.check(t, f.rc.Logs(), f.rc.DataDir)
		})
	}
}

// adminErrors sends admin requests that fail, each of which must answer
// its error without a secret value: the CLI and the API given a user name
// or password where a reference belongs, a body carrying a password in a
// field that does not exist, trailing data, a wrong admin token, unknown
// sets and rules, a conflict.
func (f *credFlow) adminErrors(t *testing.T, userRef string) {
	t.Helper()
	if _, stderr, code := f.cli(t, "credential-set", "create", "-n", "Literal", "-l", "docker.io", "-u", userRef, "-p", f.pass1); code == 0 || !strings.Contains(stderr, "passwordSecretIdentifier") {
		t.Errorf("credential-set create with a password as the reference: exit %d, %s; want refused naming the field", code, stderr)
	}
	if _, stderr, code := f.cli(t, "credential-set", "update", "-n", "HubCreds", "-u", f.user); code == 0 || !strings.Contains(stderr, "usernameSecretIdentifier") {
		t.Errorf("credential-set update with a user name as the reference: exit %d, %s; want refused naming the field", code, stderr)
	}
	for _, c := range []struct {
		method, path, body string
		token              bool
		status             int
	}{
		{"POST", "/admin/v1/credential-sets", `{"name":"Literal","loginServer":"docker.io","password":"` + f.pass1 + `"}`, true, http.StatusBadRequest},
		{"POST", "/admin/v1/credential-sets", `{"name":"Literal","loginServer":"docker.io","usernameSecretIdentifier":"` + f.user + `","passwordSecretIdentifier":"` + f.pass1 + `"}`, true, http.StatusBadRequest},
		{"PATCH", "/admin/v1/credential-sets/HubCreds", `{"passwordSecretIdentifier":"` + f.pass2 + `"}`, true, http.StatusBadRequest},
		{"PATCH", "/admin/v1/credential-sets/HubCreds", `{"passwordSecretIdentifier":"env://REGCACHE_SECRET_OK"} {"password":"` + f.pass2 + `"}`, true, http.StatusBadRequest},
		{"GET", "/admin/v1/credential-sets/NoSuchSet", "", true, http.StatusNotFound},
		{"GET", "/admin/v1/credential-sets/NoSuchSet/policy", "", true, http.StatusNotFound},
		{"DELETE", "/admin/v1/cache-rules/NoSuchRule", "", true, http.StatusNotFound},
		{"GET", "/admin/v1/credential-sets", "", false, http.StatusUnauthorized},
		{"POST", "/admin/v1/cache-rules", `{"name":"HubApp","sourceRepository":"docker.io/library/app","targetRepository":"app","credentialSetName":"HubCreds"}`, true, http.StatusConflict},
	} {
		if code, body := f.request(t, c.method, c.path, c.body, c.token); code != c.status {
			t.Errorf("%s %s: %d %s; want %d", c.method, c.path, code, body, c.status)
		}
	}
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

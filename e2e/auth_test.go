package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

// Users of the regcache the client authentication tests start: alice may
// pull the hub cache, bob may not (he pulls lab/* only).
const (
	alicePass = "alice-e2e-Pa55"
	bobPass   = "bob-e2e-Pa55"
)

// authServer is a regcache requiring logins, in front of an upstream
// holding library/app:v1 (Docker schema 2), cached as hub/app.
type authServer struct {
	rc  *peers.Regcache
	img peers.Image
}

// startAuthServer builds and starts it.
func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/app:v1", false)
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	writeHtpasswd(t, htpasswd, "alice", alicePass, "bob", bobPass)
	config := filepath.Join(dir, "config.yaml")
	writeFile(t, config, fmt.Sprintf(`rules:
  - name: hub-library
    source: docker.io/library/*
    target: hub/*
auth:
  htpasswd: %s
  access:
    - repository: "hub/*"
      pull: [alice]
    - repository: "lab/*"
      pull: [bob]
`, htpasswd))
	rc := peers.StartRegcache(t, bin, "--config", config, "--upstream", "docker.io="+u.URL(), "--log-format", "text")
	return &authServer{rc: rc, img: img}
}

// checkSecretsNotLogged fails the test if regcache logged a password or a
// token it issued.
func (s *authServer) checkSecretsNotLogged(t *testing.T, tokens ...string) {
	t.Helper()
	logs := s.rc.Logs()
	for _, secret := range append([]string{alicePass, bobPass, "wrong-Pa55"}, tokens...) {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("regcache logged the secret %q", secret)
		}
	}
}

// loggedMethod is logged for requests of one method.
func loggedMethod(logs, method string, want request) bool {
	var lines []string
	for _, line := range strings.Split(logs, "\n") {
		if logFields(line)["method"] == method {
			lines = append(lines, line)
		}
	}
	return logged(strings.Join(lines, "\n"), want)
}

// runFails runs bin expecting failure, and returns its combined output.
func runFails(t *testing.T, opts peers.RunOptions, bin string, args ...string) string {
	t.Helper()
	stdout, stderr, code := peers.RunWith(t, opts, bin, args...)
	if code == 0 {
		t.Fatalf("%s %s succeeded; want it refused\n%s%s", filepath.Base(bin), strings.Join(args, " "), stdout, stderr)
	}
	return stdout + stderr
}

// docker login through the machine's Docker Engine (with DOCKER_CONFIG in
// a temporary directory: the user's own configuration is never read or
// written), then docker pull through a rule: the image ID and digest are
// the upstream's. docker login stores the refresh token regcache issues,
// never the password, and pulls with it (the OAuth2 refresh_token grant).
// bob, who may not pull the hub cache, is refused with "denied"; a wrong
// password does not log in.
func TestAuthDocker(t *testing.T) {
	t.Parallel()
	docker := requireDocker(t)
	s := startAuthServer(t)
	ref := s.rc.Addr + "/hub/app:v1"
	removeDockerImages(t, docker, ref)
	as := func(user string) peers.RunOptions {
		return peers.RunOptions{Env: []string{"DOCKER_CONFIG=" + filepath.Join(t.TempDir(), user)}}
	}
	login := func(opts peers.RunOptions, user, pass string) (string, int) {
		stdout, stderr, code := peers.RunWith(t, peers.RunOptions{Env: opts.Env, Stdin: strings.NewReader(pass)},
			docker, "login", "--username", user, "--password-stdin", s.rc.Addr)
		return stdout + stderr, code
	}

	alice := as("alice")
	if out, code := login(alice, "alice", alicePass); code != 0 || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("docker login alice: exit %d\n%s", code, out)
	}
	raw, err := os.ReadFile(filepath.Join(strings.TrimPrefix(alice.Env[0], "DOCKER_CONFIG="), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var stored struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	entry := stored.Auths[s.rc.Addr]
	if entry.IdentityToken == "" || strings.Contains(string(raw), base64.StdEncoding.EncodeToString([]byte("alice:"+alicePass))) {
		t.Errorf("docker login stored %s for %s; want the refresh token, not the password", raw, s.rc.Addr)
	}
	runOK(t, alice, docker, "pull", ref)
	checkDockerImage(t, inspectImage(t, docker, nil, ref), ref, s.img.Config, s.img.Digest)
	if !loggedMethod(s.rc.Logs(), "POST", request{Path: "/v2/token", Status: "200", Agent: "docker/"}) {
		t.Errorf("regcache's access log has no POST /v2/token (the refresh_token grant) from docker:\n%s", s.rc.Logs())
	}
	runOK(t, peers.RunOptions{}, docker, "image", "rm", ref)

	bob := as("bob")
	if out, code := login(bob, "bob", bobPass); code != 0 {
		t.Fatalf("docker login bob: exit %d\n%s", code, out)
	}
	if out := runFails(t, bob, docker, "pull", ref); !strings.Contains(out, "denied") {
		t.Errorf("docker pull as bob: %s; want denied", out)
	}
	if out, code := login(as("wrong"), "alice", "wrong-Pa55"); code == 0 || !strings.Contains(out, "unauthorized") {
		t.Errorf("docker login with a wrong password: exit %d\n%s; want unauthorized", code, out)
	}
	s.checkSecretsNotLogged(t, entry.IdentityToken)
}

// skopeo with --src-creds and --creds (no auth file of the machine's
// read: REGISTRY_AUTH_FILE points at a temporary one) copies and inspects
// through a rule; podman logs in with --authfile in a temporary directory
// and pulls. The digests are the upstream's; bob is refused.
func TestAuthSkopeoPodman(t *testing.T) {
	t.Parallel()
	skopeo := peers.Require(t, "skopeo")
	s := startAuthServer(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	writeFile(t, conf, "unqualified-search-registries = []\n")
	authFile := filepath.Join(dir, "auth.json")
	opts := peers.RunOptions{Env: []string{"REGISTRY_AUTH_FILE=" + authFile, "CONTAINERS_REGISTRIES_CONF=" + conf}}
	src := "docker://" + s.rc.Addr + "/hub/app:v1"

	t.Run("skopeo", func(t *testing.T) {
		layout := filepath.Join(t.TempDir(), "app")
		runOK(t, opts, skopeo, "copy", "--src-tls-verify=false", "--src-creds", "alice:"+alicePass, "--insecure-policy", "--preserve-digests", src, "oci:"+layout+":v1")
		checkLayout(t, layout, s.img.Digest, s.img.Blobs())
		var inspected struct {
			Digest string `json:"Digest"`
		}
		out := runOK(t, opts, skopeo, "inspect", "--no-tags", "--tls-verify=false", "--creds", "alice:"+alicePass, src)
		if json.Unmarshal([]byte(out), &inspected) != nil || inspected.Digest != s.img.Digest {
			t.Errorf("skopeo inspect: digest %q, want %s\n%s", inspected.Digest, s.img.Digest, out)
		}
		if !logged(s.rc.Logs(), request{Path: "/v2/token", Status: "200", Agent: "skopeo/"}) {
			t.Errorf("regcache's access log has no token request from skopeo:\n%s", s.rc.Logs())
		}
		if out := runFails(t, opts, skopeo, "inspect", "--no-tags", "--tls-verify=false", "--creds", "bob:"+bobPass, src); !strings.Contains(out, "denied") {
			t.Errorf("skopeo as bob: %s; want denied", out)
		}
		if out := runFails(t, opts, skopeo, "inspect", "--no-tags", "--tls-verify=false", "--creds", "alice:wrong-Pa55", src); !strings.Contains(out, "unauthorized") {
			t.Errorf("skopeo with a wrong password: %s; want unauthorized", out)
		}
	})
	t.Run("podman", func(t *testing.T) {
		p := newPodman(t, conf)
		popts := p.options()
		ref := s.rc.Addr + "/hub/app:v1"
		podmanAuth := func(user string) string { return filepath.Join(t.TempDir(), user+"-auth.json") }
		aliceAuth, bobAuth := podmanAuth("alice"), podmanAuth("bob")
		login := func(authfile, user, pass string) {
			t.Helper()
			runOK(t, peers.RunOptions{Env: popts.Env, Stdin: strings.NewReader(pass)}, p.bin,
				p.args("login", "--authfile", authfile, "--tls-verify=false", "--username", user, "--password-stdin", s.rc.Addr)...)
		}
		login(aliceAuth, "alice", alicePass)
		p.run(t, "pull", "--quiet", "--authfile", aliceAuth, "--tls-verify=false", ref)
		var got []struct {
			ID     string `json:"Id"`
			Digest string `json:"Digest"`
		}
		out := p.run(t, "image", "inspect", ref)
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
			t.Fatalf("podman image inspect: %v\n%s", err, out)
		}
		if "sha256:"+got[0].ID != s.img.Config || got[0].Digest != s.img.Digest {
			t.Errorf("podman image: ID %s digest %s; want the upstream's %s %s", got[0].ID, got[0].Digest, s.img.Config, s.img.Digest)
		}
		if !logged(s.rc.Logs(), request{Path: "/v2/token", Status: "200", Agent: "containers/"}) {
			t.Errorf("regcache's access log has no token request from podman:\n%s", s.rc.Logs())
		}
		login(bobAuth, "bob", bobPass)
		if out := runFails(t, popts, p.bin, p.args("pull", "--authfile", bobAuth, "--tls-verify=false", ref)...); !strings.Contains(out, "denied") {
			t.Errorf("podman pull as bob: %s; want denied", out)
		}
	})
	if _, err := os.Stat(authFile); err == nil {
		t.Errorf("skopeo wrote %s, though the credentials came on the command line", authFile)
	}
	s.checkSecretsNotLogged(t)
}

// containerd pulls docker.io/library/app:v1 through a hosts.toml mirror
// (requests carry ?ns=docker.io; regcache routes them to hub/app and
// challenges for that scope) with `ctr images pull --user`: containerd
// fetches its token with the OAuth2 password grant. The digest is the
// upstream's; bob is refused.
func TestAuthContainerd(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	peers.Require(t, "containerd")
	peers.Require(t, "ctr")
	s := startAuthServer(t)
	certsD := filepath.Join(t.TempDir(), "certs.d")
	writeFile(t, filepath.Join(certsD, "docker.io", "hosts.toml"), fmt.Sprintf(`server = "http://%s"

[host."%s"]
  capabilities = ["pull", "resolve"]
`, closedLoopbackAddr(t), s.rc.URL()))
	c := startContainerd(t)
	pull := []string{"images", "pull", "--hosts-dir", certsD, "--snapshotter", "native"}
	c.Ctr(t, append(pull, "--user", "alice:"+alicePass, "docker.io/library/app:v1")...)
	if got := c.ImageDigest(t, "docker.io/library/app:v1"); got != s.img.Digest {
		t.Errorf("containerd recorded docker.io/library/app:v1 as %s, want the upstream's %s", got, s.img.Digest)
	}
	if !logged(s.rc.Logs(), request{Path: "/v2/token", Status: "200", Agent: "containerd/"}) {
		t.Errorf("regcache's access log has no token request from containerd:\n%s", s.rc.Logs())
	}
	if !logged(s.rc.Logs(), request{Path: "/v2/library/app/manifests/v1", Query: "ns=docker.io", Status: "200", Agent: "containerd/"}) {
		t.Errorf("regcache's access log has no successful ns request from containerd:\n%s", s.rc.Logs())
	}
	out := runFails(t, peers.RunOptions{}, c.ctr, append([]string{"--address", c.Socket, "--namespace", "e2e"},
		append(pull, "--user", "bob:"+bobPass, "docker.io/library/app:v1")...)...)
	if !strings.Contains(out, "403") && !strings.Contains(out, "denied") {
		t.Errorf("ctr pull as bob: %s; want a refusal", out)
	}
	if !logged(s.rc.Logs(), request{Path: "/v2/library/app/manifests/v1", Query: "ns=docker.io", Status: "403"}) {
		t.Errorf("regcache did not answer bob 403:\n%s", s.rc.Logs())
	}
	s.checkSecretsNotLogged(t)
}

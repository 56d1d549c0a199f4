package e2e

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

// startClusterRegcache starts regcache with the cluster configuration shipped
// in deploy/kubernetes/config.yaml (its rules and defaultRegistry), a
// temporary admin token file instead of the mounted Secret, text logs for
// the assertions on the access log, and upstream endpoints on loopback.
func startClusterRegcache(t testing.TB, bin string, upstreams ...string) *peers.Regcache {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	writeFile(t, tokenFile, "e2e-admin-token-0123456789abcdef\n")
	args := []string{"--config", deployFile(t, "kubernetes/config.yaml"), "--admin-token-file", tokenFile, "--log-format", "text"}
	for _, u := range upstreams {
		args = append(args, "--upstream", u)
	}
	return peers.StartRegcache(t, bin, args...)
}

// hubLibraryOnly is a regcache configuration whose one rule serves
// docker.io/library/* as hub/*, with no defaultRegistry: no rule's target
// and no default registry covers the names runtimes send (library/app,
// docker.io/library/app), so a request reaches the rule only through the
// routing branch of the mirror mode under test.
const hubLibraryOnly = `rules:
  - name: hub-library
    source: docker.io/library/*
    target: hub/*
`

// startRegcacheWithConfig starts regcache with config as its config file,
// text logs, and upstream endpoints on loopback.
func startRegcacheWithConfig(t testing.TB, bin, config string, upstreams ...string) *peers.Regcache {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, config)
	args := []string{"--config", path, "--log-format", "text"}
	for _, u := range upstreams {
		args = append(args, "--upstream", u)
	}
	return peers.StartRegcache(t, bin, args...)
}

// installHosts runs deploy/containerd/install-hosts.sh (what the node mirror
// DaemonSet runs) into a temporary certs.d pointed at rc, then makes the
// docker.io server a closed loopback port so that no pull can bypass the
// mirror. It returns the certs.d directory, for ctr --hosts-dir.
func installHosts(t testing.TB, rc *peers.Regcache) string {
	t.Helper()
	certsD := filepath.Join(t.TempDir(), "certs.d")
	runOK(t, peers.RunOptions{Env: []string{"REGCACHE_MIRROR=" + rc.URL(), "CERTS_D=" + certsD}},
		"sh", deployFile(t, "containerd/install-hosts.sh"))
	hub := filepath.Join(certsD, "docker.io", "hosts.toml")
	raw, err := os.ReadFile(hub)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `[host."`+rc.URL()+`"]`) {
		t.Fatalf("install-hosts.sh did not point %s at %s:\n%s", hub, rc.URL(), raw)
	}
	s := replaceAll(t, hub, string(raw), `server = "https://registry-1.docker.io"`, `server = "http://`+closedLoopbackAddr(t)+`"`)
	writeFile(t, hub, s)
	return certsD
}

// checkContent asserts that containerd's content store holds every digest
// of want and none of notWant.
func checkContent(t *testing.T, c *containerd, want, notWant []string) {
	t.Helper()
	have := c.Content(t)
	for _, d := range want {
		if !have[d] {
			t.Errorf("containerd's content store lacks %s", d)
		}
	}
	for _, d := range notWant {
		if have[d] {
			t.Errorf("containerd's content store has %s, which the platform pulled does not need", d)
		}
	}
}

// checkCachedAs asserts that regcache logged caching manifest ref under the
// local repository repo (a rule's target): the request was routed to that
// rule.
func checkCachedAs(t testing.TB, rc *peers.Regcache, repo, ref string) {
	t.Helper()
	if !loggedMessage(rc.Logs(), "cached manifest", map[string]string{"repo": repo, "ref": ref}) {
		t.Errorf("no manifest %s was cached under %s, the rule's target:\n%s", ref, repo, rc.Logs())
	}
}

// TestContainerdMirror is containerd's hosts.toml mirror mode: a containerd
// started by the test (temporary root, state and socket) pulls
// docker.io/library/<image> with `ctr images pull --hosts-dir`, the
// hosts.toml files being the ones deploy/containerd installs (regcache's
// address filled in by install-hosts.sh, the docker.io server a closed
// port). Requests carry ?ns=docker.io; regcache, with the shipped cluster
// config, finds the docker.io/* rule from ns and name. Asserted: the image
// digests containerd records are the upstream's, for a single-platform image
// and a 2-platform index with --platform (only that platform's blobs
// fetched) and --all-platforms (all of them); a registry no rule covers is
// answered NAME_UNKNOWN through _default, and containerd falls back to that
// registry itself; a second containerd with an empty root pulls the same
// images with the upstream stopped.
func TestContainerdMirror(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	peers.Require(t, "containerd")
	peers.Require(t, "ctr")
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	other := peers.StartGGCR(t) // a registry no rule covers
	img := peers.SeedImage(t, u.Host+"/library/app:v1", false)
	idx := peers.SeedIndex(t, u.Host+"/library/multi:v1")
	tool := peers.SeedImage(t, other.Host+"/team/tool:v1", true)
	rc := startClusterRegcache(t, bin, "docker.io="+u.URL())
	certsD := installHosts(t, rc)

	pull := func(t *testing.T, c *containerd, args ...string) {
		t.Helper()
		c.Ctr(t, append([]string{"images", "pull", "--hosts-dir", certsD, "--snapshotter", "native"}, args...)...)
	}
	pullAll := func(t *testing.T, c *containerd) {
		pull(t, c, "--platform", "linux/amd64", "docker.io/library/app:v1")
		if got := c.ImageDigest(t, "docker.io/library/app:v1"); got != img.Digest {
			t.Errorf("containerd recorded docker.io/library/app:v1 as %s, want the upstream's %s", got, img.Digest)
		}
		checkContent(t, c, append([]string{img.Digest}, img.Blobs()...), nil)

		pull(t, c, "--platform", "linux/amd64", "docker.io/library/multi:v1")
		if got := c.ImageDigest(t, "docker.io/library/multi:v1"); got != idx.Digest {
			t.Errorf("containerd recorded docker.io/library/multi:v1 as %s, want the upstream's %s", got, idx.Digest)
		}
		amd64, arm64 := idx.Children[0], idx.Children[1]
		checkContent(t, c, append([]string{idx.Digest, amd64.Digest}, amd64.Blobs()...), arm64.Layers)

		pull(t, c, "--all-platforms", "docker.io/library/multi:v1")
		checkContent(t, c, append([]string{arm64.Digest}, arm64.Blobs()...), nil)

		for _, p := range []string{"/v2/library/app/manifests/v1", "/v2/library/multi/manifests/v1"} {
			if !logged(rc.Logs(), request{Path: p, Query: "ns=docker.io", Status: "200", Agent: "containerd/"}) {
				t.Errorf("regcache's access log has no successful request for %s?ns=docker.io from containerd:\n%s", p, rc.Logs())
			}
		}
	}

	a := startContainerd(t)
	t.Run("cold", func(t *testing.T) { pullAll(t, a) })
	t.Run("registry no rule covers", func(t *testing.T) {
		// _default sends it to regcache first (ns=127.0.0.1:<port>);
		// NAME_UNKNOWN makes containerd go to the registry itself.
		ref := other.Host + "/team/tool:v1"
		pull(t, a, "--plain-http", ref)
		if got := a.ImageDigest(t, ref); got != tool.Digest {
			t.Errorf("containerd recorded %s as %s, want %s", ref, got, tool.Digest)
		}
		if !logged(rc.Logs(), request{Path: "/v2/team/tool/manifests/v1", Query: "ns=" + url.QueryEscape(other.Host), Status: "404"}) {
			t.Errorf("regcache did not answer 404 for a registry no rule covers:\n%s", rc.Logs())
		}
		// The answer containerd falls back on is NAME_UNKNOWN, not any 404.
		checkOCIError(t, http.MethodGet, rc.URL()+"/v2/team/tool/manifests/v1?ns="+url.QueryEscape(other.Host), http.StatusNotFound, "NAME_UNKNOWN")
	})
	a.Stop(t)

	u.Stop()
	b := startContainerd(t)
	t.Run("upstream stopped, empty containerd", func(t *testing.T) { pullAll(t, b) })
}

// TestContainerdMirrorRoutesByNamespace: containerd pulls
// docker.io/library/app through the deploy/containerd hosts.toml from a
// regcache whose only rule serves docker.io/library/* as hub/* and which has
// no defaultRegistry, so the request containerd sends
// (/v2/library/app/manifests/v1?ns=docker.io) reaches the rule only through
// ns; docker.io's own server is a closed port, so the pull succeeds only if
// regcache routed it. Without ns, or with an ns or path no rule covers, the
// answer is NAME_UNKNOWN (what makes containerd fall back to the registry).
func TestContainerdMirrorRoutesByNamespace(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	peers.Require(t, "containerd")
	peers.Require(t, "ctr")
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/app:v1", false)
	peers.SeedImage(t, u.Host+"/team/tool:v1", false) // upstream has it; no rule covers it
	rc := startRegcacheWithConfig(t, bin, hubLibraryOnly, "docker.io="+u.URL())
	certsD := installHosts(t, rc)

	c := startContainerd(t)
	c.Ctr(t, "images", "pull", "--hosts-dir", certsD, "--snapshotter", "native", "--platform", "linux/amd64", "docker.io/library/app:v1")
	if got := c.ImageDigest(t, "docker.io/library/app:v1"); got != img.Digest {
		t.Errorf("containerd recorded docker.io/library/app:v1 as %s, want the upstream's %s", got, img.Digest)
	}
	checkContent(t, c, append([]string{img.Digest}, img.Blobs()...), nil)
	if !logged(rc.Logs(), request{Path: "/v2/library/app/manifests/v1", Query: "ns=docker.io", Status: "200", Agent: "containerd/"}) {
		t.Errorf("regcache's access log has no successful request for /v2/library/app/manifests/v1?ns=docker.io from containerd:\n%s", rc.Logs())
	}
	checkCachedAs(t, rc, "hub/app", "v1")

	for _, path := range []string{
		"/v2/library/app/manifests/v1",                    // no ns: only ns can route library/app
		"/v2/team/tool/manifests/v1?ns=docker.io",         // a docker.io path the rule does not cover
		"/v2/library/app/manifests/v1?ns=registry.k8s.io", // a registry no rule covers
	} {
		checkOCIError(t, http.MethodGet, rc.URL()+path, http.StatusNotFound, "NAME_UNKNOWN")
	}
}

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
)

// startLocalRegcache runs regcache with a Docker Hub upstream u, a rule
// caching docker.io/library/* as hub/*, and lab/* as a local namespace.
func startLocalRegcache(t *testing.T, bin string, u *peers.Upstream, args ...string) *peers.Regcache {
	t.Helper()
	rc := peers.StartRegcache(t, bin, append([]string{"--upstream", "docker.io=" + u.URL(), "--default-registry", "docker.io", "--local-namespace", "lab/*"}, args...)...)
	createRule(t, bin, rc, "HubLibrary", "docker.io/library/*", "hub/*")
	return rc
}

// storedBlobs counts the blobs in regcache's store.
func storedBlobs(t *testing.T, rc *peers.Regcache) int {
	t.Helper()
	return rc.StoredBlobs(t)
}

// waitStored waits (up to 30 s) until every digest is a committed blob of
// rc's store.
func waitStored(t *testing.T, rc *peers.Regcache, digests []string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		missing := ""
		for _, d := range digests {
			if _, ok := rc.StoredBlob(t, d); !ok {
				missing = d
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob %s is not in the store 30 s after its pull", missing)
		}
	}
}

func craneDigest(t *testing.T, crane, ref string) string {
	t.Helper()
	return strings.TrimSpace(runOK(t, peers.RunOptions{}, crane, "digest", "--insecure", ref))
}

// TestPushClients pushes into local repositories with real clients and
// pulls back with another: crane copy (pulled back by skopeo), skopeo copy
// --all of a two-platform index (pulled back by go-containerregistry and
// skopeo --all), podman push and docker push (pulled back by crane and
// go-containerregistry, which verifies every blob). Digests must match.
// A push into a cached repository is refused, naming the rule and its
// source, and leaves the store unchanged.
func TestPushClients(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	crane := peers.Require(t, "crane")
	skopeo := peers.Require(t, "skopeo")
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/src/app:v1", true)
	dockerImg := peers.SeedImage(t, u.Host+"/src/dockerapp:v1", false)
	idx := peers.SeedIndex(t, u.Host+"/src/multi:v1")
	rc := startLocalRegcache(t, bin, u)

	t.Run("crane copy, skopeo pulls", func(t *testing.T) {
		for _, c := range []struct {
			src  string
			want peers.Image
		}{{"app", img}, {"dockerapp", dockerImg}} {
			dst := rc.Addr + "/lab/crane-" + c.src + ":v1"
			runOK(t, peers.RunOptions{}, crane, "copy", "--insecure", u.Host+"/src/"+c.src+":v1", dst)
			if got := craneDigest(t, crane, dst); got != c.want.Digest {
				t.Fatalf("%s: digest %s, pushed %s", dst, got, c.want.Digest)
			}
			layout := filepath.Join(t.TempDir(), "layout")
			runSkopeo(t, skopeo, "copy", "--preserve-digests", "--insecure-policy", "--src-tls-verify=false", "docker://"+dst, "oci:"+layout+":v1")
			checkLayout(t, layout, c.want.Digest, c.want.Blobs())
			checkImage(t, dst, c.want)
		}
	})

	t.Run("skopeo copy --all, pulled back with --all", func(t *testing.T) {
		dst := rc.Addr + "/lab/skopeo-multi:v1"
		runSkopeo(t, skopeo, "copy", "--all", "--preserve-digests", "--insecure-policy", "--src-tls-verify=false", "--dest-tls-verify=false",
			"docker://"+u.Host+"/src/multi:v1", "docker://"+dst)
		checkIndex(t, dst, idx)
		layout := filepath.Join(t.TempDir(), "multi")
		runSkopeo(t, skopeo, "copy", "--all", "--preserve-digests", "--insecure-policy", "--src-tls-verify=false", "docker://"+dst, "oci:"+layout+":v1")
		blobs := idx.ChildDigests()
		for _, c := range idx.Children {
			blobs = append(blobs, c.Blobs()...)
		}
		checkLayout(t, layout, idx.Digest, blobs)
	})

	t.Run("podman push, crane pulls", func(t *testing.T) {
		requireRoot(t)
		conf := filepath.Join(t.TempDir(), "registries.conf")
		writeFile(t, conf, "unqualified-search-registries = []\n")
		p := newPodman(t, conf)
		src, dst := rc.Addr+"/lab/crane-app:v1", rc.Addr+"/lab/podman:v1"
		p.run(t, "pull", "--quiet", "--tls-verify=false", src)
		p.run(t, "tag", src, dst)
		digestFile := filepath.Join(t.TempDir(), "digest")
		p.run(t, "push", "--quiet", "--tls-verify=false", "--digestfile", digestFile, dst)
		pushed, err := os.ReadFile(digestFile)
		if err != nil {
			t.Fatal(err)
		}
		if got := craneDigest(t, crane, dst); got != strings.TrimSpace(string(pushed)) {
			t.Fatalf("podman pushed %s, crane pulls %s", pushed, got)
		}
		checkSameImage(t, dst, dst) // every blob read back and verified
	})

	t.Run("docker push, crane pulls", func(t *testing.T) {
		docker := requireDocker(t)
		src, dst := rc.Addr+"/lab/crane-dockerapp:v1", rc.Addr+"/lab/docker:v1"
		removeDockerImages(t, docker, src, dst)
		runOK(t, peers.RunOptions{}, docker, "pull", src)
		runOK(t, peers.RunOptions{}, docker, "tag", src, dst)
		out := runOK(t, peers.RunOptions{}, docker, "push", dst)
		m := pushDigestRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no digest in docker push output:\n%s", out)
		}
		if got := craneDigest(t, crane, dst); got != m[1] {
			t.Fatalf("docker pushed %s, crane pulls %s", m[1], got)
		}
		checkSameImage(t, dst, dst)
	})

	t.Run("push into a cached repository is refused", func(t *testing.T) {
		img := pullThroughFixture(t, u)
		checkImage(t, rc.Addr+"/hub/app:v1", img) // the repository exists, cached
		// A fill commits (fsync, rename) just after its client got the
		// bytes: count once every blob of the pull is in the store.
		waitStored(t, rc, append(img.Blobs(), img.Digest))
		blobsBefore := storedBlobs(t, rc)
		tagsBefore := runOK(t, peers.RunOptions{}, crane, "ls", "--insecure", rc.Addr+"/hub/app")
		stdout, stderr, code := peers.Run(t, crane, "copy", "--insecure", u.Host+"/src/app:v1", rc.Addr+"/hub/app:pushed")
		if code == 0 {
			t.Fatalf("crane copy into a cached repository succeeded:\n%s", stdout)
		}
		for _, want := range []string{"DENIED", "HubLibrary", "docker.io/library/app"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("crane's error does not mention %q:\n%s", want, stderr)
			}
		}
		if got := storedBlobs(t, rc); got != blobsBefore {
			t.Errorf("the store holds %d blobs, %d before the refused push", got, blobsBefore)
		}
		if got := runOK(t, peers.RunOptions{}, crane, "ls", "--insecure", rc.Addr+"/hub/app"); got != tagsBefore {
			t.Errorf("tags %q, before the refused push %q", got, tagsBefore)
		}
	})
}

// pullThroughFixture seeds docker.io/library/app on u (cached as hub/app).
func pullThroughFixture(t *testing.T, u *peers.Upstream) peers.Image {
	t.Helper()
	return peers.SeedImage(t, u.Host+"/library/app:v1", true)
}

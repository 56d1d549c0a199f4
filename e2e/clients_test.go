package e2e

// Helpers of the lifecycle tests (warm, air-gap, offline, eviction): the
// regcache CLI against a running server, and pulling an image with every
// real client (crane, skopeo, containerd, the machine's Docker Engine),
// checking that each gets the digests the upstream has.

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

// adminCLI runs a regcache CLI command against rc and fails the test on a
// non-zero exit; it returns stdout.
func adminCLI(t testing.TB, bin string, rc *peers.Regcache, args ...string) string {
	t.Helper()
	return runOK(t, peers.RunOptions{}, bin, append(args, "--server", rc.URL(), "--token", rc.Token())...)
}

// adminCLIExit runs a regcache CLI command against rc and returns its
// output and exit status.
func adminCLIExit(t testing.TB, bin string, rc *peers.Regcache, args ...string) (string, string, int) {
	t.Helper()
	return peers.Run(t, bin, append(args, "--server", rc.URL(), "--token", rc.Token())...)
}

// wanted is an image a client must get: the top manifest's digest and,
// per platform ("" for a single-platform image), the platform manifest
// and its config and layers.
type wanted struct {
	ref       string // registry/repo:tag, on the registry pulled from
	digest    string
	platforms []peers.Image
}

// wantImage is a single-platform image seeded upstream, pulled as ref.
func wantImage(ref string, img peers.Image) wanted {
	return wanted{ref: ref, digest: img.Digest, platforms: []peers.Image{img}}
}

// wantIndex is a multi-platform index seeded upstream, pulled as ref.
func wantIndex(ref string, idx peers.Index) wanted {
	return wanted{ref: ref, digest: idx.Digest, platforms: idx.Children}
}

// pullCrane checks the digests crane sees and pulls every platform (crane
// verifies every blob as it reads it).
func pullCrane(t *testing.T, crane string, w wanted) {
	t.Helper()
	if got := craneDigest(t, crane, w.ref); got != w.digest {
		t.Errorf("crane: %s is %s, want %s", w.ref, got, w.digest)
	}
	for _, p := range w.platforms {
		args := []string{"pull", "--insecure", "--format", "oci"}
		if p.Platform != "" {
			args = append(args, "--platform", p.Platform)
			d := strings.TrimSpace(runOK(t, peers.RunOptions{}, crane, "digest", "--insecure", "--platform", p.Platform, w.ref))
			if d != p.Digest {
				t.Errorf("crane: %s for %s is %s, want %s", w.ref, p.Platform, d, p.Digest)
			}
		}
		dir := filepath.Join(t.TempDir(), "crane")
		runOK(t, peers.RunOptions{}, crane, append(args, w.ref, dir)...)
		checkBlobFiles(t, "crane", dir, p.Blobs())
	}
}

// pullSkopeo copies every platform with skopeo into an OCI layout,
// digests preserved, and checks it.
func pullSkopeo(t *testing.T, skopeo string, w wanted) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "skopeo")
	runSkopeo(t, skopeo, "copy", "--all", "--preserve-digests", "--insecure-policy", "--src-tls-verify=false", "docker://"+w.ref, "oci:"+dir+":pulled")
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != w.digest {
		t.Errorf("skopeo: %s gave index.json %s, want %s", w.ref, raw, w.digest)
	}
	for _, p := range w.platforms {
		checkBlobFiles(t, "skopeo", dir, append(p.Blobs(), p.Digest))
	}
}

// checkBlobFiles asserts that an OCI layout holds each digest, each file
// hashing to its name.
func checkBlobFiles(t *testing.T, client, dir string, digests []string) {
	t.Helper()
	for _, d := range digests {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			t.Errorf("%s: %v", client, err)
			continue
		}
		if got := sha(b); got != d {
			t.Errorf("%s: blob %s hashes to %s", client, d, got)
		}
	}
}

// pullContainerd pulls every platform with a containerd of the test's
// own (plain HTTP to regcache) and checks its image and content store.
func pullContainerd(t *testing.T, c *containerd, w wanted) {
	t.Helper()
	c.Ctr(t, "images", "pull", "--plain-http", "--all-platforms", "--snapshotter", "native", w.ref)
	if got := c.ImageDigest(t, w.ref); got != w.digest {
		t.Errorf("containerd: %s is %s, want %s", w.ref, got, w.digest)
	}
	var all []string
	for _, p := range w.platforms {
		all = append(all, p.Digest)
		all = append(all, p.Blobs()...)
	}
	checkContent(t, c, all, nil)
}

// pullDocker pulls every platform with the machine's Docker Engine and
// checks the image ID (config digest) and repository digest; the images
// are removed by tag at the end of the test.
func pullDocker(t *testing.T, docker string, w wanted) {
	t.Helper()
	removeDockerImages(t, docker, w.ref)
	for _, p := range w.platforms {
		args := []string{"pull"}
		if p.Platform != "" {
			args = append(args, "--platform", p.Platform)
		}
		runOK(t, peers.RunOptions{}, docker, append(args, w.ref)...)
		checkDockerImage(t, inspectImage(t, docker, nil, w.ref), w.ref+" "+p.Platform, p.Config, w.digest)
		runOK(t, peers.RunOptions{}, docker, "image", "rm", w.ref)
	}
}

// pullEverywhere pulls each image with crane, skopeo, containerd and
// docker.
func pullEverywhere(t *testing.T, ws ...wanted) {
	t.Helper()
	crane := peers.Require(t, "crane")
	skopeo := peers.Require(t, "skopeo")
	docker := requireDocker(t)
	c := startContainerd(t)
	for _, w := range ws {
		t.Run("crane "+w.ref, func(t *testing.T) { pullCrane(t, crane, w) })
		t.Run("skopeo "+w.ref, func(t *testing.T) { pullSkopeo(t, skopeo, w) })
		t.Run("containerd "+w.ref, func(t *testing.T) { pullContainerd(t, c, w) })
		t.Run("docker "+w.ref, func(t *testing.T) { pullDocker(t, docker, w) })
	}
}

// statusOf reads GET /admin/v1/status.
func statusOf(t testing.TB, rc *peers.Regcache) adminStatus {
	t.Helper()
	var st adminStatus
	resp, body := getWithToken(t, rc.URL()+"/admin/v1/status", rc.Token())
	if resp != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("GET /admin/v1/status: %d %s", resp, body)
	}
	return st
}

// adminStatus is the part of the status summary the tests read.
type adminStatus struct {
	Offline bool `json:"offline"`
	Fills   struct {
		Running int `json:"running"`
	} `json:"fills"`
	Store struct {
		Counted    bool  `json:"counted"`
		Bytes      int64 `json:"bytes"`
		LimitBytes int64 `json:"limitBytes"`
		Evicted    struct {
			Runs   int64 `json:"runs"`
			Images int64 `json:"images"`
		} `json:"evicted"`
	} `json:"store"`
}

// getWithToken GETs an admin URL.
func getWithToken(t testing.TB, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// hasLine reports whether out has a line containing every part.
func hasLine(out string, parts ...string) bool {
	return slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				return false
			}
		}
		return true
	})
}

// Package e2e runs the built regcache binary against real upstream
// registries (go-containerregistry's in-process registry, Debian's
// docker-registry) and real clients (go-containerregistry, skopeo).
package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regcache/regcache/e2e/peers"
)

// upstreams are the real registries every pull-through test runs against.
var upstreams = []struct {
	name  string
	start func(t testing.TB) *peers.Upstream
}{
	{"ggcr", peers.StartGGCR},
	{"docker-registry", func(t testing.TB) *peers.Upstream {
		return peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
	}},
}

func TestPullThrough(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	skopeo := peers.Require(t, "skopeo")
	for _, up := range upstreams {
		t.Run(up.name, func(t *testing.T) {
			t.Parallel()
			u := up.start(t)
			other := up.start(t) // a second upstream that has none of the content
			img := peers.SeedImage(t, u.Host+"/library/app:v1", false)
			ociImg := peers.SeedImage(t, u.Host+"/library/ociapp:v1", true)
			idx := peers.SeedIndex(t, u.Host+"/library/multi:v1")
			peers.SeedImage(t, other.Host+"/library/unrelated:v1", true)

			rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+u.URL(), "--upstream", "quay.io="+other.URL())
			cli := func(args ...string) string {
				t.Helper()
				stdout, stderr, code := peers.Run(t, bin, append(args, "--server", rc.URL(), "--token", rc.Token())...)
				if code != 0 {
					t.Fatalf("regcache %s: exit %d: %s", strings.Join(args, " "), code, stderr)
				}
				return stdout
			}
			// Tag TTL 0s: every pull of a tag revalidates it upstream, so
			// once the upstream stops, the tags are served stale.
			cli("cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*", "--tag-ttl", "0s")
			cli("cache", "create", "-n", "AppStatic", "-s", "docker.io/app", "-t", "app", "--tag-ttl", "0s")
			cli("cache", "create", "-n", "QuayAll", "-s", "quay.io/*", "-t", "quay/*")
			if out := cli("cache", "list", "-o", "table"); !strings.Contains(out, "docker.io/library/app") {
				t.Fatalf("cache list does not show the normalised static rule:\n%s", out)
			}

			pullAll := func(t *testing.T, layoutDir string) {
				// go-containerregistry: a Docker image through a static
				// rule, an OCI image and a 2-platform index through a wildcard.
				checkImage(t, rc.Addr+"/app:v1", img)
				checkImage(t, rc.Addr+"/hub/app:v1", img)
				checkImage(t, rc.Addr+"/hub/ociapp:v1", ociImg)
				checkIndex(t, rc.Addr+"/hub/multi:v1", idx)
				// skopeo to an OCI layout, digests preserved.
				for _, c := range []struct {
					repo, digest string
					blobs        []string
				}{
					{"hub/ociapp:v1", ociImg.Digest, ociImg.Blobs()},
					{"hub/multi:v1", idx.Digest, append(append(idx.ChildDigests(), idx.Children[0].Blobs()...), idx.Children[1].Blobs()...)},
				} {
					dir := filepath.Join(layoutDir, strings.NewReplacer("/", "-", ":", "-").Replace(c.repo))
					runSkopeo(t, skopeo, "copy", "--all", "--preserve-digests", "--insecure-policy", "--src-tls-verify=false",
						"docker://"+rc.Addr+"/"+c.repo, "oci:"+dir+":v1")
					checkLayout(t, dir, c.digest, c.blobs)
				}
			}
			t.Run("cold", func(t *testing.T) { pullAll(t, t.TempDir()) })
			if !strings.Contains(rc.Logs(), "cached blob") {
				t.Fatalf("no blob was fetched from the upstream:\n%s", rc.Logs())
			}

			// Per-repository links: the layer is in the store (fetched for
			// hub/app), but quay/library/app's upstream does not have it.
			layer := img.Layers[0]
			// (A fill commits just after its clients got the verified bytes.)
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if _, ok := rc.StoredBlob(t, layer); ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("layer %s not in the store", layer)
				}
			}
			checkOCIError(t, "GET", rc.URL()+"/v2/quay/library/app/blobs/"+layer, http.StatusNotFound, "BLOB_UNKNOWN")
			checkOCIError(t, "GET", rc.URL()+"/v2/nope/manifests/v1", http.StatusNotFound, "NAME_UNKNOWN")
			checkOCIError(t, "GET", rc.URL()+"/v2/library/app/manifests/v1?ns=registry.k8s.io", http.StatusNotFound, "NAME_UNKNOWN")
			// containerd mirror mode: the rule is found from ns + name.
			checkMirrorRequest(t, http.MethodHead, rc.URL()+"/v2/library/app/manifests/v1?ns=docker.io", "", http.StatusOK, img.Digest)
			checkMirrorRequest(t, http.MethodGet, rc.URL()+"/v2/library/app/blobs/"+layer+"?ns=docker.io", "bytes=100-", http.StatusPartialContent, layer)
			checkOCIError(t, "GET", rc.URL()+"/v2/hub/app/manifests/nosuchtag", http.StatusNotFound, "MANIFEST_UNKNOWN")

			// The upstream goes away: everything pulled before is served,
			// the expired tags from their last known pointers.
			u.Stop()
			t.Run("upstream stopped", func(t *testing.T) { pullAll(t, t.TempDir()) })
			for _, tag := range []struct{ repo, ref string }{{"app", "v1"}, {"hub/app", "v1"}, {"hub/ociapp", "v1"}, {"hub/multi", "v1"}} {
				if !loggedMessage(rc.Logs(), "serving cached tag: upstream revalidation failed", map[string]string{"repo": tag.repo, "tag": tag.ref}) {
					t.Errorf("%s:%s was not served stale after a failed revalidation:\n%s", tag.repo, tag.ref, rc.Logs())
				}
			}
			checkOCIError(t, "GET", rc.URL()+"/v2/hub/never-pulled/manifests/v1", http.StatusServiceUnavailable, "UNAVAILABLE")

			// And so after a restart of regcache with the upstream still down.
			rc.Restart()
			t.Run("restarted, upstream stopped", func(t *testing.T) { pullAll(t, t.TempDir()) })
		})
	}
}

// loggedMessage reports whether regcache's text log has a line with the
// message msg and every key=value of fields.
func loggedMessage(logs, msg string, fields map[string]string) bool {
	for _, line := range strings.Split(logs, "\n") {
		kv := logFields(line)
		if kv["msg"] != msg {
			continue
		}
		match := true
		for k, v := range fields {
			match = match && kv[k] == v
		}
		if match {
			return true
		}
	}
	return false
}

func parse(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkImage pulls ref with go-containerregistry and asserts that its
// manifest and every blob are byte-identical to the upstream's.
func checkImage(t *testing.T, ref string, want peers.Image) {
	t.Helper()
	checkImageWith(t, ref, want)
}

// checkImageWith is checkImage with options for remote.Get (a transport).
func checkImageWith(t *testing.T, ref string, want peers.Image, opts ...remote.Option) {
	t.Helper()
	desc, err := remote.Get(parse(t, ref), append([]remote.Option{remote.WithContext(t.Context())}, opts...)...)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	checkManifest(t, ref, desc, want.Digest, want.MediaType, want.RawManifest)
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	checkBlobs(t, img, want, ref)
}

func checkManifest(t *testing.T, ref string, desc *remote.Descriptor, digest, mediaType string, raw []byte) {
	t.Helper()
	if desc.Digest.String() != digest || string(desc.MediaType) != mediaType {
		t.Fatalf("%s: digest %s (%s), want %s (%s)", ref, desc.Digest, desc.MediaType, digest, mediaType)
	}
	if !bytes.Equal(desc.Manifest, raw) {
		t.Fatalf("%s: manifest bytes differ from the upstream's", ref)
	}
}

// checkBlobs reads the config and every layer of img (pulled through
// regcache) and compares their digests with the upstream image's.
func checkBlobs(t *testing.T, img v1.Image, want peers.Image, ref string) {
	t.Helper()
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatalf("%s: config: %v", ref, err)
	}
	if got := sha(cfg); got != want.Config {
		t.Fatalf("%s: config hashes to %s, want %s", ref, got, want.Config)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != len(want.Layers) {
		t.Fatalf("%s: %d layers (%v), want %d", ref, len(layers), err, len(want.Layers))
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("%s: layer %d: %v", ref, i, err)
		}
		b, err := io.ReadAll(rc) // go-containerregistry verifies the digest while reading
		rc.Close()
		if err != nil {
			t.Fatalf("%s: layer %d: %v", ref, i, err)
		}
		if got := sha(b); got != want.Layers[i] || int64(len(b)) != want.LayerSizes[i] {
			t.Fatalf("%s: layer %d is %s (%d bytes), want %s (%d bytes)", ref, i, got, len(b), want.Layers[i], want.LayerSizes[i])
		}
	}
}

// checkIndex pulls an index and each child manifest by digest.
func checkIndex(t *testing.T, ref string, want peers.Index) {
	t.Helper()
	desc, err := remote.Get(parse(t, ref), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	checkManifest(t, ref, desc, want.Digest, want.MediaType, want.RawManifest)
	repo := ref[:strings.LastIndex(ref, ":")]
	for _, child := range want.Children {
		cref := repo + "@" + child.Digest
		cdesc, err := remote.Get(parse(t, cref), remote.WithContext(t.Context()))
		if err != nil {
			t.Fatalf("pull %s (%s): %v", cref, child.Platform, err)
		}
		checkManifest(t, cref, cdesc, child.Digest, child.MediaType, child.RawManifest)
		img, err := cdesc.Image()
		if err != nil {
			t.Fatal(err)
		}
		checkBlobs(t, img, child, cref)
	}
}

func runSkopeo(t *testing.T, skopeo string, args ...string) string {
	t.Helper()
	stdout, stderr, code := peers.Run(t, skopeo, args...)
	if code != 0 {
		t.Fatalf("skopeo %s: exit %d\n%s\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// checkLayout asserts that an OCI layout written by skopeo holds the
// manifest digest and every blob, each file hashing to its name.
func checkLayout(t *testing.T, dir, digest string, blobs []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != digest {
		t.Fatalf("skopeo layout %s: index.json %s, want the digest %s", dir, raw, digest)
	}
	for _, d := range append([]string{digest}, blobs...) {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			t.Fatalf("skopeo layout %s: %v", dir, err)
		}
		if got := sha(b); got != d {
			t.Fatalf("skopeo layout %s: blob %s hashes to %s", dir, d, got)
		}
	}
}

// checkOCIError asserts a spec error body with the code and status.
func checkOCIError(t *testing.T, method, url string, status int, code string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil || resp.StatusCode != status || len(body.Errors) != 1 || body.Errors[0].Code != code {
		t.Fatalf("%s %s: %d %s, want %d with %s", method, url, resp.StatusCode, raw, status, code)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// checkMirrorRequest sends one request as a mirror client would and checks
// the status and Docker-Content-Digest.
func checkMirrorRequest(t *testing.T, method, url, rangeHeader string, status int, digest string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, nil)
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status || resp.Header.Get("Docker-Content-Digest") != digest {
		t.Fatalf("%s %s: %d, Docker-Content-Digest %q; want %d, %q", method, url, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), status, digest)
	}
}

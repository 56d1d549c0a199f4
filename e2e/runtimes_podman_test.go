package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

// mirrorRegistriesConf writes deploy/crio/registries.conf.d/regcache.conf
// with regcache's address filled in and docker.io's own location replaced by
// a closed loopback port, so that a pull cannot bypass the mirror. It
// returns the file's path, for CONTAINERS_REGISTRIES_CONF and
// --registries-conf (which also keep the machine's registries.conf.d
// drop-ins out).
func mirrorRegistriesConf(t testing.TB, rc *peers.Regcache) string {
	t.Helper()
	const shippedPath = "crio/registries.conf.d/regcache.conf"
	raw, err := os.ReadFile(deployFile(t, shippedPath))
	if err != nil {
		t.Fatal(err)
	}
	s := replaceAll(t, shippedPath, string(raw), "regcache.example:5000", rc.Addr)
	s = replaceAll(t, shippedPath, s, `location = "docker.io"`, `location = "`+closedLoopbackAddr(t)+`"`)
	path := filepath.Join(t.TempDir(), "registries.conf")
	writeFile(t, path, s)
	return path
}

// podman runs podman as root with its own storage (vfs driver: no mounts)
// and run directories, the registries.conf given, and no events log.
type podman struct {
	bin   string
	root  string
	short string // run root and temporary directory: podman wants them short
	conf  string
}

func newPodman(t testing.TB, registriesConf string) *podman {
	t.Helper()
	requireRoot(t)
	return &podman{bin: peers.Require(t, "podman"), root: t.TempDir(), short: shortTempDir(t), conf: registriesConf}
}

func (p *podman) run(t testing.TB, args ...string) string {
	t.Helper()
	return runOK(t, p.options(), p.bin, p.args(args...)...)
}

// options are the RunOptions of every podman command.
func (p *podman) options() peers.RunOptions {
	return peers.RunOptions{Env: []string{"CONTAINERS_REGISTRIES_CONF=" + p.conf}}
}

// args prepends the global flags to a podman command's arguments.
func (p *podman) args(args ...string) []string {
	global := []string{
		"--root", p.root,
		"--runroot", filepath.Join(p.short, "run"),
		"--tmpdir", filepath.Join(p.short, "tmp"),
		"--storage-driver", "vfs",
		"--events-backend", "none",
		"--cgroup-manager", "cgroupfs",
		"--network-config-dir", filepath.Join(p.short, "networks"),
	}
	return append(global, args...)
}

// TestPodmanSkopeoMirror is the CRI-O/podman mirror mode: the shipped
// registries.conf drop-in (deploy/crio) gives docker.io a mirror whose
// location carries the registry as a path prefix, so requests arrive as
// /v2/docker.io/library/<image>/...; regcache, with the shipped cluster
// config, serves them through its docker.io/* -> docker.io/* rule. podman
// (vfs storage, temporary root) pulls a single-platform OCI image and a
// 2-platform index, and skopeo inspects and copies through the same
// configuration; the image IDs (config digests) and manifest digests must be
// the upstream's, before and after the upstream stops (a fresh podman root
// the second time).
func TestPodmanSkopeoMirror(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	peers.Require(t, "podman")
	skopeo := peers.Require(t, "skopeo")
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/app:v1", true)
	idx := peers.SeedIndex(t, u.Host+"/library/multi:v1")
	rc := startClusterRegcache(t, bin, "docker.io="+u.URL())
	conf := mirrorRegistriesConf(t, rc)

	pullAll := func(t *testing.T) {
		p := newPodman(t, conf)
		for _, c := range []struct {
			ref            string
			config, digest string
		}{
			{"docker.io/library/app:v1", img.Config, img.Digest},
			// podman records the digest it pulled by: the index's.
			{"docker.io/library/multi:v1", idx.Children[0].Config, idx.Digest},
		} {
			p.run(t, "pull", "--quiet", c.ref)
			var got []struct {
				ID          string   `json:"Id"`
				Digest      string   `json:"Digest"`
				RepoDigests []string `json:"RepoDigests"`
			}
			out := p.run(t, "image", "inspect", c.ref)
			if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
				t.Fatalf("podman image inspect %s: %v\n%s", c.ref, err, out)
			}
			if "sha256:"+got[0].ID != c.config {
				t.Errorf("podman image %s: ID %s, want the upstream config digest %s", c.ref, got[0].ID, c.config)
			}
			if got[0].Digest != c.digest {
				t.Errorf("podman image %s: digest %s, want the upstream's %s", c.ref, got[0].Digest, c.digest)
			}
			if !logged(rc.Logs(), request{Path: "/v2/" + strings.Replace(c.ref, ":", "/manifests/", 1), Status: "200", Agent: "containers/"}) {
				t.Errorf("regcache's access log has no path-prefixed request for %s from podman:\n%s", c.ref, rc.Logs())
			}
		}

		// skopeo through the same mirror configuration.
		sk := func(args ...string) string {
			t.Helper()
			return runSkopeo(t, skopeo, append([]string{"--registries-conf", conf}, args...)...)
		}
		var inspected struct {
			Digest string `json:"Digest"`
		}
		// --no-tags: containers/image lists tags at the registry itself,
		// never at a mirror.
		if out := sk("inspect", "--no-tags", "docker://docker.io/library/app:v1"); json.Unmarshal([]byte(out), &inspected) != nil || inspected.Digest != img.Digest {
			t.Errorf("skopeo inspect docker.io/library/app:v1: digest %q, want %s\n%s", inspected.Digest, img.Digest, out)
		}
		if raw := sk("inspect", "--raw", "docker://docker.io/library/multi:v1"); raw != string(idx.RawManifest) {
			t.Errorf("skopeo inspect --raw docker.io/library/multi:v1: the index bytes differ from the upstream's:\n%s", raw)
		}
		layout := filepath.Join(t.TempDir(), "multi")
		sk("copy", "--all", "--preserve-digests", "--insecure-policy", "docker://docker.io/library/multi:v1", "oci:"+layout+":v1")
		blobs := idx.ChildDigests()
		for _, c := range idx.Children {
			blobs = append(blobs, c.Blobs()...)
		}
		checkLayout(t, layout, idx.Digest, blobs)
	}
	t.Run("cold", pullAll)
	u.Stop()
	t.Run("upstream stopped", pullAll)
}

// TestPodmanMirrorRoutesByPathPrefix: podman pulls docker.io/library/app
// through the shipped registries.conf drop-in (mirror location
// <regcache>/docker.io) from a regcache whose only rule serves
// docker.io/library/* as hub/*, with no defaultRegistry. The path prefix
// (docker.io) differs from the rule's target (hub), so only routing by the
// registry in the path reaches the rule; docker.io's own location is a
// closed port, so the pull succeeds only if regcache routed it. A prefixed
// path no rule covers is answered NAME_UNKNOWN (podman then tries the next
// location).
func TestPodmanMirrorRoutesByPathPrefix(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	peers.Require(t, "podman")
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/app:v1", true)
	peers.SeedImage(t, u.Host+"/team/tool:v1", true) // upstream has it; no rule covers it
	rc := startRegcacheWithConfig(t, bin, hubLibraryOnly, "docker.io="+u.URL())
	p := newPodman(t, mirrorRegistriesConf(t, rc))

	const ref = "docker.io/library/app:v1"
	p.run(t, "pull", "--quiet", ref)
	var got []struct {
		ID     string `json:"Id"`
		Digest string `json:"Digest"`
	}
	out := p.run(t, "image", "inspect", ref)
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
		t.Fatalf("podman image inspect %s: %v\n%s", ref, err, out)
	}
	if "sha256:"+got[0].ID != img.Config || got[0].Digest != img.Digest {
		t.Errorf("podman image %s: ID %s, digest %s; want the upstream's config %s and digest %s", ref, got[0].ID, got[0].Digest, img.Config, img.Digest)
	}
	if !logged(rc.Logs(), request{Path: "/v2/docker.io/library/app/manifests/v1", Status: "200", Agent: "containers/"}) {
		t.Errorf("regcache's access log has no successful path-prefixed request for %s from podman:\n%s", ref, rc.Logs())
	}
	checkCachedAs(t, rc, "hub/app", "v1")
	checkOCIError(t, http.MethodGet, rc.URL()+"/v2/docker.io/team/tool/manifests/v1", http.StatusNotFound, "NAME_UNKNOWN")
}

package e2e

import (
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

// TestWarmThenUpstreamGone: `regcache warm` pre-loads a tag (named as
// this registry's repository) and a two-platform index (named as the
// upstream reference) through the server; its plain progress lines and
// summary name each; then the upstream is stopped and crane, skopeo,
// containerd and docker pull every platform of both, getting the
// upstream's digests, from the cache alone.
func TestWarmThenUpstreamGone(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/warmed:v1", false)
	idx := peers.SeedIndex(t, u.Host+"/library/warmed-multi:v1")
	rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+u.URL(), "--log-format", "text")
	createRule(t, bin, rc, "HubLibrary", "docker.io/library/*", "hub/*")

	out := adminCLI(t, bin, rc, "warm", "--progress", "plain", "hub/warmed:v1", "docker.io/library/warmed-multi:v1")
	for _, want := range [][]string{
		{"hub/warmed:v1: warming hub/warmed@" + img.Digest},
		{"docker.io/library/warmed-multi:v1: warming hub/warmed-multi@" + idx.Digest, "linux/amd64, linux/arm64"},
		{"hub/warmed:v1: done: 4 blobs"},
		{"docker.io/library/warmed-multi:v1: done: 6 blobs"},
		{"warmed 2 of 2 references"},
	} {
		if !hasLine(out, want...) {
			t.Errorf("warm output has no line with %q:\n%s", want, out)
		}
	}
	// A failed reference is named, and the exit status says so.
	stdout, stderr, code := adminCLIExit(t, bin, rc, "warm", "--progress", "plain", "hub/warmed:v1", "hub/missing:v1")
	if code != 1 || !strings.Contains(stderr, "1 of 2 references failed: hub/missing:v1") || !hasLine(stdout, "hub/missing:v1: failed:") {
		t.Fatalf("warm with a missing reference: exit %d\n%s\n%s", code, stdout, stderr)
	}

	u.Stop()
	pullEverywhere(t, wantImage(rc.Addr+"/hub/warmed:v1", img), wantIndex(rc.Addr+"/hub/warmed-multi:v1", idx))
}

package registry

import (
	"strings"
	"testing"
)

// BenchmarkParsePath measures the path parser every /v2/ request goes
// through first, with its allocations (the benchmark program reports
// them: go run ./e2e/bench, BENCHMARKS.md).
func BenchmarkParsePath(b *testing.B) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, bc := range []struct {
		name, path string
		kind       kind
		ref        string
	}{
		{"manifest by tag", "/v2/hub/library/alpine/manifests/3.20", kindManifest, "3.20"},
		{"manifest by digest", "/v2/hub/library/alpine/manifests/" + digest, kindManifest, digest},
		{"blob", "/v2/hub/library/alpine/blobs/" + digest, kindBlob, digest},
		{"tag list", "/v2/hub/library/alpine/tags/list", kindTags, ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := parsePath(bc.path)
				if err != nil || p.kind != bc.kind || p.name != "hub/library/alpine" || p.ref != bc.ref {
					b.Fatalf("parsePath(%q) = %+v, %v; want kind %d, name hub/library/alpine, ref %q", bc.path, p, err, bc.kind, bc.ref)
				}
			}
		})
	}
}

package registry_test

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regcache/regcache/cache"
)

// Clients that fall back to the referrers tag schema on 404
// (go-containerregistry's remote.Referrers, cosign) work against regcache.
func TestReferrersClientFallback(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/app:v1", img)
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewDigest(strings.TrimPrefix(s.url, "http://")+"/hub/app@"+d.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("remote.Referrers through regcache: %v", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 0 {
		t.Errorf("referrers of an image without any = %v", m.Manifests)
	}
}

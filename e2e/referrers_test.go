package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/e2e/peers"
)

// TestReferrersCachedTagSchema: Debian's docker-registry (distribution
// 2.8) has no referrers API, so go-containerregistry pushes a signature
// of an image there under the referrers tag schema (a sha256-<hex> tag
// listing it). Through regcache's referrers API, a client lists it
// (filtered and unfiltered); then, with the upstream stopped, the listing,
// the signature manifest and its blob are served from the cache, byte for
// byte the upstream's.
func TestReferrersCachedTagSchema(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	u := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
	img := peers.SeedImage(t, u.Host+"/library/signed:v1", true)
	subject := v1.Descriptor{MediaType: types.MediaType(img.MediaType), Digest: mustHash(t, img.Digest), Size: int64(len(img.RawManifest))}
	payload := []byte(`{"critical":{"image":{"docker-manifest-digest":"` + img.Digest + `"}}}`)
	sig := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	sig = mutate.ConfigMediaType(sig, "application/vnd.dev.cosign.artifact.sig.v1+json")
	sig, err := mutate.Append(sig, mutate.Addendum{Layer: static.NewLayer(payload, "application/vnd.dev.cosign.simplesigning.v1+json")})
	if err != nil {
		t.Fatal(err)
	}
	sig = mutate.Subject(sig, subject).(v1.Image)
	sigDigest, _ := sig.Digest()
	sigRaw, _ := sig.RawManifest()
	if err := remote.Write(parse(t, u.Host+"/library/signed@"+sigDigest.String()), sig, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	// The upstream has no referrers API: the fallback tag is there.
	if _, err := remote.Get(parse(t, u.Host+"/library/signed:"+strings.Replace(img.Digest, ":", "-", 1)), remote.WithContext(t.Context())); err != nil {
		t.Fatalf("no referrers tag on the upstream: %v", err)
	}

	rc := startLocalRegcache(t, bin, u)
	base := rc.URL() + "/v2/hub/signed/referrers/" + img.Digest
	list := func(t *testing.T, url string) []string {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var idx struct {
			Manifests []struct {
				Digest string `json:"digest"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
		}
		var out []string
		for _, m := range idx.Manifests {
			out = append(out, m.Digest)
		}
		return out
	}
	check := func(t *testing.T) {
		if got := list(t, base); len(got) != 1 || got[0] != sigDigest.String() {
			t.Fatalf("referrers %v, want the signature %s", got, sigDigest)
		}
		if got := list(t, base+"?artifactType=application/vnd.dev.cosign.artifact.sig.v1%2Bjson"); len(got) != 1 {
			t.Fatalf("filtered referrers %v, want the signature", got)
		}
		if got := list(t, base+"?artifactType=application/spdx%2Bjson"); len(got) != 0 {
			t.Fatalf("referrers of another type %v, want none", got)
		}
	}
	check(t) // the only request while the upstream is up
	u.Stop()
	t.Run("upstream stopped", func(t *testing.T) {
		check(t)
		desc, err := remote.Get(parse(t, rc.Addr+"/hub/signed@"+sigDigest.String()), remote.WithContext(t.Context()))
		if err != nil {
			t.Fatalf("signature manifest: %v", err)
		}
		if !bytes.Equal(desc.Manifest, sigRaw) {
			t.Fatal("the signature manifest differs from the upstream's")
		}
		layers, _ := sig.Layers()
		ld, _ := layers[0].Digest()
		resp, err := http.Get(rc.URL() + "/v2/hub/signed/blobs/" + ld.String())
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, payload) {
			t.Fatalf("signature payload: %s, %q", resp.Status, got)
		}
	})
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

package registry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/cache"
)

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hostOfURL(u string) string { return strings.TrimPrefix(u, "http://") }

// go-containerregistry pushes an image and a two-platform index into a
// local repository and pulls them back byte for byte.
func TestPushPullLocal(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{local: true})
	host := hostOfURL(s.url)
	img, err := random.Image(200<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, host+"/lab/app:v1"), img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push: %v", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		child, _ := random.Image(1024, 1)
		child = mutate.MediaType(child, types.OCIManifestSchema1)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: child, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	if err := remote.WriteIndex(ref(t, host+"/lab/multi:v1"), idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push index: %v", err)
	}
	for _, c := range []struct {
		ref  string
		want interface {
			RawManifest() ([]byte, error)
		}
	}{{host + "/lab/app:v1", img}, {host + "/lab/multi:v1", idx}} {
		desc, err := remote.Get(ref(t, c.ref), remote.WithContext(t.Context()))
		if err != nil {
			t.Fatalf("pull %s: %v", c.ref, err)
		}
		raw, _ := c.want.RawManifest()
		if !bytes.Equal(desc.Manifest, raw) {
			t.Fatalf("%s: manifest differs from the pushed one", c.ref)
		}
	}
	got, err := remote.Image(ref(t, host+"/lab/app:v1"), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := got.Layers()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil { // verifies the digest
			t.Fatalf("layer: %v", err)
		}
		rc.Close()
	}
	// A second repository mounts the blobs instead of uploading them.
	if err := remote.Write(ref(t, host+"/lab/copy:v1"), img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	// The catalog lists both, paginated.
	resp, body := do(t, "GET", s.url+"/v2/_catalog?n=2", nil, nil)
	if resp.StatusCode != 200 || string(body) != `{"repositories":["lab/app","lab/copy"]}`+"\n" || resp.Header.Get("Link") != `</v2/_catalog?last=lab%2Fcopy&n=2>; rel="next"` {
		t.Fatalf("catalog page 1: %d %s, Link %q", resp.StatusCode, body, resp.Header.Get("Link"))
	}
	resp, body = do(t, "GET", s.url+"/v2/_catalog?n=2&last=lab%2Fcopy", nil, nil)
	if string(body) != `{"repositories":["lab/multi"]}`+"\n" || resp.Header.Get("Link") != "" {
		t.Fatalf("catalog page 2: %s, Link %q", body, resp.Header.Get("Link"))
	}
}

// uploadLocation starts a session and returns its Location.
func uploadLocation(t *testing.T, s *stack, repo string) string {
	t.Helper()
	resp, body := do(t, "POST", s.url+"/v2/"+repo+"/blobs/uploads/", nil, nil)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Location") == "" {
		t.Fatalf("POST upload: %d %s", resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

func TestBlobUploads(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{local: true, upstreams: map[string]string{"docker.io": "http://127.0.0.1:1"}, rules: []cache.Rule{hubRule}})
	blob := bytes.Repeat([]byte("chunked blob "), 1000)
	d := digestOf(blob)

	// Chunks: out of order is 416 with the session's Range.
	loc := uploadLocation(t, s, "lab/app")
	resp, _ := do(t, "PATCH", s.url+loc, map[string]string{"Content-Range": "100-199"}, bytes.NewReader(blob[100:200]))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Range") != "0-0" {
		t.Fatalf("out-of-order chunk: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	resp, body := do(t, "PATCH", s.url+loc, map[string]string{"Content-Range": "0-99"}, bytes.NewReader(blob[:100]))
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-99" || resp.Header.Get("Location") != loc {
		t.Fatalf("first chunk: %d %s, Range %q, Location %q", resp.StatusCode, body, resp.Header.Get("Range"), resp.Header.Get("Location"))
	}
	resp, _ = do(t, "PATCH", s.url+loc, map[string]string{"Content-Range": "0-99"}, bytes.NewReader(blob[:100]))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Range") != "0-99" {
		t.Fatalf("repeated chunk: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	resp, _ = do(t, "GET", s.url+loc, nil, nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != "0-99" {
		t.Fatalf("status: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	// A streamed chunk, then PUT with the last bytes.
	resp, _ = do(t, "PATCH", s.url+loc, nil, bytes.NewReader(blob[100:5000]))
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-4999" {
		t.Fatalf("streamed chunk: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	resp, body = do(t, "PUT", s.url+loc+"?digest="+d, nil, bytes.NewReader(blob[5000:]))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v2/lab/app/blobs/"+d || resp.Header.Get("Docker-Content-Digest") != d {
		t.Fatalf("PUT: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := do(t, "GET", s.url+"/v2/lab/app/blobs/"+d, nil, nil); resp.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("GET pushed blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, body := do(t, "GET", s.url+loc, nil, nil); resp.StatusCode != 404 || ociCode(t, body) != "BLOB_UPLOAD_UNKNOWN" {
		t.Fatalf("finished session: %d %s", resp.StatusCode, body)
	}

	other := []byte("monolithic")
	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
		body               []byte
		status             int
		code               string
		location           string
	}{
		{"monolithic POST", "POST", "/v2/lab/app/blobs/uploads/?digest=" + digestOf(other), nil, other, 201, "", "/v2/lab/app/blobs/" + digestOf(other)},
		{"monolithic wrong digest", "POST", "/v2/lab/app/blobs/uploads/?digest=" + digestOf([]byte("x")), nil, other, 400, "DIGEST_INVALID", ""},
		{"mount from a repository that has it", "POST", "/v2/lab/other/blobs/uploads/?mount=" + d + "&from=lab/app", nil, nil, 201, "", "/v2/lab/other/blobs/" + d},
		{"mount from one that has not", "POST", "/v2/lab/third/blobs/uploads/?mount=" + d + "&from=lab/nothing", nil, nil, 202, "", "/v2/lab/third/blobs/uploads/"},
		{"mount without from", "POST", "/v2/lab/third/blobs/uploads/?mount=" + d, nil, nil, 202, "", "/v2/lab/third/blobs/uploads/"},
		{"unknown session", "PATCH", "/v2/lab/app/blobs/uploads/0123456789abcdef", nil, []byte("x"), 404, "BLOB_UPLOAD_UNKNOWN", ""},
		{"bad Content-Range", "PATCH", loc, map[string]string{"Content-Range": "bytes=9-1"}, []byte("x"), 400, "BLOB_UPLOAD_INVALID", ""},
		{"push into a cache", "POST", "/v2/hub/app/blobs/uploads/", nil, nil, 403, "DENIED", ""},
		{"delete a blob of a cache", "DELETE", "/v2/hub/app/blobs/" + d, nil, nil, 403, "DENIED", ""},
		{"delete a blob", "DELETE", "/v2/lab/other/blobs/" + d, nil, nil, 202, "", ""},
		{"deleted blob", "GET", "/v2/lab/other/blobs/" + d, nil, nil, 404, "BLOB_UNKNOWN", ""},
		{"manifest with missing blobs", "PUT", "/v2/lab/app/manifests/v1", map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
			[]byte(`{"schemaVersion":2,"config":{"mediaType":"c","digest":"` + digestOf([]byte("cfg")) + `","size":3},"layers":[]}`), 400, "MANIFEST_BLOB_UNKNOWN", ""},
		{"manifest too large", "PUT", "/v2/lab/app/manifests/v1", nil, bytes.Repeat([]byte(" "), 4<<20+1), 413, "MANIFEST_INVALID", ""},
		{"manifest body not matching its digest", "PUT", "/v2/lab/app/manifests/" + digestOf([]byte("y")), nil, []byte(`{"schemaVersion":2}`), 400, "DIGEST_INVALID", ""},
		{"catalog by POST", "POST", "/v2/_catalog", nil, nil, 405, "UNSUPPORTED", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, s.url+tc.path, tc.header, bytes.NewReader(tc.body))
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if tc.code != "" {
				if got := ociCode(t, body); got != tc.code {
					t.Fatalf("code %s, want %s (%s)", got, tc.code, body)
				}
			}
			if !strings.HasPrefix(resp.Header.Get("Location"), tc.location) {
				t.Fatalf("Location %q, want %q...", resp.Header.Get("Location"), tc.location)
			}
		})
	}
	// The refusal names the rule and its source.
	_, body = do(t, "POST", s.url+"/v2/hub/app/blobs/uploads/", nil, nil)
	if !strings.Contains(string(body), `rule \"hub-library\"`) || !strings.Contains(string(body), "docker.io/library/app") {
		t.Fatalf("DENIED message %s does not name the rule and its source", body)
	}
}

// A default registry sends every unmatched name to Docker Hub; a local
// namespace keeps its names local.
func TestLocalNamespaceRouting(t *testing.T) {
	t.Parallel()
	hubAll := cache.Rule{Name: "hub-all", Source: "docker.io/*", Target: "docker.io/*"}
	for _, tc := range []struct {
		name    string
		localNS []string
		status  int
	}{
		{"without a local namespace the name is Docker Hub's", nil, 403},
		{"a local namespace keeps it local", []string{"lab/*"}, 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, stackConfig{local: true, defReg: "docker.io", localNS: tc.localNS, upstreams: map[string]string{"docker.io": "http://127.0.0.1:1"}, rules: []cache.Rule{hubAll}})
			resp, body := do(t, "POST", s.url+"/v2/lab/app/blobs/uploads/", nil, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("push to lab/app: %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			// No rule may target a local namespace (nor cover one).
			for _, target := range []string{"lab/*", "lab/app", "*"} {
				r := cache.Rule{Name: "lab-rule", Source: "quay.io/lab/*", Target: target}
				if !strings.HasSuffix(target, "*") {
					r.Source = "quay.io/lab/app"
				}
				if target == "*" {
					r.Target, r.Source = "l/*", "quay.io/l/*"
				}
				_, err := s.store.Create(t.Context(), r)
				var fe *cache.FieldError
				refused := errors.As(err, &fe) && strings.Contains(fe.Reason, "local namespace")
				if refused != (tc.localNS != nil && target != "*") {
					t.Errorf("rule with target %s: %v", r.Target, err)
				}
				if err == nil {
					s.store.Delete(t.Context(), r.Name)
				}
			}
		})
	}
}

func TestManifestNegotiation(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{local: true})
	host := hostOfURL(s.url)
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var amd64 v1.Image
	for _, arch := range []string{"arm64", "amd64"} {
		child, _ := random.Image(512, 1)
		child = mutate.MediaType(child, types.OCIManifestSchema1)
		if arch == "amd64" {
			amd64 = child
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: child, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	if err := remote.WriteIndex(ref(t, host+"/lab/multi:v1"), idx, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	amdDigest, _ := amd64.Digest()
	for _, tc := range []struct {
		name, path, accept string
		status             int
		digest             string
	}{
		{"no Accept: as stored", "/v2/lab/multi/manifests/v1", "", 200, idxDigest.String()},
		{"index accepted", "/v2/lab/multi/manifests/v1", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json", 200, idxDigest.String()},
		{"wildcard", "/v2/lab/multi/manifests/v1", "*/*", 200, idxDigest.String()},
		{"parameters and capitals", "/v2/lab/multi/manifests/v1", "application/vnd.docker.distribution.manifest.v2+json;q=0.5, Application/VND.OCI.Image.Index.v1+json ; q=0.9", 200, idxDigest.String()},
		{"parameters: only image manifests", "/v2/lab/multi/manifests/v1", "application/vnd.oci.image.manifest.v1+json; q=1", 200, amdDigest.String()},
		{"only image manifests, by tag: linux/amd64", "/v2/lab/multi/manifests/v1", "application/vnd.oci.image.manifest.v1+json", 200, amdDigest.String()},
		{"only Docker v2: said so", "/v2/lab/multi/manifests/v1", "application/vnd.docker.distribution.manifest.v2+json", 404, ""},
		{"by digest: no substitute", "/v2/lab/multi/manifests/" + idxDigest.String(), "application/vnd.oci.image.manifest.v1+json", 404, ""},
		{"OCI manifest to a Docker-only client", "/v2/lab/multi/manifests/" + amdDigest.String(), "application/vnd.docker.distribution.manifest.v2+json", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.accept != "" {
				h["Accept"] = tc.accept
			}
			resp, body := do(t, "GET", s.url+tc.path, h, nil)
			if resp.StatusCode != tc.status || resp.Header.Get("Docker-Content-Digest") != tc.digest {
				t.Fatalf("%d %s (digest %q), want %d %q", resp.StatusCode, body, resp.Header.Get("Docker-Content-Digest"), tc.status, tc.digest)
			}
			if tc.status == 404 && (ociCode(t, body) != "MANIFEST_UNKNOWN" || !strings.Contains(string(body), "does not list")) {
				t.Fatalf("refusal does not say why: %s", body)
			}
		})
	}
}

// artifactFor builds an artifact manifest whose subject is img.
func artifactFor(t *testing.T, img v1.Image, artifactType string) v1.Image {
	t.Helper()
	desc, err := partialDescriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	a := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	a = mutate.ConfigMediaType(a, types.MediaType(artifactType))
	a, err = mutate.Append(a, mutate.Addendum{Layer: static.NewLayer([]byte("signature of "+desc.Digest.String()), "application/vnd.example.sig")})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Subject(a, desc).(v1.Image)
}

func partialDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}, err
}

type referrersBody struct {
	MediaType string `json:"mediaType"`
	Manifests []struct {
		Digest       string `json:"digest"`
		ArtifactType string `json:"artifactType"`
	} `json:"manifests"`
}

func listReferrers(t *testing.T, url string) (referrersBody, *http.Response) {
	t.Helper()
	resp, body := do(t, "GET", url, nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("GET %s: %d %s (%s)", url, resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	var out referrersBody
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out, resp
}

func TestReferrersLocal(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{local: true})
	host := hostOfURL(s.url)
	img, _ := random.Image(1024, 1)
	imgDigest, _ := img.Digest()
	if err := remote.Write(ref(t, host+"/lab/app:v1"), img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	for _, at := range []string{"application/vnd.example.sig", "application/vnd.example.sbom"} {
		a := artifactFor(t, img, at)
		ad, _ := a.Digest()
		// remote.Write checks OCI-Subject: without it, it would fall back
		// to the tag schema and push a sha256-<hex> tag.
		if err := remote.Write(ref(t, host+"/lab/app@"+ad.String()), a, remote.WithContext(t.Context())); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := listReferrers(t, s.url+"/v2/lab/app/referrers/"+imgDigest.String())
	if len(all.Manifests) != 2 {
		t.Fatalf("referrers: %+v, want 2", all)
	}
	sigs, resp := listReferrers(t, s.url+"/v2/lab/app/referrers/"+imgDigest.String()+"?artifactType=application/vnd.example.sig")
	if len(sigs.Manifests) != 1 || sigs.Manifests[0].ArtifactType != "application/vnd.example.sig" || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers: %+v, OCI-Filters-Applied %q", sigs, resp.Header.Get("OCI-Filters-Applied"))
	}
	if tags := tagList(t, s, "lab/app"); len(tags) != 1 {
		t.Fatalf("tags %v: a fallback tag was pushed, so OCI-Subject was not answered", tags)
	}
	none, _ := listReferrers(t, s.url+"/v2/lab/app/referrers/"+digestOf([]byte("nothing")))
	if none.Manifests == nil || len(none.Manifests) != 0 {
		t.Fatalf("referrers of an unknown subject: %+v, want an empty list", none)
	}
	// A deleted referrer is no longer listed.
	d := all.Manifests[0].Digest
	if resp, body := do(t, "DELETE", s.url+"/v2/lab/app/manifests/"+d, nil, nil); resp.StatusCode != 202 {
		t.Fatalf("delete referrer: %d %s", resp.StatusCode, body)
	}
	if after, _ := listReferrers(t, s.url+"/v2/lab/app/referrers/"+imgDigest.String()); len(after.Manifests) != 1 || after.Manifests[0].Digest == d {
		t.Fatalf("after delete: %+v", after)
	}
}

func tagList(t *testing.T, s *stack, repo string) []string {
	t.Helper()
	_, body := do(t, "GET", s.url+"/v2/"+repo+"/tags/list", nil, nil)
	var tl struct {
		Tags []string `json:"tags"`
	}
	json.Unmarshal(body, &tl)
	return tl.Tags
}

// Cached repositories list referrers from the upstream's referrers API
// or, for an upstream without one, from its sha256-<hex> tag; both are
// served, with the referrer manifests and blobs, once the upstream is down.
func TestReferrersCached(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		api  bool
	}{{"referrers API", true}, {"tag schema", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)), ggcr.WithReferrersSupport(tc.api)))
			defer up.Close()
			img, _ := random.Image(1024, 1)
			imgDigest, _ := img.Digest()
			pushImage(t, up, "library/app:v1", img)
			sig := artifactFor(t, img, "application/vnd.example.sig")
			sigDigest, _ := sig.Digest()
			if err := remote.Write(ref(t, hostOf(up)+"/library/app@"+sigDigest.String()), sig, remote.WithContext(t.Context())); err != nil {
				t.Fatal(err)
			}
			s := newStack(t, stackConfig{local: true, upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})
			url := s.url + "/v2/hub/app/referrers/" + imgDigest.String()
			list := func(t *testing.T) {
				got, _ := listReferrers(t, url)
				if len(got.Manifests) != 1 || got.Manifests[0].Digest != sigDigest.String() || got.Manifests[0].ArtifactType != "application/vnd.example.sig" {
					t.Fatalf("referrers: %+v, want the signature %s", got, sigDigest)
				}
			}
			// Only the listing while the upstream is up: the signature and
			// its blobs must have been cached with it.
			list(t)
			up.Close()
			t.Run("upstream stopped", func(t *testing.T) {
				list(t)
				desc, err := remote.Get(ref(t, hostOfURL(s.url)+"/hub/app@"+sigDigest.String()), remote.WithContext(t.Context()))
				if err != nil {
					t.Fatalf("pull the signature: %v", err)
				}
				raw, _ := sig.RawManifest()
				if !bytes.Equal(desc.Manifest, raw) {
					t.Fatal("signature manifest differs from the upstream's")
				}
				layers, _ := sig.Layers()
				ld, _ := layers[0].Digest()
				want, _ := layers[0].Compressed()
				wantBytes, _ := io.ReadAll(want)
				if resp, body := do(t, "GET", s.url+"/v2/hub/app/blobs/"+ld.String(), nil, nil); resp.StatusCode != 200 || !bytes.Equal(body, wantBytes) {
					t.Fatalf("signature layer: %d", resp.StatusCode)
				}
			})
		})
	}
}

package registry

import (
	"net/http"
	"strings"
	"testing"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/storage"
)

// FuzzParsePath: every path parsePath accepts names a repository in the
// repository grammar (no empty, "." or ".." segment) and a reference of
// the kind its endpoint takes, and is exactly the path those parts spell;
// every path it refuses is a client error (400 or 404), never a 500.
func FuzzParsePath(f *testing.F) {
	const digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	for _, p := range []string{
		"/v2/", "/v2", "/v2/ubuntu/manifests/24.04", "/v2/a/b/c/manifests/" + digest, "/v2/a/b/blobs/" + digest,
		"/v2/a/tags/list", "/v2/a/blobs/uploads", "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/some-id",
		"/v2/a/referrers/" + digest, "/v2/x/manifests/y/manifests/latest", "/v2/x/blobs/uploads/y/manifests/latest",
		"/v2/hub/../private/secret/manifests/v1", "/v2/hub/./x/manifests/v1", "/v2/hub//x/manifests/v1",
		"/v2//manifests/v1", "/v2/x/manifests/", "/v2/x/manifests/a:b", "/v2/x/manifests/SHA256:" + digest[7:],
		"/v2/x/blobs/sha256:" + strings.ToUpper(digest[7:]), "/v2/x/blobs/" + digest + "/", "/v2/x/tags/list/",
		"/v2/../_catalog", "/v2/_catalog", "/v2/x/manifests/v1?ns=docker.io", "/v3/x/manifests/v1", "/v2/X/manifests/v1",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := parsePath(p)
		if err != nil {
			if code, status := codeOf(err); status != http.StatusBadRequest && status != http.StatusNotFound {
				t.Fatalf("parsePath(%q): %v answers %d %s, want a 400 or 404", p, err, status, code)
			}
			return
		}
		if got.kind == kindBase {
			if p != "/v2/" && p != "/v2" {
				t.Fatalf("parsePath(%q) = the base endpoint", p)
			}
			return
		}
		if got.kind == kindCatalog {
			if p != "/v2/_catalog" {
				t.Fatalf("parsePath(%q) = the catalog", p)
			}
			return
		}
		if !cache.ValidRepository(got.name) {
			t.Fatalf("parsePath(%q) = name %q, outside the repository grammar", p, got.name)
		}
		var canonical string
		switch got.kind {
		case kindManifest:
			tag, digestRef := cache.ValidTag(got.ref), cache.IsDigest(got.ref)
			if _, derr := storage.ParseDigest(got.ref); tag == digestRef || (digestRef && derr != nil) {
				t.Fatalf("parsePath(%q) = manifest reference %q: neither a tag nor a valid digest", p, got.ref)
			}
			canonical = "/v2/" + got.name + "/manifests/" + got.ref
		case kindBlob, kindReferrer:
			if _, derr := storage.ParseDigest(got.ref); derr != nil {
				t.Fatalf("parsePath(%q) = digest %q: %v", p, got.ref, derr)
			}
			canonical = "/v2/" + got.name + map[kind]string{kindBlob: "/blobs/", kindReferrer: "/referrers/"}[got.kind] + got.ref
		case kindTags:
			canonical = "/v2/" + got.name + "/tags/list"
		case kindUpload:
			rest, ok := strings.CutPrefix(p, "/v2/"+got.name+"/blobs/uploads")
			if id, slash := strings.CutPrefix(rest, "/"); !ok || (rest != "" && (!slash || strings.Contains(id, "/"))) {
				t.Fatalf("parsePath(%q) = upload of %q: not the path of an upload of that repository", p, got.name)
			}
			return
		default:
			t.Fatalf("parsePath(%q) = unknown kind %d", p, got.kind)
		}
		if canonical != p {
			t.Fatalf("parsePath(%q) = %+v, which spells %q", p, got, canonical)
		}
		if again, err := parsePath(canonical); err != nil || again != got {
			t.Fatalf("parsePath(%q) = %+v, %v; want %+v again", canonical, again, err, got)
		}
	})
}

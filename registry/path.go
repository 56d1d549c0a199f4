package registry

import (
	"fmt"
	"strings"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/storage"
)

// kind is what an OCI distribution path addresses.
type kind int

const (
	kindBase     kind = iota // /v2/
	kindManifest             // /v2/<name>/manifests/<reference>
	kindBlob                 // /v2/<name>/blobs/<digest>
	kindTags                 // /v2/<name>/tags/list
	kindUpload               // /v2/<name>/blobs/uploads/...
	kindReferrer             // /v2/<name>/referrers/<digest>
	kindCatalog              // /v2/_catalog
)

// ociPath is a parsed OCI distribution API path.
type ociPath struct {
	kind kind
	name string // repository name
	ref  string // tag or digest (manifests), digest (blobs, referrers), session id (uploads)
}

// parsePath parses the URL path of an OCI distribution API request. It is
// the one place that knows the path grammar
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#endpoints).
func parsePath(p string) (ociPath, error) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		if p == "/v2" {
			return ociPath{kind: kindBase}, nil
		}
		return ociPath{}, fmt.Errorf("%w: %s", errNotFound, p)
	}
	if rest == "" {
		return ociPath{kind: kindBase}, nil
	}
	if rest == "_catalog" {
		return ociPath{kind: kindCatalog}, nil
	}
	// A reference (tag, digest or upload id) holds no '/', so the endpoint is
	// named by the segments before the last one; the repository name may
	// itself hold segments such as "manifests" or "blobs".
	head, ref := "", rest
	if i := strings.LastIndex(rest, "/"); i >= 0 {
		head, ref = rest[:i], rest[i+1:]
	}
	var out ociPath
	switch {
	case strings.HasSuffix(rest, "/tags/list"):
		out = ociPath{kind: kindTags, name: strings.TrimSuffix(rest, "/tags/list")}
	case strings.HasSuffix(rest, "/blobs/uploads"):
		out = ociPath{kind: kindUpload, name: strings.TrimSuffix(rest, "/blobs/uploads")}
	case strings.HasSuffix(head, "/blobs/uploads"):
		out = ociPath{kind: kindUpload, name: strings.TrimSuffix(head, "/blobs/uploads"), ref: ref}
	case strings.HasSuffix(head, "/manifests"):
		out = ociPath{kind: kindManifest, name: strings.TrimSuffix(head, "/manifests"), ref: ref}
	case strings.HasSuffix(head, "/blobs"):
		out = ociPath{kind: kindBlob, name: strings.TrimSuffix(head, "/blobs"), ref: ref}
	case strings.HasSuffix(head, "/referrers"):
		out = ociPath{kind: kindReferrer, name: strings.TrimSuffix(head, "/referrers"), ref: ref}
	default:
		return ociPath{}, fmt.Errorf("%w: %s", errNotFound, p)
	}
	if !cache.ValidRepository(out.name) {
		return out, fmt.Errorf("%w: %q must be lowercase letters and digits separated by '.', '_', '__', '-' or '/'", cache.ErrNameInvalid, out.name)
	}
	switch out.kind {
	case kindManifest:
		if cache.IsDigest(out.ref) {
			if _, err := storage.ParseDigest(out.ref); err != nil {
				return out, fmt.Errorf("%w: %v", errDigestInvalid, err)
			}
		} else if !cache.ValidTag(out.ref) {
			return out, fmt.Errorf("%w: %q must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", errTagInvalid, out.ref)
		}
	case kindBlob, kindReferrer:
		if _, err := storage.ParseDigest(out.ref); err != nil {
			return out, fmt.Errorf("%w: %v", errDigestInvalid, err)
		}
	}
	return out, nil
}

package cache

import (
	"context"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/regcache/regcache/manifest"
)

// Negotiate decides what to serve for a manifest request whose Accept
// header values are accept, given the stored manifest c of repo found for
// ref; the caller closes the Body of what is returned (c's Body is closed
// when something else is returned).
//
// It follows distribution: a client that names manifest media types but
// not c's is not silently handed c. For an index requested by tag, the
// linux/amd64 manifest is served instead when the client accepts its type
// (as distribution does for old Docker clients); otherwise the answer is
// MANIFEST_UNKNOWN saying which type is stored. A request without Accept,
// with a wildcard, or naming no manifest type at all gets c as it is.
func (p *Puller) Negotiate(ctx context.Context, repo, ref string, c Content, accept []string) (Content, error) {
	// The common answer, decided without allocating: what is stored is
	// accepted, or no manifest type is named.
	if !manifest.Known(c.MediaType) || accepts(accept, func(mt string) bool {
		return mt == "*/*" || mt == c.MediaType || strings.EqualFold(mt, "application/*") || strings.EqualFold(mt, c.MediaType)
	}) {
		return c, nil
	}
	if !accepts(accept, func(mt string) bool {
		for _, t := range manifest.Types {
			if strings.EqualFold(mt, t) {
				return true
			}
		}
		return false
	}) {
		return c, nil
	}
	if manifest.IsIndex(c.MediaType) && !IsDigest(ref) {
		if child, ok := p.platformManifest(ctx, repo, c, acceptedTypes(accept)); ok {
			c.Body.Close()
			return child, nil
		}
	}
	c.Body.Close()
	return Content{}, fmt.Errorf("%w: %s:%s is %s, which the request's Accept header (%s) does not list; add it to Accept",
		ErrManifestUnknown, repo, ref, c.MediaType, strings.Join(accept, ", "))
}

// platformManifest returns the linux/amd64 manifest of index c when its
// media type is accepted; c's Body is left open (rewound).
func (p *Puller) platformManifest(ctx context.Context, repo string, c Content, types map[string]bool) (Content, bool) {
	body, err := io.ReadAll(io.LimitReader(c.Body, manifest.MaxSize+1))
	if _, serr := c.Body.Seek(0, io.SeekStart); err != nil || serr != nil {
		return Content{}, false
	}
	idx, err := manifest.Parse(c.MediaType, body)
	if err != nil {
		return Content{}, false
	}
	for _, d := range idx.Manifests {
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != "amd64" || !types[d.MediaType] {
			continue
		}
		child, err := p.Manifest(ctx, repo, d.Digest)
		if err != nil {
			return Content{}, false
		}
		if !types[child.MediaType] {
			child.Body.Close()
			return Content{}, false
		}
		return child, true
	}
	return Content{}, false
}

// accepts reports whether one of the media types that Accept header
// values list (comma-separated, with parameters) satisfies is.
func accepts(accept []string, is func(mediaType string) bool) bool {
	for _, h := range accept {
		for h != "" {
			var part string
			part, h, _ = strings.Cut(h, ",")
			mt, _, _ := strings.Cut(part, ";")
			if mt = strings.TrimSpace(mt); mt != "" && is(mt) {
				return true
			}
		}
	}
	return false
}

// acceptedTypes returns the media types of Accept header values (each may
// list several, comma-separated, with parameters).
func acceptedTypes(accept []string) map[string]bool {
	types := map[string]bool{}
	for _, h := range accept {
		for _, part := range strings.Split(h, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil {
				types[mt] = true
			}
		}
	}
	return types
}

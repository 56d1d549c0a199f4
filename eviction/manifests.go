package eviction

import (
	"context"
	"fmt"
	"io"

	"github.com/regcache/regcache/manifest"
)

// refs is what a manifest references.
type refs struct {
	children []string // child manifests of an index
	blobs    []string // config and layers
	subject  string   // the manifest it refers to, if any
}

// refCache keeps the references of manifests already read: a manifest
// never changes under its digest, so each is read once, not every run.
// Only the runs (one at a time) use it.
type refCache struct {
	m map[string]refs
}

// get returns the references of the stored manifest digest of mediaType
// ("": read from the body); ok is false when it cannot be read or is not
// a manifest regcache parses (then it references nothing eviction knows
// of).
func (c *refCache) get(ctx context.Context, blobs Blobs, digest, mediaType string) (refs, bool) {
	if r, ok := c.m[digest]; ok {
		return r, true
	}
	if mediaType != "" && !manifest.Known(mediaType) {
		return refs{}, false
	}
	r, err := readRefs(ctx, blobs, digest, mediaType)
	if err != nil {
		return refs{}, false
	}
	c.m[digest] = r
	return r, true
}

// prune forgets the manifests not in keep.
func (c *refCache) prune(keep map[string]bool) {
	for d := range c.m {
		if !keep[d] {
			delete(c.m, d)
		}
	}
}

func readRefs(ctx context.Context, blobs Blobs, digest, mediaType string) (refs, error) {
	f, _, err := blobs.Open(ctx, digest)
	if err != nil {
		return refs{}, err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, manifest.MaxSize+1))
	if err != nil {
		return refs{}, fmt.Errorf("read manifest %s: %w", digest, err)
	}
	m, err := manifest.Parse(mediaType, body)
	if err != nil {
		return refs{}, err
	}
	var r refs
	for _, d := range m.Manifests {
		r.children = append(r.children, d.Digest)
	}
	for _, d := range m.Blobs() {
		r.blobs = append(r.blobs, d.Digest)
	}
	if m.Subject != nil {
		r.subject = m.Subject.Digest
	}
	return r, nil
}

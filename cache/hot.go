package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sync"
	"time"
)

// Manifests are the requests clients send most: a kubelet or containerd
// asks for one by tag on every pod start. Their bytes (a few KiB) are
// kept in memory once read from the store and verified against their
// digest, so that a manifest hit opens no file. They are served only
// while linked to the repository asked for: the link, not this copy,
// says whether a repository has a manifest, so eviction, deletion and
// garbage collection need not know of it.

// maxHotManifest is the largest manifest kept in memory; a larger one is
// read from the store each time.
const maxHotManifest = 256 << 10

// hotManifestBudget bounds the bytes kept; when full the set starts over.
const hotManifestBudget = 32 << 20

// hotManifests holds verified manifest bytes by digest.
type hotManifests struct {
	mu    sync.RWMutex
	m     map[string][]byte
	bytes int64
}

func newHotManifests() *hotManifests { return &hotManifests{m: map[string][]byte{}} }

func (h *hotManifests) get(digest string) ([]byte, bool) {
	h.mu.RLock()
	b, ok := h.m[digest]
	h.mu.RUnlock()
	return b, ok
}

func (h *hotManifests) add(digest string, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.m[digest]; ok {
		return
	}
	if h.bytes+int64(len(b)) > hotManifestBudget {
		clear(h.m)
		h.bytes = 0
	}
	h.m[digest] = b
	h.bytes += int64(len(b))
}

// bytesBody is an in-memory Body.
type bytesBody struct{ bytes.Reader }

func (*bytesBody) Close() error { return nil }

// memContent is stored content held in memory.
func memContent(b []byte, digest, mediaType string) Content {
	body := &bytesBody{}
	body.Reset(b)
	return Content{Body: body, Size: int64(len(b)), Digest: digest, MediaType: mediaType, Bytes: b}
}

// openLinked opens digest if it is linked to repo and present in the store:
// a manifest from memory once it was read and verified.
func (p *Puller) openLinked(ctx context.Context, repo, digest string) (Content, error) {
	l, err := p.meta.Linked(ctx, repo, digest)
	if err != nil {
		return Content{}, err
	}
	hot := l.MediaType != "" && l.Size <= maxHotManifest
	if hot {
		if b, ok := p.hot.get(digest); ok {
			return memContent(b, digest, l.MediaType), nil
		}
	}
	f, size, err := p.blobs.Open(ctx, digest)
	if err != nil {
		return Content{}, err
	}
	if hot && size <= maxHotManifest {
		b, err := io.ReadAll(f)
		if err == nil && verifies(b, digest) {
			f.Close()
			p.hot.add(digest, b)
			return memContent(b, digest, l.MediaType), nil
		}
		// Unreadable, or not what its digest says: served from the file
		// as ever (fsck finds and repairs damaged blobs).
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			f.Close()
			return Content{}, err
		}
	}
	return Content{Body: f, Size: size, Digest: digest, MediaType: l.MediaType}, nil
}

// verifies reports whether b hashes to digest.
func verifies(b []byte, digest string) bool {
	sum := sha256.Sum256(b)
	return digest == "sha256:"+hex.EncodeToString(sum[:])
}

// OutcomeContext is WithOutcome for a server that embeds it in what it
// allocates per request anyway: Init costs no allocation. Its methods
// other than Value are its parent's.
type OutcomeContext struct {
	parent context.Context
	o      *Outcome
}

// Init makes c its parent carrying o, as WithOutcome(parent, o) does.
// Call it once, before c is used.
func (c *OutcomeContext) Init(parent context.Context, o *Outcome) {
	c.parent, c.o = parent, o
}

// Deadline returns the parent's deadline.
func (c *OutcomeContext) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done returns the parent's Done channel.
func (c *OutcomeContext) Done() <-chan struct{} { return c.parent.Done() }

// Err returns the parent's error.
func (c *OutcomeContext) Err() error { return c.parent.Err() }

// Value returns the Outcome for the outcome's key, else the parent's value.
func (c *OutcomeContext) Value(k any) any {
	if _, ok := k.(outcomeKey); ok {
		return c.o
	}
	return c.parent.Value(k)
}

package local

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
)

// guard is the protocol between garbage collection and the operations
// that make a blob reachable (committing an upload, a monolithic push, a
// mount, a manifest push). Such an operation protects the digests it
// relies on for its whole check-then-link sequence; a collection remembers
// every digest protected while it runs (touched), and deletes only blobs
// that were not, deciding and deleting under the guard's lock. See doc.go
// for the argument.
type guard struct {
	mu      sync.Mutex
	inUse   map[string]int
	running bool
	touched map[string]bool
}

func newGuard() guard { return guard{inUse: map[string]int{}} }

// protect marks digests in use until the returned release is called.
func (g *guard) protect(digests ...string) (release func()) {
	g.mu.Lock()
	for _, d := range digests {
		g.inUse[d]++
		if g.running {
			g.touched[d] = true
		}
	}
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		for _, d := range digests {
			if g.inUse[d]--; g.inUse[d] <= 0 {
				delete(g.inUse, d)
			}
		}
		g.mu.Unlock()
	}
}

// begin starts a collection: what is in use now counts as touched.
func (g *guard) begin() {
	g.mu.Lock()
	g.running = true
	g.touched = map[string]bool{}
	for d := range g.inUse {
		g.touched[d] = true
	}
	g.mu.Unlock()
}

func (g *guard) end() {
	g.mu.Lock()
	g.running, g.touched = false, nil
	g.mu.Unlock()
}

// sweep calls remove, under the guard's lock, with the candidates that no
// operation touched since begin; nothing can protect them meanwhile.
func (g *guard) sweep(candidates []string, remove func([]string) error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var gone []string
	for _, d := range candidates {
		if !g.touched[d] && g.inUse[d] == 0 {
			gone = append(gone, d)
		}
	}
	return remove(gone)
}

// GCReport says what a garbage collection did.
type GCReport struct {
	// Blobs is how many blobs the store held.
	Blobs int `json:"blobs"`
	// Kept counts blobs referenced, young or linked to a cached repository.
	Kept int `json:"kept"`
	// Deleted and Bytes count the blobs removed and their size.
	Deleted int   `json:"deleted"`
	Bytes   int64 `json:"bytesFreed"`
	// Duration is how long the collection took.
	Duration time.Duration `json:"duration"`
	// DryRun: nothing was deleted; Deleted and Bytes count what would go.
	DryRun bool `json:"dryRun,omitempty"`
}

// sweepBatch bounds how many blobs one critical section removes, so that
// pushes waiting for the guard are not held up for long.
const sweepBatch = 256

// CollectGarbage deletes the blobs that nothing needs any more: not
// referenced by any manifest linked to any repository (nor by the
// children of such an index), not linked to a repository a cache rule
// covers, and not written or linked within the grace period. Their links
// go with them. It is safe while pushes and pulls go on (doc.go).
func (r *Repos) CollectGarbage(ctx context.Context) (GCReport, error) {
	return r.collect(ctx, false)
}

// PlanGarbage reports what CollectGarbage would delete now, deleting
// nothing (Deleted and Bytes count what would go).
func (r *Repos) PlanGarbage(ctx context.Context) (GCReport, error) {
	return r.collect(ctx, true)
}

func (r *Repos) collect(ctx context.Context, dryRun bool) (GCReport, error) {
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	start := time.Now()
	r.guard.begin()
	defer r.guard.end()

	links, err := r.meta.Links(ctx)
	if err != nil {
		return GCReport{}, err
	}
	keep := map[string]bool{}
	lastLinked := map[string]time.Time{}
	var manifests []string
	for _, l := range links {
		// Only the manifests regcache parses: another media type (a cached
		// schema 1 manifest) is kept, what it references is not followed.
		if l.LinkedAt.After(lastLinked[l.Digest]) {
			lastLinked[l.Digest] = l.LinkedAt
		}
		if _, _, cached := r.rules.Covering(l.Repo); cached {
			keep[l.Digest] = true
		}
		if l.MediaType != "" {
			keep[l.Digest] = true
			if manifest.Known(l.MediaType) {
				manifests = append(manifests, l.Digest)
			}
		}
	}
	r.mark(ctx, manifests, keep)
	if r.afterMark != nil {
		r.afterMark()
	}

	now := r.opts.Now()
	report := GCReport{DryRun: dryRun}
	var candidates []string
	sizes := map[string]int64{}
	err = r.blobs.Walk(ctx, func(b storage.BlobInfo) error {
		report.Blobs++
		written := b.Modified
		if lastLinked[b.Digest].After(written) {
			written = lastLinked[b.Digest]
		}
		if keep[b.Digest] || now.Sub(written) < r.opts.Grace {
			report.Kept++
			return nil
		}
		candidates = append(candidates, b.Digest)
		sizes[b.Digest] = b.Size
		return nil
	})
	if err != nil {
		return report, err
	}
	if dryRun {
		for _, d := range candidates {
			report.Deleted++
			report.Bytes += sizes[d]
		}
		report.Kept = report.Blobs - report.Deleted
		report.Duration = time.Since(start)
		return report, nil
	}
	sort.Strings(candidates)
	for len(candidates) > 0 {
		batch := candidates[:min(sweepBatch, len(candidates))]
		candidates = candidates[len(batch):]
		err := r.guard.sweep(batch, func(gone []string) error {
			// Links first, then bytes: a reader that still finds a link
			// opens either the whole blob or nothing, never a link to a
			// file that is gone.
			if err := r.meta.UnlinkEverywhere(ctx, gone); err != nil {
				return err
			}
			for _, d := range gone {
				if err := r.blobs.Remove(ctx, d); err != nil {
					r.log.Warn("garbage collection: remove blob", "digest", d, "err", err)
					continue
				}
				report.Deleted++
				report.Bytes += sizes[d]
			}
			return nil
		})
		if err != nil {
			return report, err
		}
	}
	report.Kept = report.Blobs - report.Deleted
	report.Duration = time.Since(start)
	r.log.Info("garbage collection", "blobs", report.Blobs, "deleted", report.Deleted, "bytesFreed", report.Bytes,
		"duration", report.Duration.Round(time.Millisecond))
	return report, nil
}

// mark adds to keep the manifests given and everything they reference,
// following index children.
func (r *Repos) mark(ctx context.Context, manifests []string, keep map[string]bool) {
	seen := map[string]bool{}
	for len(manifests) > 0 {
		d := manifests[len(manifests)-1]
		manifests = manifests[:len(manifests)-1]
		if seen[d] {
			continue
		}
		seen[d] = true
		keep[d] = true
		m, err := r.readManifest(ctx, d)
		if err != nil {
			// Kept anyway (it is linked); what it references cannot be
			// known, and is collected only once it is old and unlinked.
			r.log.Warn("garbage collection: unreadable manifest", "digest", d, "err", err)
			continue
		}
		for _, b := range m.Blobs() {
			keep[b.Digest] = true
		}
		for _, c := range m.Manifests {
			manifests = append(manifests, c.Digest)
		}
	}
}

func (r *Repos) readManifest(ctx context.Context, digest string) (manifest.Manifest, error) {
	f, _, err := r.blobs.Open(ctx, digest)
	if err != nil {
		return manifest.Manifest{}, err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, manifest.MaxSize+1))
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("read manifest %s: %w", digest, err)
	}
	return manifest.Parse("", body)
}

// Grace reports how long unreferenced blobs are kept.
func (r *Repos) Grace() time.Duration { return r.opts.Grace }

// RunGC collects garbage every interval until ctx ends.
func (r *Repos) RunGC(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.CollectGarbage(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("garbage collection failed", "err", err)
		}
	}
}

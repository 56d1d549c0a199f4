package eviction

import (
	"context"
	"errors"

	"github.com/regcache/regcache/storage"
)

// sweepBatch bounds the digests one critical section of the guard handles,
// so that fills and pushes waiting for it are not held up for long.
const sweepBatch = 256

// execute evicts the chosen images, batch by batch, inside the guard's
// sweep: an image is evicted only when none of its manifests was
// protected since the run began, and then its tags and links go in one
// transaction, before the bytes nothing else needs.
func (e *Evictor) execute(ctx context.Context, p *plan, sweep func([]string, func([]string) error) error, rep *Report) error {
	left := make(map[string]int, len(p.global))
	for d, n := range p.global {
		left[d] = n
	}
	inRepo := make(map[string]map[string]int, len(p.perRepo))
	for repo, m := range p.perRepo {
		c := make(map[string]int, len(m))
		for d, n := range m {
			c[d] = n
		}
		inRepo[repo] = c
	}
	chosen := p.chosen
	for len(chosen) > 0 {
		if ctx.Err() != nil {
			return errors.Join(errStopped, ctx.Err())
		}
		var batch []*unit
		var candidates []string
		for len(chosen) > 0 && (len(batch) == 0 || len(candidates)+len(chosen[0].closure) <= sweepBatch) {
			batch = append(batch, chosen[0])
			candidates = append(candidates, chosen[0].closure...)
			chosen = chosen[1:]
		}
		err := sweep(candidates, func(gone []string) error {
			return e.remove(ctx, p, batch, gone, left, inRepo, rep)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// remove evicts the images of batch whose manifests are all in gone (no
// operation protected them), under the guard's lock.
func (e *Evictor) remove(ctx context.Context, p *plan, batch []*unit, gone []string, left map[string]int, inRepo map[string]map[string]int, rep *Report) error {
	ok := make(map[string]bool, len(gone))
	for _, d := range gone {
		ok[d] = true
	}
	removals := map[string]*storage.Removal{}
	var order []string
	var files []string
	owner := map[string]*unit{}
	var evicted []*unit
	for _, u := range batch {
		whole := ok[u.root]
		for _, m := range u.manifests {
			whole = whole && ok[m]
		}
		if !whole {
			rep.Kept++
			e.skipped.Add(1)
			continue
		}
		rm := removals[u.repo]
		if rm == nil {
			rm = &storage.Removal{Repo: u.repo, Tags: map[string]string{}}
			removals[u.repo] = rm
			order = append(order, u.repo)
		}
		for t, d := range u.tags {
			rm.Tags[t] = d
		}
		rm.Subjects = append(rm.Subjects, u.manifests...)
		for _, d := range u.closure {
			inRepo[u.repo][d]--
			if inRepo[u.repo][d] == 0 && p.linked[u.repo][d] && ok[d] {
				rm.Links = append(rm.Links, d)
			}
			left[d]--
			if _, stored := p.sizes[d]; left[d] == 0 && !p.pinned[d] && ok[d] && stored {
				files = append(files, d)
				owner[d] = u
			}
		}
		u.bytes = 0
		evicted = append(evicted, u)
	}
	if len(evicted) == 0 {
		return nil
	}
	list := make([]storage.Removal, 0, len(order))
	for _, repo := range order {
		list = append(list, *removals[repo])
	}
	// Links first: a reader either finds no link, or opens the bytes
	// before they go (doc.go).
	if err := e.meta.Remove(ctx, list, files); err != nil {
		return err
	}
	for _, d := range files {
		if err := e.blobs.Remove(ctx, d); err != nil && !errors.Is(err, storage.ErrNotFound) {
			e.log.Warn("eviction: remove blob", "digest", d, "err", err)
			continue
		}
		owner[d].bytes += p.sizes[d]
		rep.Blobs++
		rep.Bytes += p.sizes[d]
	}
	for _, u := range evicted {
		rep.Images = append(rep.Images, u.image())
		e.images.Add(1)
		e.bytes.Add(u.bytes)
		e.log.Debug("evicted image", "repo", u.repo, "digest", u.root, "tags", len(u.tags), "bytes", u.bytes, "reason", u.reason, "lastUsed", u.lastUsed)
	}
	return nil
}

package storage

import (
	"context"
	"os"
	"sync"
)

// usage counts the bytes and blobs committed to a Blobs store, so that a
// bounded cache can compare the store with its limit as often as it likes
// without walking the directory each time. The count starts the first
// time Usage is asked for (one walk); from then on every commit and
// removal updates it, under the same lock as the rename or unlink that
// changes the directory, so that two commits of one digest count once.
// Nobody asking for it costs nothing: until then commits only rename.
type usage struct {
	mu    sync.Mutex
	known bool
	bytes int64
	blobs int64
	// over is signalled when a commit leaves more than limit bytes.
	limit int64
	over  chan struct{}
}

// Usage is how many committed blobs the store holds and their bytes
// (temporary files of fills and uploads in progress not included). The
// first call walks the store; later ones are answered from memory.
func (b *Blobs) Usage(ctx context.Context) (bytes, blobs int64, err error) {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	if !b.usage.known {
		var n, c int64
		err := b.Walk(ctx, func(bi BlobInfo) error {
			n += bi.Size
			c++
			return nil
		})
		if err != nil {
			return 0, 0, err
		}
		b.usage.bytes, b.usage.blobs, b.usage.known = n, c, true
	}
	return b.usage.bytes, b.usage.blobs, nil
}

// place renames a verified temporary file of size bytes to its final
// path, counting it when the digest was not stored yet.
func (b *Blobs) place(temp, final string, size int64) error {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	existed := false
	if b.usage.known {
		_, err := os.Lstat(final)
		existed = err == nil
	}
	if err := os.Rename(temp, final); err != nil {
		return err
	}
	if b.usage.known && !existed {
		b.usage.bytes += size
		b.usage.blobs++
		if b.usage.over != nil && b.usage.bytes > b.usage.limit {
			select {
			case b.usage.over <- struct{}{}:
			default: // one signal pending is enough
			}
		}
	}
	return nil
}

// NotifyOver returns a channel that is signalled whenever a commit leaves
// the store holding more than limit bytes (once Usage has counted it), so
// that a bounded cache reacts to the commit that crossed its bound rather
// than at its next look. Signals do not queue: one pending stands for
// any number. A later call replaces the channel.
func (b *Blobs) NotifyOver(limit int64) <-chan struct{} {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	b.usage.limit = limit
	b.usage.over = make(chan struct{}, 1)
	return b.usage.over
}

// remove unlinks the committed blob at path and uncounts it.
func (b *Blobs) remove(path string) error {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	var size int64 = -1
	if b.usage.known {
		if fi, err := os.Lstat(path); err == nil {
			size = fi.Size()
		}
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	if size >= 0 {
		b.usage.bytes -= size
		b.usage.blobs--
	}
	return nil
}

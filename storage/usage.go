package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Usage is what the committed blobs of a store hold (temporary files of
// fills and uploads in progress not included).
type Usage struct {
	Bytes int64
	Blobs int64
}

// usage keeps a store's Usage without walking the store per question: one
// walk (Blobs.CountUsage), and every commit and removal adjusts the
// figures, under the same lock as the rename or unlink that changes the
// directory (two commits of one digest count once). The walk counts one
// <first two hex> directory at a time under mu, in order; a commit or
// removal in a directory not walked yet changes nothing (the walk will
// see its result), one in a directory walked already adjusts the figures.
// So no blob is counted twice or missed, and serving goes on during the
// walk of a large store.
type usage struct {
	mu      sync.Mutex
	u       Usage
	next    int           // directories 00..next-1 are counted
	walking bool          // a walk is running
	counted chan struct{} // closed when the walk is done; made on first need
	// over is signalled when a commit leaves more than limit bytes.
	limit int64
	over  chan struct{}
}

// dirCount is the number of <first two hex> directories.
const dirCount = 256

// dirIndex is the number of digest's directory, 0 to 255.
func dirIndex(digest string) int {
	n, err := strconv.ParseUint(digest[len("sha256:"):len("sha256:")+2], 16, 8)
	if err != nil {
		return 0
	}
	return int(n)
}

// changed records a blob of size bytes appearing (delta 1) or going away
// (delta -1); the caller holds u.mu.
func (u *usage) changed(digest string, size int64, delta int64) {
	if dirIndex(digest) >= u.next {
		return // the walk has yet to count that directory
	}
	u.u.Bytes += delta * size
	u.u.Blobs += delta
	if delta > 0 {
		u.checkOver()
	}
}

// checkOver signals over when the counted store holds more than limit;
// the caller holds u.mu.
func (u *usage) checkOver() {
	if u.over == nil || u.next < dirCount || u.u.Bytes <= u.limit {
		return
	}
	select {
	case u.over <- struct{}{}:
	default: // one signal pending stands for any number
	}
}

// countedChan returns the channel closed once the walk is done; the caller
// holds u.mu.
func (u *usage) countedChan() chan struct{} {
	if u.counted == nil {
		u.counted = make(chan struct{})
		if u.next >= dirCount {
			close(u.counted)
		}
	}
	return u.counted
}

// Usage returns the bytes and number of the committed blobs; ok is false
// until CountUsage has counted them.
func (b *Blobs) Usage() (u Usage, ok bool) {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	if b.usage.next < dirCount {
		return Usage{}, false
	}
	return b.usage.u, true
}

// WaitUsage returns the usage once counted: it counts the store when no
// walk has started (or waits for the one running) first.
func (b *Blobs) WaitUsage(ctx context.Context) (Usage, error) {
	if err := b.CountUsage(ctx); err != nil {
		return Usage{}, err
	}
	b.usage.mu.Lock()
	counted := b.usage.countedChan()
	b.usage.mu.Unlock()
	select {
	case <-counted:
	case <-ctx.Done():
		return Usage{}, ctx.Err()
	}
	u, _ := b.Usage()
	return u, nil
}

// CountUsage walks the store once to count its blobs; afterwards Usage
// follows every commit and removal without walking again. Serving goes on
// meanwhile (a large store takes a while): run it in the background. It
// does nothing when the count is known or being made.
func (b *Blobs) CountUsage(ctx context.Context) error {
	u := &b.usage
	u.mu.Lock()
	if u.walking || u.next >= dirCount {
		u.mu.Unlock()
		return nil
	}
	u.walking = true
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.walking = false
		u.mu.Unlock()
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		done, err := b.countDir(ctx)
		if err != nil || done {
			return err
		}
	}
}

// countDir counts the next directory of the walk and reports whether the
// walk is done.
func (b *Blobs) countDir(ctx context.Context) (bool, error) {
	u := &b.usage
	if b.objects != nil {
		// The listing is a request to the object store: it runs without
		// u.mu (only this walk moves u.next), while placing keeps the
		// prefix's uploads and removals out until the count moved past
		// it. A change accounted before was in a prefix not counted yet,
		// so it counted nothing; one accounted after is counted by it.
		u.mu.Lock()
		next := u.next
		u.mu.Unlock()
		done := b.placing.listDir(next)
		defer done()
		found, err := b.countObjects(ctx, next)
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.addDir(found, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	var found Usage
	dir := filepath.Join(b.root, "sha256", fmt.Sprintf("%02x", u.next))
	err := walkDir(dir, func(bi BlobInfo) error {
		found.Bytes += bi.Size
		found.Blobs++
		return nil
	})
	return u.addDir(found, err)
}

// addDir adds the count of directory u.next and moves on; the caller
// holds u.mu.
func (u *usage) addDir(found Usage, err error) (bool, error) {
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err // the directory is counted again at the next try
	}
	u.u.Bytes += found.Bytes
	u.u.Blobs += found.Blobs
	u.next++
	if u.next < dirCount {
		return false, nil
	}
	if u.counted != nil { // else countedChan makes it closed
		close(u.counted)
	}
	u.checkOver()
	return true, nil
}

// NotifyOver returns a channel that is signalled whenever a commit leaves
// the store holding more than limit bytes (once it is counted, and when
// the count itself finds it over), so that a bounded cache reacts to the
// commit that crossed its bound rather than at its next look. Signals do
// not queue: one pending stands for any number. A later call replaces the
// channel.
func (b *Blobs) NotifyOver(limit int64) <-chan struct{} {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	b.usage.limit = limit
	b.usage.over = make(chan struct{}, 1)
	b.usage.checkOver()
	return b.usage.over
}

// place renames a verified temporary file to final, the path of digest,
// and counts it unless it replaced the same blob.
func (b *Blobs) place(temp, final, digest string, size int64) error {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	_, err := os.Lstat(final)
	existed := err == nil
	if err := os.Rename(temp, final); err != nil {
		return err
	}
	if !existed {
		b.usage.changed(digest, size, 1)
	}
	return nil
}

// remove deletes the blob file p of digest and counts it out.
func (b *Blobs) remove(p, digest string) error {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return err
	}
	b.usage.changed(digest, fi.Size(), -1)
	return nil
}

// Filesystem returns the size of the filesystem holding the store and the
// bytes an unprivileged writer may still use there; ok is false where the
// system cannot tell.
func (b *Blobs) Filesystem() (size, free uint64, ok bool) {
	return fsSpace(b.root)
}

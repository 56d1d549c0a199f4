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

// Usage is what the committed blobs of a store hold.
type Usage struct {
	Bytes int64
	Blobs int64
}

// usage keeps a store's Usage without walking the store per question: one
// walk (Blobs.CountUsage), and every commit and removal adjusts the
// figures. The walk counts one <first two hex> directory at a time under
// mu, in order; a commit or removal in a directory not walked yet changes
// nothing (the walk will see its result), one in a directory walked
// already adjusts the figures. So no blob is counted twice or missed.
type usage struct {
	mu      sync.Mutex
	u       Usage
	next    int  // directories 00..next-1 are counted
	walking bool // a walk is running
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
	for u.next < dirCount {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.countDir(); err != nil {
			return err
		}
	}
	return nil
}

// countDir counts the next directory of the walk.
func (b *Blobs) countDir() error {
	u := &b.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	dir := filepath.Join(b.root, "sha256", fmt.Sprintf("%02x", u.next))
	var found Usage
	err := walkDir(dir, func(bi BlobInfo) error {
		found.Bytes += bi.Size
		found.Blobs++
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err // the directory is counted again at the next try
	}
	u.u.Bytes += found.Bytes
	u.u.Blobs += found.Blobs
	u.next++
	return nil
}

// commitFile renames a verified temporary file to final, the path of
// digest, and counts it unless it replaced the same blob.
func (b *Blobs) commitFile(tmp, final, digest string, size int64) error {
	b.usage.mu.Lock()
	defer b.usage.mu.Unlock()
	_, err := os.Lstat(final)
	existed := err == nil
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if !existed {
		b.usage.changed(digest, size, 1)
	}
	return nil
}

// removeFile deletes the blob file p of digest and counts it out.
func (b *Blobs) removeFile(p, digest string) error {
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

package storage

import (
	"bytes"
	"fmt"
	"testing"
)

// blobIn returns content whose digest lies in directory dir (0-255), by
// trying payloads until one hashes there.
func blobIn(t *testing.T, dir int, seed string) ([]byte, string) {
	t.Helper()
	for i := 0; i < 100000; i++ {
		b := []byte(fmt.Sprintf("%s-%d", seed, i))
		if d := digestOf(b); dirIndex(d) == dir {
			return b, d
		}
	}
	t.Fatalf("no payload hashing into directory %02x", dir)
	return nil, ""
}

func putBlob(t *testing.T, b *Blobs, content []byte) string {
	t.Helper()
	d := digestOf(content)
	if err := b.Put(t.Context(), d, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	return d
}

func wantUsage(t *testing.T, b *Blobs, want Usage) {
	t.Helper()
	got, ok := b.Usage()
	if !ok || got != want {
		t.Fatalf("Usage() = %+v, %v; want %+v, true", got, ok, want)
	}
}

// TestUsageCountsOnceThenFollows counts a store holding blobs, then follows
// commits (a new blob, the same blob again) and removals without walking.
func TestUsageCountsOnceThenFollows(t *testing.T) {
	t.Parallel()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	putBlob(t, b, []byte("first"))
	second := putBlob(t, b, []byte("second blob"))
	if _, ok := b.Usage(); ok {
		t.Fatal("Usage is known before CountUsage")
	}
	if err := b.CountUsage(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, b, Usage{Bytes: 5 + 11, Blobs: 2})

	third := putBlob(t, b, []byte("third!"))
	wantUsage(t, b, Usage{Bytes: 5 + 11 + 6, Blobs: 3})
	putBlob(t, b, []byte("third!")) // the same blob again
	wantUsage(t, b, Usage{Bytes: 5 + 11 + 6, Blobs: 3})
	if err := b.Remove(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(t.Context(), second); err == nil {
		t.Fatal("removing a removed blob succeeded")
	}
	wantUsage(t, b, Usage{Bytes: 5 + 6, Blobs: 2})
	if err := b.Remove(t.Context(), third); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, b, Usage{Bytes: 5, Blobs: 1})
}

// TestUsageDuringTheWalk commits and removes blobs in directories the walk
// has counted and in directories it has not reached yet (the walk is
// stopped halfway by hand), then finishes it: each blob counts once.
func TestUsageDuringTheWalk(t *testing.T) {
	t.Parallel()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	early, _ := blobIn(t, 0x10, "early")
	late, _ := blobIn(t, 0xf0, "late")
	gone, goneDigest := blobIn(t, 0x20, "gone")
	goneLate, goneLateDigest := blobIn(t, 0xe0, "gone-late")
	for _, c := range [][]byte{gone, goneLate} {
		putBlob(t, b, c)
	}
	// Walk directories 00-7f, as CountUsage would before being interrupted.
	b.usage.walking = true
	for b.usage.next < 0x80 {
		if _, err := b.countDir(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	putBlob(t, b, early) // walked already: counted now
	putBlob(t, b, late)  // not walked yet: counted by the walk
	if err := b.Remove(t.Context(), goneDigest); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(t.Context(), goneLateDigest); err != nil {
		t.Fatal(err)
	}
	b.usage.walking = false
	if err := b.CountUsage(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, b, Usage{Bytes: int64(len(early) + len(late)), Blobs: 2})
}

func TestFilesystem(t *testing.T) {
	t.Parallel()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	size, free, ok := b.Filesystem()
	if !ok || size == 0 || free > size {
		t.Fatalf("Filesystem() = %d, %d, %v: want a size and free space within it", size, free, ok)
	}
}

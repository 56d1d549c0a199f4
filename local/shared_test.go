package local

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regcache/regcache/storage"
)

// TestPlanGarbageDeletesNothing: a dry run reports what a collection
// would delete, and deletes nothing.
func TestPlanGarbageDeletesNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{Grace: time.Minute})
	blob := []byte("orphan layer")
	if err := f.repos.PutBlob(ctx, "lab/src", digestOf(blob), -1, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	f.clock.t = f.clock.t.Add(time.Hour)
	rep, err := f.repos.PlanGarbage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.DryRun || rep.Deleted != 1 || rep.Bytes != int64(len(blob)) {
		t.Fatalf("plan = %+v, want 1 blob of %d bytes, dry run", rep, len(blob))
	}
	if !exists(t, f, digestOf(blob)) {
		t.Fatal("a dry run deleted the blob")
	}
	if rep, err := f.repos.CollectGarbage(ctx); err != nil || rep.Deleted != 1 {
		t.Fatalf("collection after the plan: %+v, %v", rep, err)
	}
}

// TestCollectSharesTheGuard: a collection of another owner (eviction)
// runs with the same guard as garbage collection: a digest protected by
// an operation of another package (a fill) after the collection began is
// left out of its sweep, and one protected before it began too; other
// candidates reach remove.
func TestCollectSharesTheGuard(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{})
	early, late, free := digestOf([]byte("a")), digestOf([]byte("b")), digestOf([]byte("c"))
	releaseEarly := f.repos.Protect(early)
	var got []string
	err := f.repos.Collect(ctx, func(ctx context.Context, sweep Sweep) error {
		f.repos.Protect(late)() // protected and released during the run
		releaseEarly()
		return sweep([]string{early, late, free}, func(gone []string) error {
			got = gone
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != free {
		t.Fatalf("swept %v, want only %s", got, free)
	}
	// Collections are one at a time: garbage collection's lock is held.
	err = f.repos.Collect(ctx, func(context.Context, Sweep) error {
		if f.repos.gcMu.TryLock() {
			f.repos.gcMu.Unlock()
			t.Error("garbage collection could start during another collection")
		}
		return errors.New("stopped")
	})
	if err == nil || err.Error() != "stopped" {
		t.Fatalf("Collect returned %v, want fn's error", err)
	}
}

// TestGarbageCollectionUnlinksBeforeRemoving: when a collected blob's
// bytes go, no repository links it any more (a reader finds no link
// rather than a link to nothing).
func TestGarbageCollectionUnlinksBeforeRemoving(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{Grace: time.Minute})
	blob := []byte("orphan")
	if err := f.repos.PutBlob(ctx, "lab/src", digestOf(blob), -1, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	f.clock.t = f.clock.t.Add(time.Hour)
	f.repos.blobs = removeHook{Blobs: f.repos.blobs, before: func(d string) {
		if _, err := f.meta.Linked(ctx, "lab/src", d); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("blob %s removed while still linked (%v)", d, err)
		}
	}}
	if rep, err := f.repos.CollectGarbage(ctx); err != nil || rep.Deleted != 1 {
		t.Fatalf("collection: %+v, %v", rep, err)
	}
}

// removeHook calls before ahead of every blob removal.
type removeHook struct {
	Blobs
	before func(digest string)
}

func (h removeHook) Remove(ctx context.Context, digest string) error {
	h.before(digest)
	return h.Blobs.Remove(ctx, digest)
}

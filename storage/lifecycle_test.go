package storage

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestUsageFollowsCommitsAndRemovals: once counted, the store's usage is
// kept by commits (a digest committed twice counts once), staged commits
// and removals, and always equals a fresh walk.
func TestUsageFollowsCommitsAndRemovals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, c := payload(1000), payload(3000)
	if err := b.Put(ctx, digestOf(a), int64(len(a)), bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	walk := func() (int64, int64) {
		var n, k int64
		if err := b.Walk(ctx, func(bi BlobInfo) error { n += bi.Size; k++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n, k
	}
	check := func(step string, wantBytes, wantBlobs int64) {
		t.Helper()
		u, err := b.WaitUsage(ctx)
		got, blobs := u.Bytes, u.Blobs
		if err != nil {
			t.Fatal(err)
		}
		wn, wk := walk()
		if got != wantBytes || blobs != wantBlobs || got != wn || blobs != wk {
			t.Fatalf("%s: usage %d bytes in %d blobs, want %d in %d (a walk finds %d in %d)", step, got, blobs, wantBytes, wantBlobs, wn, wk)
		}
	}
	check("first count", 1000, 1)
	if err := b.Put(ctx, digestOf(c), int64(len(c)), bytes.NewReader(c)); err != nil {
		t.Fatal(err)
	}
	check("after a commit", 4000, 2)
	if err := b.Put(ctx, digestOf(c), int64(len(c)), bytes.NewReader(c)); err != nil {
		t.Fatal(err)
	}
	check("after committing the same digest again", 4000, 2)
	w, err := b.CreateUnknown(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	s := payload(500)
	w.Write(s)
	st, err := w.Stage(digestOf(s))
	if err != nil {
		t.Fatal(err)
	}
	check("after staging", 4000, 2)
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	check("after a staged commit", 4500, 3)
	if err := b.Remove(ctx, digestOf(a)); err != nil {
		t.Fatal(err)
	}
	check("after a removal", 3500, 2)
}

// TestStagedBlobs: staged bytes are verified, invisible until committed,
// readable meanwhile, and gone without a trace when cancelled.
func TestStagedBlobs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	b, err := OpenBlobs(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := payload(4096)
	d := digestOf(data)

	w, err := b.CreateUnknown(ctx, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if got := w.Digest(); got != d {
		t.Fatalf("Digest() = %s, want %s", got, d)
	}
	st, err := w.Stage(d)
	if err != nil {
		t.Fatal(err)
	}
	assertAbsent(t, b, d)
	f, err := st.Open()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("staged bytes differ")
	}
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	if size, err := b.Stat(ctx, d); err != nil || size != int64(len(data)) {
		t.Fatalf("after Commit: Stat = %d, %v", size, err)
	}

	// Wrong bytes never stage; a cancelled stage leaves nothing.
	other := payload(100)
	w, _ = b.Create(ctx, digestOf(other), int64(len(other)))
	w.Write(other[:99])
	w.Write([]byte{0})
	if _, err := w.Stage(""); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Stage of wrong bytes: %v, want ErrDigestMismatch", err)
	}
	w, _ = b.Create(ctx, digestOf(other), int64(len(other)))
	w.Write(other)
	if _, err := w.Stage(d); err == nil {
		t.Fatal("Stage under another digest than the writer's was accepted")
	}
	w, _ = b.Create(ctx, digestOf(other), int64(len(other)))
	w.Write(other)
	st, err = w.Stage("")
	if err != nil {
		t.Fatal(err)
	}
	st.Cancel()
	assertAbsent(t, b, digestOf(other))
	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

// TestContentsAndRemove: the snapshot lists links and tags of every
// repository; Remove takes out links, tags that still point where they
// did, referrer listings and access times, in one transaction.
func TestContentsAndRemove(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := openTestMeta(t)
	man, moved, layer := testLink("manifest"), testLink("moved"), Link{Digest: digestOf([]byte("layer")), Size: 5, LinkedAt: time.Now()}
	if err := m.Link(ctx, "hub/a", layer, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Link(ctx, "hub/a", man, &Tag{Name: "v1"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Link(ctx, "hub/a", man, &Tag{Name: "v2"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Link(ctx, "lab/b", layer, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.SetReferrers(ctx, "hub/a", man.Digest, []Descriptor{{Digest: moved.Digest, MediaType: mediaManifest}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.TouchBlobs(ctx, map[string]time.Time{layer.Digest: time.Now(), man.Digest: time.Now()}); err != nil {
		t.Fatal(err)
	}
	links, tags, err := m.Contents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 3 || len(tags) != 2 || tags[0].Repo != "hub/a" || tags[0].Name != "v1" || tags[0].Digest != man.Digest {
		t.Fatalf("Contents = %+v, %+v", links, tags)
	}
	acc, err := m.AccessTimes(ctx)
	if err != nil || len(acc) != 2 {
		t.Fatalf("AccessTimes = %v, %v", acc, err)
	}
	// v2 moved meanwhile: it stays.
	if err := m.Link(ctx, "hub/a", moved, &Tag{Name: "v2"}); err != nil {
		t.Fatal(err)
	}
	err = m.Remove(ctx, []Removal{{Repo: "hub/a", Tags: map[string]string{"v1": man.Digest, "v2": man.Digest},
		Links: []string{man.Digest, layer.Digest}, Subjects: []string{man.Digest}}}, []string{layer.Digest})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Tag(ctx, "hub/a", "v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("tag v1 still there: %v", err)
	}
	if tg, err := m.Tag(ctx, "hub/a", "v2"); err != nil || tg.Digest != moved.Digest {
		t.Errorf("tag v2, which moved, = %+v, %v; want it kept at %s", tg, err, moved.Digest)
	}
	for _, d := range []string{man.Digest, layer.Digest} {
		if _, err := m.Linked(ctx, "hub/a", d); !errors.Is(err, ErrNotFound) {
			t.Errorf("link %s still in hub/a: %v", d, err)
		}
	}
	if _, err := m.Linked(ctx, "lab/b", layer.Digest); err != nil {
		t.Errorf("the link of another repository went too: %v", err)
	}
	if ds, fetched, _ := m.Referrers(ctx, "hub/a", man.Digest); len(ds) != 0 || !fetched.IsZero() {
		t.Errorf("referrers listing kept: %v, fetched %v", ds, fetched)
	}
	if _, err := m.LastAccess(ctx, layer.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("access time of a removed blob kept: %v", err)
	}
	if _, err := m.LastAccess(ctx, man.Digest); err != nil {
		t.Errorf("access time not asked to be forgotten went: %v", err)
	}
}

// TestPutImage records links, tags and referrers in one go.
func TestPutImage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := openTestMeta(t)
	man, ref := testLink("m"), testLink("sig")
	listed := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err := m.PutImage(ctx, "lab/app", Image{
		Links:     []Link{man, ref},
		Tags:      []Tag{{Name: "v1", Digest: man.Digest, FetchedAt: listed}},
		Referrers: []Referrer{{Subject: man.Digest, Descriptor: Descriptor{MediaType: mediaManifest, Digest: ref.Digest, Size: ref.Size}}},
		ListedAt:  listed,
	})
	if err != nil {
		t.Fatal(err)
	}
	if tg, err := m.Tag(ctx, "lab/app", "v1"); err != nil || tg.Digest != man.Digest {
		t.Fatalf("tag = %+v, %v", tg, err)
	}
	ds, fetched, err := m.Referrers(ctx, "lab/app", man.Digest)
	if err != nil || len(ds) != 1 || ds[0].Digest != ref.Digest || !fetched.Equal(listed) {
		t.Fatalf("referrers = %+v, fetched %v, %v", ds, fetched, err)
	}
	if err := m.PutImage(ctx, "lab/app", Image{Links: []Link{{Digest: "sha256:nope"}}}); !errors.Is(err, ErrInvalidDigest) {
		t.Fatalf("invalid digest: %v", err)
	}
}

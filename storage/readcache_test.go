package storage

import (
	"errors"
	"testing"
	"time"
)

// A tag or link read again is answered from memory (no database
// transaction), and every kind of write is seen by the next read: a
// write to the repository, to another one, and one that spans
// repositories.
func TestReadCacheFollowsWrites(t *testing.T) {
	m := openTestMeta(t)
	ctx := t.Context()
	v1, v2 := testLink("manifest one"), testLink("manifest two")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := m.Link(ctx, "hub/app", v1, &Tag{Name: "latest", FetchedAt: at}); err != nil {
		t.Fatal(err)
	}
	readTx := func() int { return m.db.Stats().TxN }
	tagIs := func(want string) {
		t.Helper()
		tg, err := m.Tag(ctx, "hub/app", "latest")
		if err != nil || tg.Digest != want {
			t.Fatalf("Tag: %+v, %v; want digest %s", tg, err, want)
		}
	}

	tagIs(v1.Digest)
	before := readTx()
	tagIs(v1.Digest)
	if _, err := m.Linked(ctx, "hub/app", v1.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Linked(ctx, "hub/app", v1.Digest); err != nil {
		t.Fatal(err)
	}
	if n := readTx() - before; n != 1 {
		t.Errorf("a cached tag read and two reads of one link opened %d read transactions, want 1 (the link's first read)", n)
	}

	// The tag moves: the next read sees it.
	if err := m.Link(ctx, "hub/app", v2, &Tag{Name: "latest", FetchedAt: at.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tagIs(v2.Digest)

	// A write to another repository leaves this one's entries current.
	if err := m.Link(ctx, "hub/other", v1, nil); err != nil {
		t.Fatal(err)
	}
	before = readTx()
	tagIs(v2.Digest)
	if n := readTx() - before; n != 0 {
		t.Errorf("a write to another repository made the tag read open %d transactions, want 0", n)
	}

	// Deletions, in the repository and across repositories.
	if err := m.DeleteTag(ctx, "hub/app", "latest"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Tag(ctx, "hub/app", "latest"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Tag after DeleteTag: %v, want ErrNotFound", err)
	}
	if _, err := m.Linked(ctx, "hub/other", v1.Digest); err != nil {
		t.Fatal(err)
	}
	if err := m.UnlinkEverywhere(ctx, []string{v1.Digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Linked(ctx, "hub/other", v1.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Linked after UnlinkEverywhere: %v, want ErrNotFound", err)
	}
	if err := m.Link(ctx, "hub/app", v1, &Tag{Name: "v1", FetchedAt: at}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Tag(ctx, "hub/app", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, []Removal{{Repo: "hub/app", Links: []string{v1.Digest}, Tags: map[string]string{"v1": v1.Digest}}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Tag(ctx, "hub/app", "v1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Tag after Remove: %v, want ErrNotFound", err)
	}
}

// A value read from the database before a write committed, and stored
// after, is never served: the write's generation makes it stale.
func TestReadCacheStoreAfterWrite(t *testing.T) {
	c := newReadCache()
	k := readKey{repo: "hub/app", key: "latest", kind: kindTag}
	_, now, _ := c.get(k) // the reader, before its database read
	c.changedRepo("hub/app")
	c.put(k, readEntry{tag: Tag{Digest: "sha256:old"}}, now)
	if e, _, ok := c.get(k); ok {
		t.Fatalf("an entry read before a write is served after it: %+v", e)
	}
	_, now, _ = c.get(k)
	c.changedAll()
	c.put(k, readEntry{tag: Tag{Digest: "sha256:old"}}, now)
	if _, _, ok := c.get(k); ok {
		t.Fatal("an entry read before a global write is served after it")
	}
	_, now, _ = c.get(k)
	c.put(k, readEntry{tag: Tag{Digest: "sha256:new"}}, now)
	if e, _, ok := c.get(k); !ok || e.tag.Digest != "sha256:new" {
		t.Fatalf("a current entry: %+v, %v", e, ok)
	}
}

// The cache holds at most max entries.
func TestReadCacheBounded(t *testing.T) {
	c := newReadCache()
	c.max = 10
	for i := range 25 {
		k := readKey{repo: "r", key: string(rune('a' + i)), kind: kindLink}
		_, now, _ := c.get(k)
		c.put(k, readEntry{}, now)
		if len(c.entries) > c.max {
			t.Fatalf("%d entries, max %d", len(c.entries), c.max)
		}
	}
}

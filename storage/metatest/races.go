package metatest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/regcache/regcache/storage"
)

// testConcurrentTagWriters: two handles point one tag at different
// manifests many times at once; the tag ends whole (digest and time of
// one write, not a mix) and its manifest is linked.
func testConcurrentTagWriters(t *testing.T, a, b Store) {
	ctx := t.Context()
	const rounds = 30
	var wg sync.WaitGroup
	errs := make(chan error, 2*rounds)
	for w, s := range []Store{a, b} {
		wg.Go(func() {
			for i := range rounds {
				l := manifest(fmt.Sprint("w", w, "-", i))
				tag := &storage.Tag{Name: "latest", FetchedAt: when.Add(time.Duration(w*1000+i) * time.Second)}
				errs <- s.Link(ctx, "race", l, tag)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	for _, s := range []Store{a, b} {
		tg, err := s.Tag(ctx, "race", "latest")
		must(t, err)
		n := int(tg.FetchedAt.Sub(when) / time.Second)
		if want := digest(fmt.Sprint("w", n/1000, "-", n%1000)); tg.Digest != want {
			t.Errorf("tag %+v mixes two writes: its time belongs to %s", tg, want)
		}
		if _, err := s.Linked(ctx, "race", tg.Digest); err != nil {
			t.Errorf("the tagged manifest is not linked: %v", err)
		}
	}
}

// testConcurrentLink: one handle links a digest as a manifest while the
// other links it as a blob; the manifest media type always survives.
func testConcurrentLink(t *testing.T, a, b Store) {
	ctx := t.Context()
	for i := range 20 {
		m := manifest(fmt.Sprint("m", i))
		bl := m
		bl.MediaType = ""
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() { errA = a.Link(ctx, "race", m, nil) })
		wg.Go(func() {
			for range 3 {
				if errB = b.Link(ctx, "race", bl, nil); errB != nil {
					return
				}
			}
		})
		wg.Wait()
		must(t, errors.Join(errA, errB))
		if got, err := b.Linked(ctx, "race", m.Digest); err != nil || got.MediaType != mediaManifest {
			t.Fatalf("round %d: link %+v, %v; want the manifest media type", i, got, err)
		}
	}
}

// testDeleteManifestRacingLink: one handle deletes a manifest while the
// other tags it again; no tag is left pointing at an unlinked manifest.
func testDeleteManifestRacingLink(t *testing.T, a, b Store) {
	ctx := t.Context()
	for i := range 20 {
		m := manifest(fmt.Sprint("m", i))
		tag := fmt.Sprint("t", i)
		must(t, a.Link(ctx, "race", m, &storage.Tag{Name: "first" + tag}))
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() {
			if _, err := a.DeleteManifest(ctx, "race", m.Digest, ""); err != nil && !errors.Is(err, storage.ErrNotFound) {
				errA = err
			}
		})
		wg.Go(func() { errB = b.Link(ctx, "race", m, &storage.Tag{Name: tag}) })
		wg.Wait()
		must(t, errors.Join(errA, errB))
		checkTagsLinked(t, a, "race")
	}
}

// testRemoveRacingLink: eviction removes an image while another handle
// links and tags it again; a tag left always reaches a linked manifest.
func testRemoveRacingLink(t *testing.T, a, b Store) {
	ctx := t.Context()
	for i := range 20 {
		m, l := manifest(fmt.Sprint("m", i)), blob(fmt.Sprint("l", i))
		must(t, a.Link(ctx, "race", m, &storage.Tag{Name: "t"}))
		must(t, a.Link(ctx, "race", l, nil))
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() {
			errA = a.Remove(ctx, []storage.Removal{{Repo: "race", Tags: map[string]string{"t": m.Digest}, Links: []string{m.Digest, l.Digest}}}, nil)
		})
		wg.Go(func() { errB = b.Link(ctx, "race", m, &storage.Tag{Name: "t"}) })
		wg.Wait()
		must(t, errors.Join(errA, errB))
		checkTagsLinked(t, a, "race")
	}
}

func checkTagsLinked(t *testing.T, s Store, repo string) {
	t.Helper()
	_, tags, err := s.Contents(t.Context())
	must(t, err)
	for _, tg := range tags {
		if _, err := s.Linked(t.Context(), repo, tg.Digest); tg.Repo == repo && err != nil {
			t.Fatalf("tag %s -> %s, but the manifest is not linked: %v", tg.Name, tg.Digest, err)
		}
	}
}

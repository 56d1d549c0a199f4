package storage

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestMetaDeleteManifest(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := openTestMeta(t)
	subject := digestOf([]byte("subject"))
	img, sig := testLink("image"), testLink("signature")
	layer := Link{Digest: digestOf([]byte("layer")), Size: 5}
	for _, tag := range []string{"v1", "latest"} {
		if err := m.Link(ctx, "lab/app", img, &Tag{Name: tag}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Link(ctx, "lab/app", layer, nil); err != nil {
		t.Fatal(err)
	}
	ref := &Referrer{Subject: subject, Descriptor: Descriptor{MediaType: mediaManifest, Digest: sig.Digest, Size: sig.Size, ArtifactType: "application/x-sig"}}
	if err := m.PutManifest(ctx, "lab/app", sig, &Tag{Name: "sig"}, ref); err != nil {
		t.Fatal(err)
	}
	ds, fetched, err := m.Referrers(ctx, "lab/app", subject)
	if err != nil || len(ds) != 1 || ds[0].ArtifactType != "application/x-sig" || !fetched.IsZero() {
		t.Fatalf("Referrers = %+v, %v, %v", ds, fetched, err)
	}

	removed, err := m.DeleteManifest(ctx, "lab/app", img.Digest, "")
	slices.Sort(removed)
	if err != nil || !slices.Equal(removed, []string{"latest", "v1"}) {
		t.Fatalf("DeleteManifest = %v, %v; want the two tags", removed, err)
	}
	if tags, _ := m.Tags(ctx, "lab/app"); !slices.Equal(tags, []string{"sig"}) {
		t.Fatalf("tags after delete = %v", tags)
	}
	if _, err := m.Linked(ctx, "lab/app", img.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("manifest still linked: %v", err)
	}
	// A blob link is not a manifest.
	if _, err := m.DeleteManifest(ctx, "lab/app", layer.Digest, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteManifest of a blob = %v, want ErrNotFound", err)
	}
	if _, err := m.DeleteManifest(ctx, "lab/app", sig.Digest, subject); err != nil {
		t.Fatal(err)
	}
	if ds, _, _ := m.Referrers(ctx, "lab/app", subject); len(ds) != 0 {
		t.Fatalf("referrer survives its manifest: %+v", ds)
	}
	if err := m.Unlink(ctx, "lab/app", layer.Digest); err != nil {
		t.Fatal(err)
	}
	if err := m.Unlink(ctx, "lab/app", layer.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Unlink = %v", err)
	}
	if err := m.DeleteTag(ctx, "lab/app", "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteTag of a missing tag = %v", err)
	}
}

func TestMetaLinkKeepsManifestMediaType(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := openTestMeta(t)
	l := testLink("manifest")
	if err := m.Link(ctx, "r", l, nil); err != nil {
		t.Fatal(err)
	}
	later := l.LinkedAt.Add(time.Hour)
	if err := m.Link(ctx, "r", Link{Digest: l.Digest, Size: l.Size, LinkedAt: later}, nil); err != nil {
		t.Fatal(err)
	}
	got, err := m.Linked(ctx, "r", l.Digest)
	if err != nil || got.MediaType != l.MediaType || !got.LinkedAt.Equal(later) {
		t.Fatalf("link = %+v, %v; want media type kept and the new link time", got, err)
	}
}

func TestMetaRepositoriesAndLinks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := openTestMeta(t)
	for _, r := range []string{"b", "a/x", "c", "a"} {
		if err := m.Link(ctx, r, testLink(r), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Unlink(ctx, "c", testLink("c").Digest); err != nil { // c is empty now
		t.Fatal(err)
	}
	for _, tc := range []struct {
		last string
		n    int
		want []string
	}{
		{"", -1, []string{"a", "a/x", "b"}},
		{"", 2, []string{"a", "a/x"}},
		{"a/x", 2, []string{"b"}},
		{"a/w", -1, []string{"a/x", "b"}},
		{"b", -1, []string{}},
	} {
		got, err := m.Repositories(ctx, tc.last, tc.n)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Repositories(%q, %d) = %v, %v; want %v", tc.last, tc.n, got, err, tc.want)
		}
	}
	links, err := m.Links(ctx)
	if err != nil || len(links) != 3 {
		t.Fatalf("Links = %+v, %v", links, err)
	}
	if err := m.UnlinkEverywhere(ctx, []string{testLink("a").Digest, testLink("b").Digest}); err != nil {
		t.Fatal(err)
	}
	if links, _ := m.Links(ctx); len(links) != 1 || links[0].Repo != "a/x" {
		t.Fatalf("Links after UnlinkEverywhere = %+v", links)
	}
}

func TestMetaSetReferrersReplaces(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := openTestMeta(t)
	subject := digestOf([]byte("s"))
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	one, two := Descriptor{Digest: digestOf([]byte("1"))}, Descriptor{Digest: digestOf([]byte("2"))}
	if err := m.SetReferrers(ctx, "hub/app", subject, []Descriptor{one, two}, at); err != nil {
		t.Fatal(err)
	}
	if err := m.SetReferrers(ctx, "hub/app", subject, []Descriptor{two}, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ds, fetched, err := m.Referrers(ctx, "hub/app", subject)
	if err != nil || len(ds) != 1 || ds[0].Digest != two.Digest || !fetched.Equal(at.Add(time.Minute)) {
		t.Fatalf("Referrers = %+v, %v, %v", ds, fetched, err)
	}
}

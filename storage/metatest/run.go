package metatest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/regcache/regcache/storage"
)

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

var when = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func manifest(content string) storage.Link {
	return storage.Link{Digest: digest(content), MediaType: mediaManifest, Size: int64(len(content)), LinkedAt: when}
}

func blob(content string) storage.Link {
	return storage.Link{Digest: digest(content), Size: int64(len(content)), LinkedAt: when}
}

// Run runs the contract against the stores open returns: each call a
// new, empty store, closed by the caller's cleanup.
func Run(t *testing.T, open func(t *testing.T) Store, opts ...Option) {
	o := options{second: func(_ *testing.T, s Store) Store { return s }}
	for _, opt := range opts {
		opt(&o)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"LinkPerRepository", testLinkPerRepository},
		{"LinkKeepsManifestMediaType", testLinkKeepsManifestMediaType},
		{"InvalidDigest", testInvalidDigest},
		{"TagPointsAtLinkDigest", testTagPointsAtLinkDigest},
		{"TagPage", testTagPage},
		{"HasRepo", testHasRepo},
		{"Records", testRecords},
		{"AccessTimes", testAccessTimes},
		{"Referrers", testReferrers},
		{"DeleteManifest", testDeleteManifest},
		{"DeleteTagAndUnlink", testDeleteTagAndUnlink},
		{"UnlinkEverywhere", testUnlinkEverywhere},
		{"LinksAndContents", testLinksAndContents},
		{"Repositories", testRepositories},
		{"Remove", testRemove},
		{"RemoveMany", testRemoveMany},
		{"PutImage", testPutImage},
		{"PutImageLarge", testPutImageLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
	races := []struct {
		name string
		fn   func(t *testing.T, a, b Store)
	}{
		{"ConcurrentTagWriters", testConcurrentTagWriters},
		{"ConcurrentLinkOfOneDigest", testConcurrentLink},
		{"DeleteManifestRacingLink", testDeleteManifestRacingLink},
		{"RemoveRacingLink", testRemoveRacingLink},
	}
	for _, tt := range races {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := open(t)
			tt.fn(t, a, o.second(t, a))
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testLinkPerRepository(t *testing.T, s Store) {
	ctx := t.Context()
	l := manifest("config")
	must(t, s.Link(ctx, "library/a", l, nil))
	tests := []struct {
		name, repo, digest string
		wantErr            error
	}{
		{"linked repo", "library/a", l.Digest, nil},
		{"other repo", "library/b", l.Digest, storage.ErrNotFound},
		{"repo name prefix", "library", l.Digest, storage.ErrNotFound},
		{"repo name extension", "library/a/b", l.Digest, storage.ErrNotFound},
		{"other digest", "library/a", digest("other"), storage.ErrNotFound},
	}
	for _, tt := range tests {
		got, err := s.Linked(ctx, tt.repo, tt.digest)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: Linked error %v, want %v", tt.name, err, tt.wantErr)
			continue
		}
		if tt.wantErr == nil && (got.Digest != l.Digest || got.MediaType != l.MediaType || got.Size != l.Size || !got.LinkedAt.Equal(l.LinkedAt)) {
			t.Errorf("%s: Linked = %+v, want %+v", tt.name, got, l)
		}
	}
}

func testLinkKeepsManifestMediaType(t *testing.T, s Store) {
	ctx := t.Context()
	m := manifest("index")
	must(t, s.Link(ctx, "r", m, nil))
	b := m
	b.MediaType = ""
	b.LinkedAt = when.Add(time.Hour)
	must(t, s.Link(ctx, "r", b, nil))
	got, err := s.Linked(ctx, "r", m.Digest)
	must(t, err)
	if got.MediaType != mediaManifest || !got.LinkedAt.Equal(b.LinkedAt) {
		t.Errorf("after a blob link: %+v, want the manifest media type kept and the new time", got)
	}
	// A manifest link replaces a blob link's empty media type.
	c := blob("layer")
	must(t, s.Link(ctx, "r", c, nil))
	c.MediaType = mediaManifest
	must(t, s.Link(ctx, "r", c, nil))
	if got, _ := s.Linked(ctx, "r", c.Digest); got.MediaType != mediaManifest {
		t.Errorf("manifest link over a blob link: %+v", got)
	}
}

func testInvalidDigest(t *testing.T, s Store) {
	ctx := t.Context()
	bad := storage.Link{Digest: "sha256:nothex", Size: 1}
	if err := s.Link(ctx, "r", bad, nil); !errors.Is(err, storage.ErrInvalidDigest) {
		t.Errorf("Link: %v, want ErrInvalidDigest", err)
	}
	if err := s.PutManifest(ctx, "r", bad, nil, nil); !errors.Is(err, storage.ErrInvalidDigest) {
		t.Errorf("PutManifest: %v, want ErrInvalidDigest", err)
	}
	ref := &storage.Referrer{Subject: "nope"}
	if err := s.PutManifest(ctx, "r", manifest("m"), nil, ref); !errors.Is(err, storage.ErrInvalidDigest) {
		t.Errorf("PutManifest subject: %v, want ErrInvalidDigest", err)
	}
	if err := s.SetReferrers(ctx, "r", "nope", nil, when); !errors.Is(err, storage.ErrInvalidDigest) {
		t.Errorf("SetReferrers: %v, want ErrInvalidDigest", err)
	}
	if err := s.PutImage(ctx, "r", storage.Image{Links: []storage.Link{bad}}); !errors.Is(err, storage.ErrInvalidDigest) {
		t.Errorf("PutImage: %v, want ErrInvalidDigest", err)
	}
	if ok, _ := s.HasRepo(ctx, "r"); ok {
		t.Errorf("a refused write created the repository")
	}
}

func testTagPointsAtLinkDigest(t *testing.T, s Store) {
	ctx := t.Context()
	m := manifest("v1")
	must(t, s.Link(ctx, "r", m, &storage.Tag{Name: "latest", Digest: digest("ignored"), FetchedAt: when}))
	got, err := s.Tag(ctx, "r", "latest")
	must(t, err)
	if got.Name != "latest" || got.Digest != m.Digest || !got.FetchedAt.Equal(when) {
		t.Errorf("Tag = %+v, want latest -> %s fetched %v", got, m.Digest, when)
	}
	if _, err := s.Linked(ctx, "r", m.Digest); err != nil {
		t.Errorf("the tagged manifest is not linked: %v", err)
	}
	if _, err := s.Tag(ctx, "r", "other"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("missing tag: %v", err)
	}
	if _, err := s.Tag(ctx, "r/x", "latest"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("tag of another repository: %v", err)
	}
	m2 := manifest("v2")
	must(t, s.PutManifest(ctx, "r", m2, &storage.Tag{Name: "latest", FetchedAt: when.Add(time.Minute)}, nil))
	if got, _ := s.Tag(ctx, "r", "latest"); got.Digest != m2.Digest || !got.FetchedAt.Equal(when.Add(time.Minute)) {
		t.Errorf("moved tag = %+v, want %s", got, m2.Digest)
	}
}

func testTagPage(t *testing.T, s Store) {
	ctx := t.Context()
	names := []string{"1.0", "1.1", "2.0", "A", "a", "latest", "z"}
	for _, n := range names {
		must(t, s.Link(ctx, "lib/app", manifest(n), &storage.Tag{Name: n}))
	}
	// Tags of repositories whose names extend or prefix this one.
	must(t, s.Link(ctx, "lib/app/sub", manifest("sub"), &storage.Tag{Name: "0.9"}))
	must(t, s.Link(ctx, "lib", manifest("lib"), &storage.Tag{Name: "1.05"}))
	all, err := s.Tags(ctx, "lib/app")
	must(t, err)
	if !slices.Equal(all, names) {
		t.Errorf("Tags = %v, want %v", all, names)
	}
	tests := []struct {
		after string
		limit int
		want  []string
	}{
		{"", -1, names},
		{"", 0, nil},
		{"", 1, names[:1]},
		{"", 7, names},
		{"", 8, names},
		{"1.0", 2, []string{"1.1", "2.0"}},
		{"1.05", 2, []string{"1.1", "2.0"}}, // not a tag: the page starts after where it would be
		{"latest", 5, []string{"z"}},
		{"z", 5, nil},
		{"zz", -1, nil},
		{"0", -1, names},
	}
	for _, tt := range tests {
		got, err := s.TagPage(ctx, "lib/app", tt.after, tt.limit)
		must(t, err)
		if len(got) != 0 || len(tt.want) != 0 {
			if !slices.Equal(got, tt.want) {
				t.Errorf("TagPage(after %q, limit %d) = %v, want %v", tt.after, tt.limit, got, tt.want)
			}
		}
	}
	// Walking pages of 3 gives every tag once.
	var walked []string
	for after := ""; ; {
		page, err := s.TagPage(ctx, "lib/app", after, 3)
		must(t, err)
		walked = append(walked, page...)
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1]
	}
	if !slices.Equal(walked, names) {
		t.Errorf("pages of 3: %v", walked)
	}
	if got, _ := s.Tags(ctx, "nothing/here"); len(got) != 0 {
		t.Errorf("tags of an unknown repository: %v", got)
	}
}

func testHasRepo(t *testing.T, s Store) {
	ctx := t.Context()
	for _, r := range []string{"a", "b", "c"} {
		if ok, err := s.HasRepo(ctx, r); ok || err != nil {
			t.Fatalf("HasRepo(%s) before any write = %v, %v", r, ok, err)
		}
	}
	must(t, s.Link(ctx, "a", blob("x"), nil))
	must(t, s.SetReferrers(ctx, "b", digest("subject"), nil, when))
	must(t, s.Unlink(ctx, "a", digest("x")))
	for r, want := range map[string]bool{"a": true, "b": true, "c": false, "a/x": false} {
		if ok, err := s.HasRepo(ctx, r); ok != want || err != nil {
			t.Errorf("HasRepo(%s) = %v, %v; want %v", r, ok, err, want)
		}
	}
}

func testRecords(t *testing.T, s Store) {
	ctx := t.Context()
	must(t, s.PutRecord(ctx, "rules", "docker.io", []byte(`{"v":1}`)))
	must(t, s.PutRecord(ctx, "rules", "ghcr.io/x", []byte(`{"v":2}`)))
	must(t, s.PutRecord(ctx, "rules", "docker.io", []byte(`{"v":3}`)))
	must(t, s.PutRecord(ctx, "credential-sets", "docker.io", []byte(`{}`)))
	got, err := s.Records(ctx, "rules")
	must(t, err)
	want := map[string][]byte{"docker.io": []byte(`{"v":3}`), "ghcr.io/x": []byte(`{"v":2}`)}
	if !maps.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("Records = %q, want %q", got, want)
	}
	if got, err := s.Records(ctx, "none"); err != nil || len(got) != 0 {
		t.Errorf("Records of an unknown kind = %v, %v", got, err)
	}
	must(t, s.DeleteRecord(ctx, "rules", "docker.io"))
	if err := s.DeleteRecord(ctx, "rules", "docker.io"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second DeleteRecord: %v, want ErrNotFound", err)
	}
	if err := s.DeleteRecord(ctx, "none", "x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("DeleteRecord of an unknown kind: %v, want ErrNotFound", err)
	}
	if got, _ := s.Records(ctx, "rules"); len(got) != 1 || string(got["ghcr.io/x"]) != `{"v":2}` {
		t.Errorf("after delete: %q", got)
	}
	if got, _ := s.Records(ctx, "credential-sets"); len(got) != 1 {
		t.Errorf("another kind changed: %q", got)
	}
}

func testAccessTimes(t *testing.T, s Store) {
	ctx := t.Context()
	times := map[string]time.Time{}
	// More than one transaction of etcd's default limit holds.
	for i := range 300 {
		times[digest(fmt.Sprint(i))] = when.Add(time.Duration(i) * time.Second)
	}
	must(t, s.TouchBlobs(ctx, times))
	got, err := s.AccessTimes(ctx)
	must(t, err)
	if !maps.EqualFunc(got, times, time.Time.Equal) {
		t.Errorf("AccessTimes: %d entries, want %d", len(got), len(times))
	}
	d := digest("7")
	must(t, s.TouchBlobs(ctx, map[string]time.Time{d: when.Add(time.Hour).In(time.FixedZone("x", 3600))}))
	if at, err := s.LastAccess(ctx, d); err != nil || !at.Equal(when.Add(time.Hour)) {
		t.Errorf("LastAccess = %v, %v; want %v", at, err, when.Add(time.Hour))
	}
	if _, err := s.LastAccess(ctx, digest("never")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("LastAccess of a blob never served: %v", err)
	}
}

func testReferrers(t *testing.T, s Store) {
	ctx := t.Context()
	subject := digest("subject")
	sig := storage.Descriptor{MediaType: mediaManifest, Digest: digest("sig"), Size: 3, ArtifactType: "application/x-sig", Annotations: map[string]string{"k": "v"}}
	sbom := storage.Descriptor{MediaType: mediaManifest, Digest: digest("sbom"), Size: 4}
	must(t, s.PutManifest(ctx, "r", manifest("sig"), nil, &storage.Referrer{Subject: subject, Descriptor: sig}))
	must(t, s.PutManifest(ctx, "r", manifest("sbom"), &storage.Tag{Name: "sbom"}, &storage.Referrer{Subject: subject, Descriptor: sbom}))
	got, fetched, err := s.Referrers(ctx, "r", subject)
	must(t, err)
	want := []storage.Descriptor{sig, sbom}
	slices.SortFunc(want, func(a, b storage.Descriptor) int { return cmpString(a.Digest, b.Digest) })
	if !equalDescriptors(got, want) || !fetched.IsZero() {
		t.Errorf("pushed referrers = %+v fetched %v; want %+v, zero time", got, fetched, want)
	}
	if got, _, _ := s.Referrers(ctx, "other", subject); len(got) != 0 {
		t.Errorf("another repository's referrers: %+v", got)
	}
	// A fetched listing replaces the pushed one, with its time.
	only := storage.Descriptor{MediaType: mediaManifest, Digest: digest("only"), Size: 5}
	must(t, s.SetReferrers(ctx, "r", subject, []storage.Descriptor{only}, when))
	got, fetched, err = s.Referrers(ctx, "r", subject)
	must(t, err)
	if !equalDescriptors(got, []storage.Descriptor{only}) || !fetched.Equal(when) {
		t.Errorf("after SetReferrers: %+v fetched %v", got, fetched)
	}
	must(t, s.SetReferrers(ctx, "r", subject, nil, when.Add(time.Hour)))
	got, fetched, _ = s.Referrers(ctx, "r", subject)
	if len(got) != 0 || !fetched.Equal(when.Add(time.Hour)) {
		t.Errorf("an empty fetched listing: %+v fetched %v", got, fetched)
	}
	// A listing larger than one etcd transaction.
	var many []storage.Descriptor
	for i := range 150 {
		many = append(many, storage.Descriptor{MediaType: mediaManifest, Digest: digest(fmt.Sprint("ref", i)), Size: int64(i)})
	}
	must(t, s.SetReferrers(ctx, "r", subject, many, when))
	must(t, s.SetReferrers(ctx, "r", subject, many[:140], when.Add(2*time.Hour)))
	got, fetched, _ = s.Referrers(ctx, "r", subject)
	slices.SortFunc(many, func(a, b storage.Descriptor) int { return cmpString(a.Digest, b.Digest) })
	if len(got) != 140 || !fetched.Equal(when.Add(2*time.Hour)) {
		t.Errorf("a large listing replaced: %d referrers fetched %v, want 140", len(got), fetched)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func equalDescriptors(a, b []storage.Descriptor) bool {
	return slices.EqualFunc(a, b, func(x, y storage.Descriptor) bool {
		return x.MediaType == y.MediaType && x.Digest == y.Digest && x.Size == y.Size && x.ArtifactType == y.ArtifactType && maps.Equal(x.Annotations, y.Annotations)
	})
}

func testDeleteManifest(t *testing.T, s Store) {
	ctx := t.Context()
	subject := digest("subject")
	m := manifest("m")
	other := manifest("other")
	ref := &storage.Referrer{Subject: subject, Descriptor: storage.Descriptor{MediaType: mediaManifest, Digest: m.Digest, Size: m.Size}}
	must(t, s.PutManifest(ctx, "r", m, &storage.Tag{Name: "a"}, ref))
	must(t, s.Link(ctx, "r", m, &storage.Tag{Name: "b"}))
	must(t, s.Link(ctx, "r", other, &storage.Tag{Name: "c"}))
	must(t, s.Link(ctx, "r", blob("layer"), nil))
	removed, err := s.DeleteManifest(ctx, "r", m.Digest, subject)
	must(t, err)
	slices.Sort(removed)
	if !slices.Equal(removed, []string{"a", "b"}) {
		t.Errorf("removed tags %v, want [a b]", removed)
	}
	if tags, _ := s.Tags(ctx, "r"); !slices.Equal(tags, []string{"c"}) {
		t.Errorf("tags left %v, want [c]", tags)
	}
	if _, err := s.Linked(ctx, "r", m.Digest); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the manifest is still linked: %v", err)
	}
	if refs, _, _ := s.Referrers(ctx, "r", subject); len(refs) != 0 {
		t.Errorf("referrers left: %+v", refs)
	}
	if _, err := s.DeleteManifest(ctx, "r", m.Digest, ""); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("deleted twice: %v", err)
	}
	if _, err := s.DeleteManifest(ctx, "r", digest("layer"), ""); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a blob deleted as a manifest: %v", err)
	}
	if _, err := s.Linked(ctx, "r", digest("layer")); err != nil {
		t.Errorf("the blob link went: %v", err)
	}
}

func testDeleteTagAndUnlink(t *testing.T, s Store) {
	ctx := t.Context()
	m := manifest("m")
	must(t, s.Link(ctx, "r", m, &storage.Tag{Name: "t"}))
	must(t, s.DeleteTag(ctx, "r", "t"))
	if err := s.DeleteTag(ctx, "r", "t"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("DeleteTag twice: %v", err)
	}
	if err := s.DeleteTag(ctx, "nope", "t"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("DeleteTag of an unknown repository: %v", err)
	}
	if _, err := s.Linked(ctx, "r", m.Digest); err != nil {
		t.Errorf("DeleteTag removed the link: %v", err)
	}
	must(t, s.Unlink(ctx, "r", m.Digest))
	if err := s.Unlink(ctx, "r", m.Digest); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Unlink twice: %v", err)
	}
}

func testUnlinkEverywhere(t *testing.T, s Store) {
	ctx := t.Context()
	gone, kept := blob("gone"), blob("kept")
	for _, r := range []string{"a", "a/b", "c"} {
		must(t, s.Link(ctx, r, gone, nil))
		must(t, s.Link(ctx, r, kept, nil))
	}
	must(t, s.UnlinkEverywhere(ctx, nil))
	must(t, s.UnlinkEverywhere(ctx, []string{gone.Digest, digest("never linked")}))
	links, err := s.Links(ctx)
	must(t, err)
	if len(links) != 3 {
		t.Errorf("links left %+v, want the 3 kept", links)
	}
	for _, l := range links {
		if l.Digest != kept.Digest {
			t.Errorf("left %+v", l)
		}
	}
}

func testLinksAndContents(t *testing.T, s Store) {
	ctx := t.Context()
	must(t, s.Link(ctx, "a", manifest("m1"), &storage.Tag{Name: "v1", FetchedAt: when}))
	must(t, s.Link(ctx, "a/b", blob("l1"), nil))
	must(t, s.Link(ctx, "c", manifest("m2"), &storage.Tag{Name: "v2"}))
	links, err := s.Links(ctx)
	must(t, err)
	got := map[string]bool{}
	for _, l := range links {
		got[l.Repo+"@"+l.Digest+"@"+l.MediaType] = true
	}
	want := map[string]bool{
		"a@" + digest("m1") + "@" + mediaManifest: true,
		"a/b@" + digest("l1") + "@":               true,
		"c@" + digest("m2") + "@" + mediaManifest: true,
	}
	if !maps.Equal(got, want) {
		t.Errorf("Links = %v, want %v", got, want)
	}
	clinks, tags, err := s.Contents(ctx)
	must(t, err)
	if len(clinks) != 3 {
		t.Errorf("Contents links %+v", clinks)
	}
	gotTags := map[string]string{}
	for _, tg := range tags {
		gotTags[tg.Repo+":"+tg.Name] = tg.Digest
		if tg.Name == "v1" && !tg.FetchedAt.Equal(when) {
			t.Errorf("Contents tag v1 fetched %v", tg.FetchedAt)
		}
	}
	if !maps.Equal(gotTags, map[string]string{"a:v1": digest("m1"), "c:v2": digest("m2")}) {
		t.Errorf("Contents tags %v", gotTags)
	}
}

func testRepositories(t *testing.T, s Store) {
	ctx := t.Context()
	repos := []string{"a", "a/b", "a0", "b", "lib/x", "z"}
	for i, r := range repos {
		if i%2 == 0 {
			must(t, s.Link(ctx, r, blob(r), nil))
		} else {
			must(t, s.Link(ctx, r, manifest(r), &storage.Tag{Name: "t"}))
		}
	}
	// Neither a link nor a tag: not listed.
	must(t, s.SetReferrers(ctx, "only/referrers", digest("s"), nil, when))
	must(t, s.Link(ctx, "emptied", blob("e"), nil))
	must(t, s.Unlink(ctx, "emptied", digest("e")))
	tests := []struct {
		last string
		n    int
		want []string
	}{
		{"", -1, repos},
		{"", 0, nil},
		{"", 2, repos[:2]},
		{"a", 2, []string{"a/b", "a0"}},
		{"a/a", -1, repos[1:]},
		{"lib/x", 10, []string{"z"}},
		{"z", -1, nil},
	}
	for _, tt := range tests {
		got, err := s.Repositories(ctx, tt.last, tt.n)
		must(t, err)
		if got == nil {
			t.Errorf("Repositories(%q, %d) = nil, want an empty list", tt.last, tt.n)
		}
		if len(got) != 0 || len(tt.want) != 0 {
			if !slices.Equal(got, tt.want) {
				t.Errorf("Repositories(%q, %d) = %v, want %v", tt.last, tt.n, got, tt.want)
			}
		}
	}
}

func testRemove(t *testing.T, s Store) {
	ctx := t.Context()
	m, layer := manifest("m"), blob("layer")
	subject := m.Digest
	must(t, s.Link(ctx, "r", m, &storage.Tag{Name: "old"}))
	must(t, s.Link(ctx, "r", m, &storage.Tag{Name: "moved"}))
	must(t, s.Link(ctx, "r", layer, nil))
	must(t, s.Link(ctx, "r", manifest("new"), &storage.Tag{Name: "moved"}))
	must(t, s.SetReferrers(ctx, "r", subject, []storage.Descriptor{{MediaType: mediaManifest, Digest: digest("sig"), Size: 1}}, when))
	must(t, s.TouchBlobs(ctx, map[string]time.Time{layer.Digest: when, m.Digest: when}))
	err := s.Remove(ctx, []storage.Removal{
		{Repo: "r", Tags: map[string]string{"old": m.Digest, "moved": m.Digest, "absent": m.Digest}, Links: []string{m.Digest, layer.Digest, digest("absent")}, Subjects: []string{subject}},
		{Repo: "never", Tags: map[string]string{"x": m.Digest}, Links: []string{m.Digest}},
	}, []string{layer.Digest, digest("absent")})
	must(t, err)
	if tags, _ := s.Tags(ctx, "r"); !slices.Equal(tags, []string{"moved"}) {
		t.Errorf("tags left %v, want the moved one", tags)
	}
	for _, d := range []string{m.Digest, layer.Digest} {
		if _, err := s.Linked(ctx, "r", d); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("link %s left: %v", d, err)
		}
	}
	if refs, fetched, _ := s.Referrers(ctx, "r", subject); len(refs) != 0 || !fetched.IsZero() {
		t.Errorf("referrers left %+v fetched %v", refs, fetched)
	}
	if _, err := s.LastAccess(ctx, layer.Digest); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("access time of the layer left: %v", err)
	}
	if _, err := s.LastAccess(ctx, m.Digest); err != nil {
		t.Errorf("access time of the manifest (not forgotten): %v", err)
	}
}

func testRemoveMany(t *testing.T, s Store) {
	ctx := t.Context()
	var rms []storage.Removal
	var forget []string
	for i := range 60 {
		repo := fmt.Sprint("r", i)
		m, l := manifest(repo), blob(repo)
		must(t, s.Link(ctx, repo, m, &storage.Tag{Name: "a"}))
		must(t, s.Link(ctx, repo, l, nil))
		rms = append(rms, storage.Removal{Repo: repo, Tags: map[string]string{"a": m.Digest}, Links: []string{m.Digest, l.Digest}, Subjects: []string{m.Digest}})
		forget = append(forget, l.Digest)
	}
	must(t, s.Remove(ctx, rms, forget))
	links, tags, err := s.Contents(ctx)
	must(t, err)
	if len(links) != 0 || len(tags) != 0 {
		t.Errorf("left %d links, %d tags", len(links), len(tags))
	}
}

func testPutImage(t *testing.T, s Store) {
	ctx := t.Context()
	idx, m, layer := manifest("index"), manifest("m"), blob("layer")
	sig := storage.Descriptor{MediaType: mediaManifest, Digest: digest("sig"), Size: 2}
	must(t, s.Link(ctx, "r", idx, nil))
	layerAsBlob := idx
	layerAsBlob.MediaType = ""
	img := storage.Image{
		Links:     []storage.Link{layerAsBlob, m, layer, manifest("sig")},
		Tags:      []storage.Tag{{Name: "v1", Digest: idx.Digest, FetchedAt: when}},
		Referrers: []storage.Referrer{{Subject: idx.Digest, Descriptor: sig}},
		ListedAt:  when,
	}
	must(t, s.PutImage(ctx, "r", img))
	must(t, s.PutImage(ctx, "empty", storage.Image{}))
	if ok, _ := s.HasRepo(ctx, "empty"); ok {
		t.Errorf("an empty image created its repository")
	}
	if got, _ := s.Linked(ctx, "r", idx.Digest); got.MediaType != mediaManifest {
		t.Errorf("the index link was demoted: %+v", got)
	}
	if tg, err := s.Tag(ctx, "r", "v1"); err != nil || tg.Digest != idx.Digest {
		t.Errorf("tag v1 = %+v, %v", tg, err)
	}
	refs, fetched, _ := s.Referrers(ctx, "r", idx.Digest)
	if !equalDescriptors(refs, []storage.Descriptor{sig}) || !fetched.Equal(when) {
		t.Errorf("referrers %+v fetched %v", refs, fetched)
	}
	links, _ := s.Links(ctx)
	if len(links) != 4 {
		t.Errorf("links %+v, want 4", links)
	}
}

func testPutImageLarge(t *testing.T, s Store) {
	ctx := t.Context()
	img := storage.Image{Tags: []storage.Tag{{Name: "big", Digest: digest("root")}}}
	for i := range 200 {
		img.Links = append(img.Links, blob(fmt.Sprint("layer", i)))
	}
	img.Links = append(img.Links, manifest("root"))
	must(t, s.PutImage(ctx, "big", img))
	links, tags, err := s.Contents(ctx)
	must(t, err)
	if len(links) != 201 || len(tags) != 1 {
		t.Errorf("%d links, %d tags; want 201, 1", len(links), len(tags))
	}
}

package storage

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// openTestMeta opens a fresh database in a temporary directory, closed at
// the end of the test.
func openTestMeta(t *testing.T) *Meta {
	t.Helper()
	m, err := OpenMeta(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatalf("OpenMeta: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

const mediaManifest = "application/vnd.oci.image.manifest.v1+json"

func testLink(content string) Link {
	return Link{
		Digest:    digestOf([]byte(content)),
		MediaType: mediaManifest,
		Size:      int64(len(content)),
		LinkedAt:  time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC),
	}
}

func assertLinkEqual(t *testing.T, got, want Link) {
	t.Helper()
	if got.Digest != want.Digest || got.MediaType != want.MediaType || got.Size != want.Size || !got.LinkedAt.Equal(want.LinkedAt) {
		t.Errorf("link = %+v, want %+v", got, want)
	}
}

func TestMetaLinksPerRepository(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	l := testLink("config")
	if err := m.Link(t.Context(), "library/a", l, nil); err != nil {
		t.Fatalf("Link: %v", err)
	}
	other := digestOf([]byte("not linked anywhere"))

	tests := []struct {
		name    string
		repo    string
		digest  string
		wantErr error
	}{
		{"linked repo", "library/a", l.Digest, nil},
		{"other repo", "library/b", l.Digest, ErrNotFound},
		{"repo name prefix", "library", l.Digest, ErrNotFound},
		{"repo name extension", "library/a/b", l.Digest, ErrNotFound},
		{"linked repo other digest", "library/a", other, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := m.Linked(t.Context(), tt.repo, tt.digest)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Linked(%q, %s) error = %v, want %v", tt.repo, tt.digest, err, tt.wantErr)
			}
			if tt.wantErr == nil {
				assertLinkEqual(t, got, l)
			}
		})
	}

	repos := []struct {
		repo string
		want bool
	}{
		{"library/a", true},
		{"library/b", false},
		{"library", false},
		{"", false},
	}
	for _, tt := range repos {
		t.Run("HasRepo/"+tt.repo, func(t *testing.T) {
			t.Parallel()
			got, err := m.HasRepo(t.Context(), tt.repo)
			if err != nil {
				t.Fatalf("HasRepo(%q): %v", tt.repo, err)
			}
			if got != tt.want {
				t.Errorf("HasRepo(%q) = %v, want %v", tt.repo, got, tt.want)
			}
		})
	}
}

func TestMetaTags(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	ctx := t.Context()
	const repo = "team/app"
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	v1, v2 := testLink("manifest v1"), testLink("manifest v2")

	// Each step links a manifest and (re)points a tag at it; after every
	// step the listed tags must read back as expected.
	steps := []struct {
		name     string
		link     Link
		tag      Tag
		wantTags []string
		want     map[string]Tag
	}{
		{
			name:     "first tag",
			link:     v1,
			tag:      Tag{Name: "latest", Digest: v1.Digest, FetchedAt: t0},
			wantTags: []string{"latest"},
			want:     map[string]Tag{"latest": {Name: "latest", Digest: v1.Digest, FetchedAt: t0}},
		},
		{
			name:     "second tag sorts first",
			link:     v1,
			tag:      Tag{Name: "1.0", Digest: v1.Digest, FetchedAt: t0.Add(time.Second)},
			wantTags: []string{"1.0", "latest"},
			want: map[string]Tag{
				"1.0":    {Name: "1.0", Digest: v1.Digest, FetchedAt: t0.Add(time.Second)},
				"latest": {Name: "latest", Digest: v1.Digest, FetchedAt: t0},
			},
		},
		{
			name:     "re-point latest",
			link:     v2,
			tag:      Tag{Name: "latest", Digest: v2.Digest, FetchedAt: t0.Add(time.Hour)},
			wantTags: []string{"1.0", "latest"},
			want: map[string]Tag{
				"1.0":    {Name: "1.0", Digest: v1.Digest, FetchedAt: t0.Add(time.Second)},
				"latest": {Name: "latest", Digest: v2.Digest, FetchedAt: t0.Add(time.Hour)},
			},
		},
		{
			name:     "third tag in the middle",
			link:     v2,
			tag:      Tag{Name: "2.0", Digest: v2.Digest, FetchedAt: t0.Add(2 * time.Hour)},
			wantTags: []string{"1.0", "2.0", "latest"},
			want: map[string]Tag{
				"2.0":    {Name: "2.0", Digest: v2.Digest, FetchedAt: t0.Add(2 * time.Hour)},
				"latest": {Name: "latest", Digest: v2.Digest, FetchedAt: t0.Add(time.Hour)},
			},
		},
	}
	// Steps build on each other, so they run in order.
	for _, st := range steps {
		tag := st.tag
		if err := m.Link(ctx, repo, st.link, &tag); err != nil {
			t.Fatalf("%s: Link: %v", st.name, err)
		}
		// The link is recorded in the same call.
		if _, err := m.Linked(ctx, repo, st.link.Digest); err != nil {
			t.Errorf("%s: Linked: %v", st.name, err)
		}
		tags, err := m.Tags(ctx, repo)
		if err != nil {
			t.Fatalf("%s: Tags: %v", st.name, err)
		}
		if !slices.Equal(tags, st.wantTags) {
			t.Errorf("%s: Tags = %q, want %q", st.name, tags, st.wantTags)
		}
		for name, want := range st.want {
			got, err := m.Tag(ctx, repo, name)
			if err != nil {
				t.Fatalf("%s: Tag(%q): %v", st.name, name, err)
			}
			if got.Name != want.Name || got.Digest != want.Digest || !got.FetchedAt.Equal(want.FetchedAt) {
				t.Errorf("%s: Tag(%q) = %+v, want %+v", st.name, name, got, want)
			}
		}
	}

	unknown := []struct {
		name, repo, tag string
	}{
		{"unknown tag", repo, "nope"},
		{"tag of other repo", "team/other", "latest"},
		{"empty tag", repo, ""},
	}
	for _, tt := range unknown {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, err := m.Tag(t.Context(), tt.repo, tt.tag); !errors.Is(err, ErrNotFound) {
				t.Errorf("Tag(%q, %q) = %+v, %v; want ErrNotFound", tt.repo, tt.tag, got, err)
			}
		})
	}
	t.Run("no tags in unknown repo", func(t *testing.T) {
		t.Parallel()
		tags, err := m.Tags(t.Context(), "team/other")
		if err != nil || len(tags) != 0 {
			t.Errorf("Tags(unknown) = %q, %v; want empty, nil", tags, err)
		}
	})
	t.Run("no tags in link-only repo", func(t *testing.T) {
		t.Parallel()
		if err := m.Link(t.Context(), "team/linkonly", v1, nil); err != nil {
			t.Fatalf("Link: %v", err)
		}
		tags, err := m.Tags(t.Context(), "team/linkonly")
		if err != nil || len(tags) != 0 {
			t.Errorf("Tags(link-only) = %q, %v; want empty, nil", tags, err)
		}
	})
}

// TestMetaLinkTagPointsAtLinkDigest checks the documented contract of Link:
// "when tag is not nil, points the tag at l.Digest".
func TestMetaLinkTagPointsAtLinkDigest(t *testing.T) {
	t.Parallel()
	l := testLink("manifest")
	tests := []struct {
		name      string
		tagDigest string // the Digest field the caller left in the Tag
	}{
		{"tag digest set to link digest", l.Digest},
		{"tag digest left empty", ""},
		{"tag digest stale", digestOf([]byte("older manifest"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := openTestMeta(t)
			fetched := time.Now()
			err := m.Link(t.Context(), "r", l, &Tag{Name: "latest", Digest: tt.tagDigest, FetchedAt: fetched})
			if err != nil {
				t.Fatalf("Link: %v", err)
			}
			got, err := m.Tag(t.Context(), "r", "latest")
			if err != nil {
				t.Fatalf("Tag: %v", err)
			}
			if got.Digest != l.Digest {
				t.Errorf("tag points at %q, want the linked digest %s", got.Digest, l.Digest)
			}
			if !got.FetchedAt.Equal(fetched) {
				t.Errorf("FetchedAt = %v, want %v", got.FetchedAt, fetched)
			}
		})
	}
}

// TestMetaLinkTagAtomic checks that a tag update that fails also undoes the
// link written in the same call.
func TestMetaLinkTagAtomic(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	l := testLink("manifest")
	// bbolt refuses an empty key, so the tag write fails after the link write.
	if err := m.Link(t.Context(), "r", l, &Tag{Name: "", Digest: l.Digest, FetchedAt: time.Now()}); err == nil {
		t.Fatal("Link with empty tag name succeeded, want error")
	}
	if _, err := m.Linked(t.Context(), "r", l.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Linked after failed Link = %v, want ErrNotFound", err)
	}
	if ok, err := m.HasRepo(t.Context(), "r"); err != nil || ok {
		t.Errorf("HasRepo after failed Link = %v, %v; want false, nil", ok, err)
	}
}

func TestMetaLinkInvalidDigest(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	for i, tt := range invalidDigests(digestOf([]byte("x"))) {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo := "r" + strings.Repeat("x", i)
			l := Link{Digest: tt.digest, Size: 1, LinkedAt: time.Now()}
			tests := []struct {
				name string
				tag  *Tag
			}{
				{"no tag", nil},
				{"with tag", &Tag{Name: "latest", Digest: tt.digest, FetchedAt: time.Now()}},
			}
			for _, c := range tests {
				if err := m.Link(t.Context(), repo, l, c.tag); !errors.Is(err, ErrInvalidDigest) {
					t.Errorf("%s: Link(%q) error = %v, want ErrInvalidDigest", c.name, tt.digest, err)
				}
			}
			if ok, err := m.HasRepo(t.Context(), repo); err != nil || ok {
				t.Errorf("HasRepo after refused Link = %v, %v; want false, nil", ok, err)
			}
			if _, err := m.Tag(t.Context(), repo, "latest"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Tag after refused Link = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestMetaRecords(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	ctx := t.Context()

	steps := []struct {
		name    string
		op      func() error
		wantErr error
		want    map[string]map[string][]byte // kind -> records after the step
	}{
		{
			name: "empty kind",
			op:   func() error { return nil },
			want: map[string]map[string][]byte{"rule": {}},
		},
		{
			name: "put",
			op:   func() error { return m.PutRecord(ctx, "rule", "docker.io", []byte(`{"a":1}`)) },
			want: map[string]map[string][]byte{"rule": {"docker.io": []byte(`{"a":1}`)}, "cred": {}},
		},
		{
			name: "put second key and other kind",
			op: func() error {
				if err := m.PutRecord(ctx, "rule", "ghcr.io", []byte(`{"b":2}`)); err != nil {
					return err
				}
				return m.PutRecord(ctx, "cred", "docker.io", []byte(`{"c":3}`))
			},
			want: map[string]map[string][]byte{
				"rule": {"docker.io": []byte(`{"a":1}`), "ghcr.io": []byte(`{"b":2}`)},
				"cred": {"docker.io": []byte(`{"c":3}`)},
			},
		},
		{
			name: "replace",
			op:   func() error { return m.PutRecord(ctx, "rule", "docker.io", []byte(`{"a":9}`)) },
			want: map[string]map[string][]byte{"rule": {"docker.io": []byte(`{"a":9}`), "ghcr.io": []byte(`{"b":2}`)}},
		},
		{
			name: "delete",
			op:   func() error { return m.DeleteRecord(ctx, "rule", "docker.io") },
			want: map[string]map[string][]byte{
				"rule": {"ghcr.io": []byte(`{"b":2}`)},
				"cred": {"docker.io": []byte(`{"c":3}`)},
			},
		},
		{
			name:    "delete again",
			op:      func() error { return m.DeleteRecord(ctx, "rule", "docker.io") },
			wantErr: ErrNotFound,
			want:    map[string]map[string][]byte{"rule": {"ghcr.io": []byte(`{"b":2}`)}},
		},
		{
			name:    "delete from unknown kind",
			op:      func() error { return m.DeleteRecord(ctx, "nokind", "x") },
			wantErr: ErrNotFound,
			want:    map[string]map[string][]byte{"nokind": {}},
		},
		{
			name:    "delete key of other kind",
			op:      func() error { return m.DeleteRecord(ctx, "cred", "ghcr.io") },
			wantErr: ErrNotFound,
			want: map[string]map[string][]byte{
				"rule": {"ghcr.io": []byte(`{"b":2}`)},
				"cred": {"docker.io": []byte(`{"c":3}`)},
			},
		},
	}
	// Steps build on each other, so they run in order.
	for _, st := range steps {
		if err := st.op(); !errors.Is(err, st.wantErr) {
			t.Fatalf("%s: error = %v, want %v", st.name, err, st.wantErr)
		}
		for kind, want := range st.want {
			got, err := m.Records(ctx, kind)
			if err != nil {
				t.Fatalf("%s: Records(%q): %v", st.name, kind, err)
			}
			if !maps.EqualFunc(got, want, bytes.Equal) {
				t.Errorf("%s: Records(%q) = %q, want %q", st.name, kind, got, want)
			}
		}
	}

}

// TestMetaRecordsOutliveTransaction checks that Records returns copies:
// bbolt values point into its memory map, which is replaced when the file
// grows, so a value kept past its transaction would turn to garbage.
func TestMetaRecordsOutliveTransaction(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	ctx := t.Context()
	want := []byte(`{"registry":"docker.io"}`)
	if err := m.PutRecord(ctx, "rule", "docker.io", want); err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	// A large neighbour keeps the bucket out of bbolt's inline form, whose
	// values may already be copied, so values come straight from the map.
	if err := m.PutRecord(ctx, "rule", "large", bytes.Repeat([]byte("l"), 8<<10)); err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	got, err := m.Records(ctx, "rule")
	if err != nil {
		t.Fatalf("Records: %v", err)
	}
	// Grow the file well past bbolt's initial mapping to force a remap.
	filler := bytes.Repeat([]byte("f"), 16<<10)
	for i := range 256 {
		if err := m.PutRecord(ctx, "filler", fmt.Sprint(i), filler); err != nil {
			t.Fatalf("PutRecord filler: %v", err)
		}
	}
	if !bytes.Equal(got["docker.io"], want) {
		t.Errorf("record read before growth = %q, want %q", got["docker.io"], want)
	}
	got["docker.io"][0] = 'X'
	again, err := m.Records(ctx, "rule")
	if err != nil {
		t.Fatalf("Records: %v", err)
	}
	if !bytes.Equal(again["docker.io"], want) {
		t.Errorf("stored record changed through a returned slice: %q", again["docker.io"])
	}
}

func TestMetaPersistence(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "meta.db")
	ctx := t.Context()
	l := testLink("persisted manifest")
	fetched := time.Date(2025, 6, 7, 8, 9, 10, 11, time.UTC)

	m, err := OpenMeta(path)
	if err != nil {
		t.Fatalf("OpenMeta: %v", err)
	}
	if err := m.Link(ctx, "r", l, &Tag{Name: "v1", Digest: l.Digest, FetchedAt: fetched}); err != nil {
		t.Fatalf("Link: %v", err)
	}
	if err := m.PutRecord(ctx, "rule", "k", []byte("v")); err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	m, err = OpenMeta(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { m.Close() })

	checks := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"link", func(t *testing.T) {
			got, err := m.Linked(ctx, "r", l.Digest)
			if err != nil {
				t.Fatalf("Linked: %v", err)
			}
			assertLinkEqual(t, got, l)
		}},
		{"tag", func(t *testing.T) {
			got, err := m.Tag(ctx, "r", "v1")
			if err != nil {
				t.Fatalf("Tag: %v", err)
			}
			if got.Digest != l.Digest || !got.FetchedAt.Equal(fetched) {
				t.Errorf("Tag = %+v, want digest %s fetched %v", got, l.Digest, fetched)
			}
		}},
		{"tags", func(t *testing.T) {
			got, err := m.Tags(ctx, "r")
			if err != nil || !slices.Equal(got, []string{"v1"}) {
				t.Errorf("Tags = %q, %v; want [v1]", got, err)
			}
		}},
		{"repo", func(t *testing.T) {
			if ok, err := m.HasRepo(ctx, "r"); err != nil || !ok {
				t.Errorf("HasRepo = %v, %v; want true", ok, err)
			}
		}},
		{"record", func(t *testing.T) {
			got, err := m.Records(ctx, "rule")
			if err != nil || string(got["k"]) != "v" || len(got) != 1 {
				t.Errorf("Records = %q, %v; want {k: v}", got, err)
			}
		}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.check(t)
		})
	}
}

// TestMetaLocked checks that a second OpenMeta on a database already open
// fails, once the lock wait is over, with ErrLocked and an error naming the
// database and the process that holds it (here the test itself), so that an
// operator knows what to stop. The first handle is unaffected, and the
// database opens again once it is closed.
func TestMetaLocked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "meta.db")
	first, err := OpenMeta(path)
	if err != nil {
		t.Fatalf("OpenMeta: %v", err)
	}
	defer first.Close()

	// A short lock wait: the default (2 s) would only slow the test down.
	second, err := OpenMeta(path, LockTimeout(50*time.Millisecond))
	if err == nil {
		second.Close()
		t.Fatal("second OpenMeta on an open database succeeded, want error")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("error = %v, want ErrLocked", err)
	}
	want := path + ": locked by another process"
	if runtime.GOOS == "linux" {
		comm, cerr := os.ReadFile("/proc/self/comm")
		if cerr != nil {
			t.Fatal(cerr)
		}
		want = fmt.Sprintf("%s: locked by %s (pid %d)", path, strings.TrimSpace(string(comm)), os.Getpid())
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error = %q, want it to say %q", err, want)
	}
	// The first handle is unaffected.
	if err := first.PutRecord(t.Context(), "rule", "k", []byte("v")); err != nil {
		t.Errorf("PutRecord on first handle: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, err := OpenMeta(path, LockTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatalf("OpenMeta after the holder closed it: %v", err)
	}
	third.Close()
}

func TestMetaTagPage(t *testing.T) {
	t.Parallel()
	m := openTestMeta(t)
	ctx := t.Context()
	l := testLink("manifest")
	// Inserted out of order; "v10" sorts before "v2" (byte order).
	for _, name := range []string{"v2", "latest", "v10", "v1", "a"} {
		if err := m.Link(ctx, "r", l, &Tag{Name: name, Digest: l.Digest}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		after string
		limit int
		want  []string
	}{
		{"", -1, []string{"a", "latest", "v1", "v10", "v2"}},
		{"", 2, []string{"a", "latest"}},
		{"latest", 2, []string{"v1", "v10"}},
		{"b", 2, []string{"latest", "v1"}}, // after a name that is not a tag
		{"v10", -1, []string{"v2"}},
		{"v2", 5, nil},
		{"z", 5, nil},
		{"", 0, nil},
	} {
		got, err := m.TagPage(ctx, "r", tt.after, tt.limit)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("TagPage(after %q, limit %d) = %q, %v; want %q", tt.after, tt.limit, got, err, tt.want)
		}
	}
	if got, err := m.TagPage(ctx, "no/such", "", -1); err != nil || got != nil {
		t.Errorf("TagPage of an unknown repository = %q, %v; want none", got, err)
	}
}

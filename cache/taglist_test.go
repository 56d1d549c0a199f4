package cache

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

// TestTagPagesWalk: a walk through the tag list pages costs the upstream
// one list (its first page asks, the pages that follow are cut from that
// list while it is younger than the tag TTL); a new walk asks again; the
// upstream's tags and the cached ones are merged in order, without
// duplicates.
func TestTagPagesWalk(t *testing.T) {
	t.Parallel()
	f, c := newClockedFixture(t, Anonymous{}, hubRule)
	for _, tag := range []string{"a", "c", "e"} {
		f.push(t, "library/app:"+tag)
	}
	// "c" is cached here; the upstream then lists only a, e and x: c was
	// deleted upstream but is still served from the cache, so it is listed.
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "c"))
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/library/app/tags/list" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name":"library/app","tags":["x","e","a","e"]}`))
		return true
	})
	const list = "/v2/library/app/tags/list"

	walk := func() (pages [][]string) {
		t.Helper()
		after := ""
		for range 10 {
			pg, err := f.puller.Tags(t.Context(), "hub/app", after, 1)
			if err != nil {
				t.Fatalf("Tags(after %q): %v", after, err)
			}
			pages = append(pages, pg.Tags)
			if !pg.More {
				return pages
			}
			after = pg.Tags[len(pg.Tags)-1]
		}
		t.Fatalf("walk did not end: %q", pages)
		return nil
	}
	want := [][]string{{"a"}, {"c"}, {"e"}, {"x"}}
	if got := walk(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("pages = %q, want %q", got, want)
	}
	if n := f.count("GET", list); n != 1 {
		t.Fatalf("upstream tag lists for one walk of 4 pages = %d, want 1", n)
	}
	walk()
	if n := f.count("GET", list); n != 2 {
		t.Fatalf("upstream tag lists after a second walk = %d, want 2 (a walk starts fresh)", n)
	}

	// The upstream gains a tag: a continuation page within the TTL is cut
	// from the remembered list; past the TTL it asks again.
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != list {
			return false
		}
		w.Write([]byte(`{"name":"library/app","tags":["a","e","x","y"]}`))
		return true
	})
	pg, err := f.puller.Tags(t.Context(), "hub/app", "x", -1)
	if err != nil || len(pg.Tags) != 0 || pg.More {
		t.Fatalf("page after x within the TTL = %+v, %v; want empty (the remembered list)", pg, err)
	}
	c.add(DefaultTagTTL + time.Second)
	pg, err = f.puller.Tags(t.Context(), "hub/app", "x", -1)
	if err != nil || !slices.Equal(pg.Tags, []string{"y"}) {
		t.Fatalf("page after x past the TTL = %+v, %v; want [y]", pg, err)
	}
	if n := f.count("GET", list); n != 3 {
		t.Fatalf("upstream tag lists = %d, want 3", n)
	}
}

func TestTagPageMerge(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b []string
		n    int
		want TagPage
	}{
		{nil, nil, -1, TagPage{Tags: []string{}}},
		{[]string{"a", "c"}, []string{"b", "c", "d"}, -1, TagPage{Tags: []string{"a", "b", "c", "d"}}},
		{[]string{"a", "c"}, []string{"b", "c", "d"}, 2, TagPage{Tags: []string{"a", "b"}, More: true}},
		{[]string{"a", "c"}, []string{"b", "c", "d"}, 4, TagPage{Tags: []string{"a", "b", "c", "d"}}},
		{[]string{"a"}, nil, 0, TagPage{Tags: []string{}, More: true}},
		{nil, []string{"v1", "v10", "v2"}, 3, TagPage{Tags: []string{"v1", "v10", "v2"}}},
	} {
		got := page(tt.a, tt.b, tt.n)
		if !slices.Equal(got.Tags, tt.want.Tags) || got.More != tt.want.More {
			t.Errorf("page(%q, %q, %d) = %+v, want %+v", tt.a, tt.b, tt.n, got, tt.want)
		}
	}
}

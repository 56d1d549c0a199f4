package warm

import (
	"io"
	stdlog "log"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/goleak"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	upstream *httptest.Server
	puller   *cache.Puller
	blobs    *storage.Blobs
	warmer   *Warmer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{upstream: httptest.NewServer(ggcr.New(ggcr.Logger(stdlog.New(io.Discard, "", 0))))}
	t.Cleanup(f.upstream.Close)
	dir := t.TempDir()
	var err error
	if f.blobs, err = storage.OpenBlobs(filepath.Join(dir, "blobs")); err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rules, err := cache.NewStore(t.Context(), meta, cache.Anonymous{}, []cache.Rule{{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := cache.NewEndpoints(map[string]string{"docker.io": f.upstream.URL})
	if err != nil {
		t.Fatal(err)
	}
	f.puller = cache.NewPuller(rules, eps, cache.Anonymous{}, f.blobs, meta, log, cache.Options{})
	t.Cleanup(f.puller.Close)
	f.warmer = New(f.puller, log)
	return f
}

func (f *fixture) ref(t *testing.T, repo string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(strings.TrimPrefix(f.upstream.URL, "http://")+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) pushImage(t *testing.T, repo string) v1.Image {
	t.Helper()
	img, err := random.Image(3000, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(f.ref(t, repo), img); err != nil {
		t.Fatal(err)
	}
	return img
}

func (f *fixture) pushIndex(t *testing.T, repo string) (v1.ImageIndex, []v1.Image) {
	t.Helper()
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var imgs []v1.Image
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(2000, 2)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	if err := remote.WriteIndex(f.ref(t, repo), idx); err != nil {
		t.Fatal(err)
	}
	return idx, imgs
}

// blobsOf lists the config and layer digests of img.
func blobsOf(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{m.Config.Digest.String()}
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

func (f *fixture) stored(t *testing.T, d string) bool {
	t.Helper()
	_, err := f.blobs.Stat(t.Context(), d)
	return err == nil
}

// collect runs a warm and returns its events.
func (f *fixture) collect(t *testing.T, req Request) []Event {
	t.Helper()
	if err := Check(req); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var evs []Event
	f.warmer.Warm(t.Context(), req, func(e Event) {
		mu.Lock()
		evs = append(evs, e)
		mu.Unlock()
	})
	return evs
}

// TestWarmThenServeWithoutUpstream: a tag (named as this registry's
// repository) and a two-platform index (named as the upstream reference)
// are warmed with every blob; with the upstream gone, every manifest and
// blob is served from the store.
func TestWarmThenServeWithoutUpstream(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	img := f.pushImage(t, "library/app:1")
	idx, children := f.pushIndex(t, "library/multi:1")
	evs := f.collect(t, Request{References: []string{"hub/app:1", "docker.io/library/multi:1"}})

	last := evs[len(evs)-1]
	if last.Type != TypeSummary || last.Succeeded != 2 || len(last.Failed) != 0 {
		t.Fatalf("summary %+v, want 2 succeeded", last)
	}
	done := map[string]Event{}
	for _, e := range evs {
		if e.Type == TypeDone {
			done[e.Ref] = e
		}
	}
	idxDigest, _ := idx.Digest()
	if d := done["docker.io/library/multi:1"]; d.Repository != "hub/multi" || d.Digest != idxDigest.String() || d.Blobs != 6 || d.BytesDone != d.Bytes || d.Fetched != d.Bytes ||
		!slices.Equal(d.Platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("index done event %+v: want hub/multi@%s, 6 blobs all fetched, both platforms", d, idxDigest)
	}
	if d := done["hub/app:1"]; d.Blobs != 3 || d.BytesDone != d.Bytes || d.Bytes == 0 {
		t.Fatalf("image done event %+v", d)
	}
	f.upstream.Close()
	ctx := t.Context()
	read := func(c cache.Content, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("with the upstream gone: %v", err)
		}
		io.Copy(io.Discard, c.Body)
		c.Body.Close()
	}
	read(f.puller.Manifest(ctx, "hub/app", "1"))
	read(f.puller.Manifest(ctx, "hub/multi", "1"))
	for _, d := range blobsOf(t, img) {
		read(f.puller.Blob(ctx, "hub/app", d))
	}
	for _, c := range children {
		cd, _ := c.Digest()
		read(f.puller.Manifest(ctx, "hub/multi", cd.String()))
		for _, d := range blobsOf(t, c) {
			read(f.puller.Blob(ctx, "hub/multi", d))
		}
	}
	// Warming again fetches nothing.
	again := f.collect(t, Request{References: []string{"hub/app:1"}})
	for _, e := range again {
		if e.Type == TypeDone && e.Fetched != 0 {
			t.Fatalf("a second warm fetched %d bytes", e.Fetched)
		}
	}
}

// TestWarmPlatforms: with platforms named, only their child manifests
// and blobs are fetched; a platform the index lacks is an error naming
// what it has.
func TestWarmPlatforms(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, children := f.pushIndex(t, "library/multi:1")
	f.collect(t, Request{References: []string{"hub/multi:1"}, Platforms: []string{"linux/arm64"}})
	for _, d := range blobsOf(t, children[1]) {
		if !f.stored(t, d) {
			t.Errorf("arm64 blob %s not warmed", d)
		}
	}
	for _, d := range blobsOf(t, children[0]) {
		if f.stored(t, d) {
			t.Errorf("amd64 blob %s warmed though only linux/arm64 was asked for", d)
		}
	}
	evs := f.collect(t, Request{References: []string{"hub/multi:1"}, Platforms: []string{"linux/s390x"}})
	if e := evs[0]; e.Type != TypeError || !strings.Contains(e.Error, "linux/s390x") || !strings.Contains(e.Error, "linux/amd64, linux/arm64") {
		t.Fatalf("missing platform: %+v", e)
	}
}

// TestWarmReportsEveryFailure: references that cannot be warmed are each
// reported, and listed in the summary; the others are warmed.
func TestWarmReportsEveryFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.pushImage(t, "library/app:1")
	evs := f.collect(t, Request{References: []string{"hub/app:1", "hub/app:nope", "quay.io/org/x:1", "hub/missing:2"}})
	sum := evs[len(evs)-1]
	want := []string{"hub/app:nope", "hub/missing:2", "quay.io/org/x:1"}
	if sum.Succeeded != 1 || !slices.Equal(sum.Failed, want) {
		t.Fatalf("summary %+v, want 1 succeeded and %v failed", sum, want)
	}
	errs := map[string]string{}
	for _, e := range evs {
		if e.Type == TypeError {
			errs[e.Ref] = e.Error
		}
	}
	if !strings.Contains(errs["quay.io/org/x:1"], "no cache rule") {
		t.Errorf("an upstream reference no rule covers: %q", errs["quay.io/org/x:1"])
	}
}

// TestCheck refuses what cannot run, naming it.
func TestCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{}, "no reference"},
		{Request{References: []string{"Hub/App:1"}}, `"Hub/App"`},
		{Request{References: []string{"hub/app:bad tag"}}, "bad tag"},
		{Request{References: []string{"hub/app@sha256:xyz"}}, "not a digest"},
		{Request{References: []string{"hub/app"}, Platforms: []string{"amd64"}}, `"amd64"`},
	} {
		if err := Check(tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%+v) = %v, want an error naming %s", tc.req, err, tc.want)
		}
	}
	for _, ok := range []string{"hub/app", "hub/app:1", "docker.io/library/app:1", "localhost:5000/x/y@sha256:" + strings.Repeat("a", 64), "127.0.0.1:5001/a:b"} {
		if err := Check(Request{References: []string{ok}}); err != nil {
			t.Errorf("Check(%q) = %v", ok, err)
		}
	}
}

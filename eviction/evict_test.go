package eviction

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// cachedUnder makes every repository under hub/ a cached one.
type cachedUnder struct{}

func (cachedUnder) Covering(repo string) (string, string, bool) {
	if rest, ok := strings.CutPrefix(repo, "hub/"); ok {
		return "HubLibrary", "docker.io/library/" + rest, true
	}
	return "", "", false
}

type fixture struct {
	dir   string
	blobs *storage.Blobs
	meta  *storage.Meta
	repos *local.Repos
	ev    *Evictor
	now   time.Time
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	dir := t.TempDir()
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sessions, err := uploads.New(t.Context(), blobs, meta, uploads.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, blobs: blobs, meta: meta, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f.repos = local.New(blobs, meta, sessions, cachedUnder{}, log, local.Options{})
	if opts.Now == nil {
		opts.Now = func() time.Time { return f.now }
	}
	if f.ev, err = New(blobs, meta, cachedUnder{}, f.repos, nil, log, opts); err != nil {
		t.Fatal(err)
	}
	return f
}

// img is an image written to the store.
type img struct {
	repo, tag     string
	digest        string // manifest
	config        string
	layers        []string
	body          []byte
	uniqueBytes   int64 // config, manifest and the layers no other image shares
	manifestBytes []byte
}

// blob stores b and returns its descriptor.
func (f *fixture) blob(t *testing.T, b []byte, mediaType string) manifest.Descriptor {
	t.Helper()
	if err := f.blobs.Put(t.Context(), digestOf(b), int64(len(b)), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return manifest.Descriptor{MediaType: mediaType, Digest: digestOf(b), Size: int64(len(b))}
}

// manifestOf builds an OCI image manifest of a fresh config and layers.
func manifestOf(t *testing.T, f *fixture, name string, layers [][]byte, subject *manifest.Descriptor) (manifest.Manifest, []byte) {
	t.Helper()
	cfg := f.blob(t, []byte(`{"name":"`+name+`"}`), "application/vnd.oci.image.config.v1+json")
	m := manifest.Manifest{SchemaVersion: 2, MediaType: manifest.OCIManifest, Config: &cfg, Subject: subject}
	for _, l := range layers {
		m.Layers = append(m.Layers, f.blob(t, l, "application/vnd.oci.image.layer.v1.tar"))
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	f.blob(t, body, manifest.OCIManifest)
	return m, body
}

// cache writes an image as a fill would: blobs linked, manifest linked,
// tag pointed, all at time at.
func (f *fixture) cache(t *testing.T, repo, tag string, layers [][]byte, at time.Time) img {
	t.Helper()
	ctx := t.Context()
	m, body := manifestOf(t, f, repo+":"+tag, layers, nil)
	i := img{repo: repo, tag: tag, digest: digestOf(body), config: m.Config.Digest, body: body}
	for _, d := range m.Blobs() {
		if err := f.meta.Link(ctx, repo, storage.Link{Digest: d.Digest, Size: d.Size, LinkedAt: at}, nil); err != nil {
			t.Fatal(err)
		}
		if d.Digest != i.config {
			i.layers = append(i.layers, d.Digest)
		}
	}
	l := storage.Link{Digest: i.digest, MediaType: manifest.OCIManifest, Size: int64(len(body)), LinkedAt: at}
	if err := f.meta.Link(ctx, repo, l, &storage.Tag{Name: tag, FetchedAt: at}); err != nil {
		t.Fatal(err)
	}
	return i
}

// layer returns n bytes unique to name.
func layer(name string, n int) []byte {
	b := bytes.Repeat([]byte(name+" "), n/(len(name)+1)+1)
	return b[:n]
}

func (f *fixture) stored(t *testing.T, d string) bool {
	t.Helper()
	_, err := f.blobs.Stat(t.Context(), d)
	return err == nil
}

func (f *fixture) linked(t *testing.T, repo, d string) bool {
	t.Helper()
	_, err := f.meta.Linked(t.Context(), repo, d)
	return err == nil
}

func (f *fixture) tagged(t *testing.T, repo, tag string) bool {
	t.Helper()
	_, err := f.meta.Tag(t.Context(), repo, tag)
	return err == nil
}

func (f *fixture) usage(t *testing.T) int64 {
	t.Helper()
	u, err := f.blobs.WaitUsage(t.Context())
	n := u.Bytes
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pushLocal pushes an image into a local repository the way clients do.
func (f *fixture) pushLocal(t *testing.T, repo, tag string, layers [][]byte) string {
	t.Helper()
	ctx := t.Context()
	cfg := []byte(`{"local":"` + repo + `"}`)
	m := manifest.Manifest{SchemaVersion: 2, MediaType: manifest.OCIManifest,
		Config: &manifest.Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digestOf(cfg), Size: int64(len(cfg))}}
	for _, b := range append([][]byte{cfg}, layers...) {
		if err := f.repos.PutBlob(ctx, repo, digestOf(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, manifest.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: digestOf(l), Size: int64(len(l))})
	}
	body, _ := json.Marshal(m)
	p, err := f.repos.PutManifest(ctx, repo, tag, manifest.OCIManifest, body)
	if err != nil {
		t.Fatal(err)
	}
	return p.Digest
}

// TestEvictLeastRecentlyUsed: over its maximum size, the store evicts the
// least recently used images of cached repositories, whole (tag, links,
// manifest, config, unique layers), until it is under the low-water mark;
// the oldest image pulled again stays, a layer shared with an image that
// stays stays, and a local repository is untouched, also the layer it
// shares with an evicted image.
func TestEvictLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	const layerSize = 10000
	base := layer("base", layerSize)
	localShared := layer("local-shared", layerSize)
	pending := layer("pending", 100)
	f := newFixture(t, Options{})
	ctx := t.Context()
	var imgs []img
	for i := range 5 {
		layers := [][]byte{base, layer(fmt.Sprintf("unique-%d", i), layerSize)}
		switch i {
		case 1:
			layers = append(layers, localShared)
		case 2:
			layers = append(layers, pending)
		}
		imgs = append(imgs, f.cache(t, fmt.Sprintf("hub/app%d", i), "v1", layers, f.now.Add(time.Duration(i)*time.Minute)))
	}
	localDigest := f.pushLocal(t, "lab/tool", "v1", [][]byte{localShared, layer("local-only", layerSize)})
	// A blob pushed to a local repository whose manifest has not come yet,
	// the same bytes as a layer of an evicted image.
	if err := f.repos.PutBlob(ctx, "lab/pending", digestOf(pending), -1, bytes.NewReader(pending)); err != nil {
		t.Fatal(err)
	}
	// The oldest image is pulled again: its manifest was served now.
	f.now = f.now.Add(time.Hour)
	if err := f.meta.TouchBlobs(ctx, map[string]time.Time{imgs[0].digest: f.now}); err != nil {
		t.Fatal(err)
	}
	// Room for about four images' unique layers: two must go.
	before := f.usage(t)
	f.ev.opts.MaxSize = before - layerSize
	f.ev.opts.LowWater = float64(before-2*layerSize) / float64(f.ev.opts.MaxSize)

	rep, err := f.ev.Evict(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var gone []string
	for _, i := range rep.Images {
		gone = append(gone, i.Repository)
		if i.Reason != ReasonSize {
			t.Errorf("%s evicted for %q, want %q", i.Repository, i.Reason, ReasonSize)
		}
	}
	if want := []string{"hub/app1", "hub/app2"}; !slices.Equal(gone, want) {
		t.Fatalf("evicted %v, want %v (least recently used first; app0 was pulled again)", gone, want)
	}
	for _, i := range imgs[1:3] {
		if f.tagged(t, i.repo, i.tag) || f.linked(t, i.repo, i.digest) || f.linked(t, i.repo, i.config) {
			t.Errorf("%s: tag or links left behind", i.repo)
		}
		if f.stored(t, i.digest) || f.stored(t, i.config) || f.stored(t, i.layers[1]) {
			t.Errorf("%s: manifest, config or unique layer still stored", i.repo)
		}
	}
	for _, i := range []img{imgs[0], imgs[3], imgs[4]} {
		if !f.tagged(t, i.repo, i.tag) || !f.stored(t, i.digest) || !f.stored(t, i.layers[1]) {
			t.Errorf("%s was not kept whole", i.repo)
		}
	}
	if !f.stored(t, digestOf(base)) || !f.linked(t, "hub/app0", digestOf(base)) {
		t.Error("the base layer shared with kept images went")
	}
	if !f.stored(t, digestOf(localShared)) || !f.stored(t, localDigest) || !f.linked(t, "lab/tool", digestOf(localShared)) {
		t.Error("the local repository lost content (its layer shared with an evicted image)")
	}
	if f.linked(t, "hub/app1", digestOf(localShared)) {
		t.Error("the evicted image's link to the layer shared with the local repository is left")
	}
	if !f.stored(t, digestOf(pending)) || !f.linked(t, "lab/pending", digestOf(pending)) {
		t.Error("a blob pushed to a local repository (no manifest yet) went with an evicted image")
	}
	if after := f.usage(t); after > f.ev.LowWaterBytes() || rep.Bytes != before-after {
		t.Errorf("store holds %d bytes after the run (freed %d, report says %d), want at most the low-water mark %d", after, before-after, rep.Bytes, f.ev.LowWaterBytes())
	}
	if f.ev.EvictedImages() != 2 || f.ev.EvictedBytes() != rep.Bytes || f.ev.Runs() != 1 {
		t.Errorf("counters: %d images, %d bytes, %d runs", f.ev.EvictedImages(), f.ev.EvictedBytes(), f.ev.Runs())
	}
	// Under the limit now: another run evicts nothing.
	if rep, err := f.ev.Evict(ctx, false); err != nil || len(rep.Images) != 0 {
		t.Fatalf("second run: %+v, %v", rep, err)
	}
}

// TestEvictUnusedAfter: images nobody used for UnusedAfter go, whatever
// the size; local repositories never do.
func TestEvictUnusedAfter(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{UnusedAfter: 30 * 24 * time.Hour})
	old := f.cache(t, "hub/old", "v1", [][]byte{layer("old", 100)}, f.now)
	used := f.cache(t, "hub/used", "v1", [][]byte{layer("used", 100)}, f.now)
	localDigest := f.pushLocal(t, "lab/old", "v1", [][]byte{layer("lab", 100)})
	f.now = f.now.Add(40 * 24 * time.Hour)
	if err := f.meta.TouchBlobs(t.Context(), map[string]time.Time{used.digest: f.now.Add(-24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	rep, err := f.ev.Evict(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images) != 1 || rep.Images[0].Repository != "hub/old" || rep.Images[0].Reason != ReasonUnused || rep.Images[0].Tags[0] != "v1" {
		t.Fatalf("evicted %+v, want hub/old:v1 as unused", rep.Images)
	}
	if f.stored(t, old.digest) || !f.stored(t, used.digest) || !f.stored(t, localDigest) {
		t.Fatal("wrong content removed")
	}
}

// TestEvictDryRun reports what would go and removes nothing.
func TestEvictDryRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{UnusedAfter: time.Hour})
	i := f.cache(t, "hub/old", "v1", [][]byte{layer("old", 1000)}, f.now)
	f.now = f.now.Add(2 * time.Hour)
	rep, err := f.ev.Evict(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.DryRun || len(rep.Images) != 1 || rep.Bytes != rep.Images[0].Bytes || rep.Bytes < 1000 {
		t.Fatalf("dry run = %+v, want hub/old with its bytes", rep)
	}
	if !f.stored(t, i.digest) || !f.tagged(t, i.repo, i.tag) {
		t.Fatal("a dry run removed content")
	}
	if f.ev.Runs() != 0 || f.ev.EvictedImages() != 0 {
		t.Fatal("a dry run counted as a run")
	}
}

// TestEvictIndexWithReferrers: an index, its children, a signature whose
// subject is the index with the referrers tag schema's index listing it,
// and an SBOM found through the referrers API only go together, as one
// image.
func TestEvictIndexWithReferrers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{UnusedAfter: time.Hour})
	repo := "hub/multi"
	at := f.now
	link := func(body []byte, mt string, tag string) string {
		t.Helper()
		d := f.blob(t, body, mt)
		var tg *storage.Tag
		if tag != "" {
			tg = &storage.Tag{Name: tag, FetchedAt: at}
		}
		if err := f.meta.Link(ctx, repo, storage.Link{Digest: d.Digest, MediaType: mt, Size: d.Size, LinkedAt: at}, tg); err != nil {
			t.Fatal(err)
		}
		return d.Digest
	}
	var children []manifest.Descriptor
	var all []string
	for _, arch := range []string{"amd64", "arm64"} {
		m, body := manifestOf(t, f, arch, [][]byte{layer(arch, 500)}, nil)
		for _, b := range m.Blobs() {
			f.meta.Link(ctx, repo, storage.Link{Digest: b.Digest, Size: b.Size, LinkedAt: at}, nil)
			all = append(all, b.Digest)
		}
		d := link(body, manifest.OCIManifest, "")
		children = append(children, manifest.Descriptor{MediaType: manifest.OCIManifest, Digest: d, Size: int64(len(body)), Platform: &manifest.Platform{OS: "linux", Architecture: arch}})
		all = append(all, d)
	}
	idx, _ := json.Marshal(manifest.Manifest{SchemaVersion: 2, MediaType: manifest.OCIIndex, Manifests: children})
	idxDigest := link(idx, manifest.OCIIndex, "v1")
	subject := manifest.Descriptor{MediaType: manifest.OCIIndex, Digest: idxDigest, Size: int64(len(idx))}
	sig, sigBody := manifestOf(t, f, "sig", [][]byte{layer("signature", 50)}, &subject)
	for _, b := range sig.Blobs() {
		f.meta.Link(ctx, repo, storage.Link{Digest: b.Digest, Size: b.Size, LinkedAt: at}, nil)
		all = append(all, b.Digest)
	}
	sigDigest := link(sigBody, manifest.OCIManifest, "")
	schema, _ := json.Marshal(manifest.Manifest{SchemaVersion: 2, MediaType: manifest.OCIIndex,
		Manifests: []manifest.Descriptor{{MediaType: manifest.OCIManifest, Digest: sigDigest, Size: int64(len(sigBody))}}})
	schemaDigest := link(schema, manifest.OCIIndex, strings.Replace(idxDigest, ":", "-", 1))
	// A referrer listed by the referrers API only, not in the tag schema.
	sbom, sbomBody := manifestOf(t, f, "sbom", [][]byte{layer("sbom", 60)}, &subject)
	for _, b := range sbom.Blobs() {
		f.meta.Link(ctx, repo, storage.Link{Digest: b.Digest, Size: b.Size, LinkedAt: at}, nil)
		all = append(all, b.Digest)
	}
	sbomDigest := link(sbomBody, manifest.OCIManifest, "")
	all = append(all, idxDigest, sigDigest, schemaDigest, sbomDigest)

	f.now = f.now.Add(2 * time.Hour)
	rep, err := f.ev.Evict(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images) != 1 || rep.Images[0].Digest != idxDigest || rep.Images[0].Manifests != 6 || len(rep.Images[0].Tags) != 2 {
		t.Fatalf("plan = %+v, want one image rooted at the index %s with 6 manifests and 2 tags", rep.Images, idxDigest)
	}
	if _, err := f.ev.Evict(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		if f.stored(t, d) || f.linked(t, repo, d) {
			t.Errorf("%s left behind", d)
		}
	}
}

// guardHook runs before each sweep of a run (an operation of another
// package protecting a digest, as a fill or a revalidation does).
type guardHook struct {
	repos  *local.Repos
	before func()
}

func (g guardHook) Collect(ctx context.Context, fn func(context.Context, func([]string, func([]string) error) error) error) error {
	return g.repos.Collect(ctx, func(ctx context.Context, sweep local.Sweep) error {
		return fn(ctx, func(c []string, remove func([]string) error) error {
			g.before()
			return sweep(c, remove)
		})
	})
}

// TestEvictKeepsWhatIsLinkedDuringTheRun: an image whose manifest an
// operation protected after the run began (a revalidation relinking it, a
// fill) is kept whole; a blob protected is kept with its links, while the
// rest of an image that goes goes.
func TestEvictKeepsWhatIsLinkedDuringTheRun(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{UnusedAfter: time.Hour})
	relinked := f.cache(t, "hub/relinked", "v1", [][]byte{layer("relinked", 100)}, f.now)
	other := f.cache(t, "hub/other", "v1", [][]byte{layer("filled", 100), layer("other", 100)}, f.now)
	f.now = f.now.Add(2 * time.Hour)
	f.ev.guard = guardHook{repos: f.repos, before: func() {
		f.repos.Protect(relinked.digest, other.layers[0])()
	}}
	rep, err := f.ev.Evict(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images) != 1 || rep.Images[0].Repository != "hub/other" || rep.Kept != 1 {
		t.Fatalf("report %+v: want hub/other evicted and hub/relinked kept", rep)
	}
	if !f.tagged(t, "hub/relinked", "v1") || !f.stored(t, relinked.digest) || !f.stored(t, relinked.layers[0]) || !f.linked(t, "hub/relinked", relinked.layers[0]) {
		t.Error("the image relinked during the run was not kept whole")
	}
	if !f.stored(t, other.layers[0]) || !f.linked(t, "hub/other", other.layers[0]) {
		t.Error("the blob linked during the run went")
	}
	if f.stored(t, other.layers[1]) || f.stored(t, other.digest) {
		t.Error("the rest of the evicted image stayed")
	}
}

// linkCheck checks, before each blob removal, that no repository links
// the blob any more.
type linkCheck struct {
	Blobs
	t    *testing.T
	meta *storage.Meta
}

func (c linkCheck) Remove(ctx context.Context, digest string) error {
	links, _, err := c.meta.Contents(ctx)
	if err != nil {
		c.t.Error(err)
	}
	for _, l := range links {
		if l.Digest == digest {
			c.t.Errorf("blob %s removed while %s still links it", digest, l.Repo)
		}
	}
	return c.Blobs.Remove(ctx, digest)
}

// TestEvictUnlinksBeforeRemoving: when a blob's bytes go, no repository
// links it any more.
func TestEvictUnlinksBeforeRemoving(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{UnusedAfter: time.Hour})
	f.cache(t, "hub/old", "v1", [][]byte{layer("old", 100)}, f.now)
	f.now = f.now.Add(2 * time.Hour)
	f.ev.blobs = linkCheck{Blobs: f.blobs, t: t, meta: f.meta}
	if rep, err := f.ev.Evict(t.Context(), false); err != nil || rep.Blobs != 3 {
		t.Fatalf("run: %+v, %v; want 3 blobs removed", rep, err)
	}
}

// TestRunEvictsWhenOverTheLimit: the background loop evicts when the
// store goes over its maximum size: at once, woken by the commit that
// crossed it; and, where the store cannot signal that, within a check
// interval.
func TestRunEvictsWhenOverTheLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		interval time.Duration
		signal   bool // the store signals the crossing commit
		after    time.Duration
	}{
		{"on the crossing commit", time.Hour, true, 0},
		{"within a check interval", time.Second, false, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, Options{MaxSize: 2500, LowWater: 0.5, CheckInterval: tc.interval, Now: time.Now})
				if !tc.signal {
					f.ev.blobs = struct{ Blobs }{f.blobs} // no NotifyOver
				}
				old := f.cache(t, "hub/old", "v1", [][]byte{layer("old", 1000)}, time.Now())
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() {
					f.ev.Run(ctx)
					close(done)
				}()
				time.Sleep(5 * time.Second)
				synctest.Wait()
				if f.ev.Runs() != 0 {
					t.Fatalf("%d runs under the limit", f.ev.Runs())
				}
				f.cache(t, "hub/new", "v1", [][]byte{layer("new", 1000)}, time.Now())
				time.Sleep(tc.after)
				synctest.Wait()
				if f.ev.Runs() != 1 || f.stored(t, old.digest) {
					t.Fatalf("%v after going over the limit: %d runs, old image stored %v", tc.after, f.ev.Runs(), f.stored(t, old.digest))
				}
				cancel()
				<-done
			})
		})
	}
}

// TestNewRefusesBadBounds: bounds that make no sense are refused, naming
// the value.
func TestNewRefusesBadBounds(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{{MaxSize: -1}, {UnusedAfter: -time.Second}, {MaxSize: 10, LowWater: 1.5}} {
		if _, err := New(nil, nil, nil, nil, nil, nil, o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	if errors.Is(errStopped, context.Canceled) {
		t.Fatal("errStopped must not be context.Canceled")
	}
}

// TestSharedStoreEviction: replicas sharing one store (and its metadata)
// evict one at a time, and the one that runs counts the whole store, also
// what the other replicas committed, which its own running count misses.
func TestSharedStoreEviction(t *testing.T) {
	t.Parallel()
	const layerSize = 10000
	f := newFixture(t, Options{})
	ctx := t.Context()
	old := f.cache(t, "hub/old", "v1", [][]byte{layer("old", layerSize)}, f.now)
	counted := f.usage(t) // from now on this count follows this replica's own commits only

	// Another replica commits an image to the same store.
	other, err := storage.OpenBlobs(filepath.Join(f.dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	mine := f.blobs
	f.blobs = other
	f.now = f.now.Add(time.Minute)
	recent := f.cache(t, "hub/new", "v1", [][]byte{layer("new", layerSize)}, f.now)
	f.blobs = mine
	if f.usage(t) != counted {
		t.Fatal("this replica's count saw the other replica's commit: the test proves nothing")
	}
	// Over the bound only with both images counted; evicting the old one
	// brings the store under the low-water mark.
	f.ev.opts.MaxSize = counted + layerSize/2
	f.ev.opts.LowWater = float64(counted+layerSize/10) / float64(f.ev.opts.MaxSize)

	rep, err := f.ev.Evict(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images) != 0 || rep.StoredBytes != counted {
		t.Fatalf("alone, the run counted %d bytes and evicted %+v; want its own count %d and nothing", rep.StoredBytes, rep.Images, counted)
	}

	var held sync.Mutex
	f.ev.opts.Lock = func(context.Context) (func(), bool, error) {
		if !held.TryLock() {
			return nil, false, nil
		}
		return held.Unlock, true, nil
	}
	held.Lock() // another replica runs
	rep, err = f.ev.Evict(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Note != NoteBusy || len(rep.Images) != 0 || !f.stored(t, old.digest) {
		t.Fatalf("while another replica holds the lock: note %q, evicted %+v, old image stored %v; want a skipped run",
			rep.Note, rep.Images, f.stored(t, old.digest))
	}
	held.Unlock()

	rep, err = f.ev.Evict(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.StoredBytes <= f.ev.opts.MaxSize {
		t.Errorf("the shared run counted %d bytes, want the whole store (over %d)", rep.StoredBytes, f.ev.opts.MaxSize)
	}
	if len(rep.Images) != 1 || rep.Images[0].Repository != "hub/old" || f.stored(t, old.digest) || !f.stored(t, recent.digest) {
		t.Errorf("the shared run evicted %+v (old stored %v, new stored %v); want hub/old only", rep.Images, f.stored(t, old.digest), f.stored(t, recent.digest))
	}
	if !held.TryLock() {
		t.Error("the run did not release the lock")
	}
}

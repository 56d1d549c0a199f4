package local

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
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// rules is a fixed set of cached repositories (repo -> rule, source).
type rules map[string][2]string

func (r rules) Covering(repo string) (string, string, bool) {
	v, ok := r[repo]
	return v[0], v[1], ok
}

// clock is an injected clock the test moves.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

type fixture struct {
	repos *Repos
	blobs *storage.Blobs
	meta  *storage.Meta
	clock *clock
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
	c := &clock{t: time.Now()}
	opts.Now = c.now
	r := New(blobs, meta, sessions, rules{"hub/app": {"HubLibrary", "docker.io/library/app"}}, log, opts)
	return &fixture{repos: r, blobs: blobs, meta: meta, clock: c}
}

// image is an OCI image manifest and its blobs.
type image struct {
	config, layer []byte
	body          []byte
	digest        string
}

func newImage(t *testing.T, name string, shared []byte, subject *manifest.Descriptor) image {
	t.Helper()
	img := image{config: []byte(`{"name":"` + name + `"}`), layer: shared}
	if img.layer == nil {
		img.layer = []byte("layer of " + name)
	}
	m := manifest.Manifest{
		SchemaVersion: 2, MediaType: manifest.OCIManifest,
		Config:  &manifest.Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digestOf(img.config), Size: int64(len(img.config))},
		Layers:  []manifest.Descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: digestOf(img.layer), Size: int64(len(img.layer))}},
		Subject: subject,
	}
	if subject != nil {
		m.ArtifactType = "application/x-signature"
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	img.body, img.digest = body, digestOf(body)
	return img
}

func (f *fixture) push(t *testing.T, repo, tag string, img image) Pushed {
	t.Helper()
	ctx := t.Context()
	if err := f.repos.PutBlob(ctx, repo, digestOf(img.config), int64(len(img.config)), bytes.NewReader(img.config)); err != nil {
		t.Fatal(err)
	}
	// The layer through a session, in two chunks.
	id, err := f.repos.StartUpload(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	half := int64(len(img.layer) / 2)
	if _, err := f.repos.WriteUpload(ctx, repo, id, 0, half, bytes.NewReader(img.layer[:half])); err != nil {
		t.Fatal(err)
	}
	if err := f.repos.FinishUpload(ctx, repo, id, digestOf(img.layer), half, int64(len(img.layer))-half, bytes.NewReader(img.layer[half:])); err != nil {
		t.Fatal(err)
	}
	p, err := f.repos.PutManifest(ctx, repo, tag, manifest.OCIManifest, img.body)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) blobCount(t *testing.T) int {
	t.Helper()
	n := 0
	f.blobs.Walk(t.Context(), func(storage.BlobInfo) error { n++; return nil })
	return n
}

func TestPushManifest(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{})
	img := newImage(t, "app", nil, nil)
	p := f.push(t, "lab/app", "v1", img)
	if p.Digest != img.digest || p.Subject != "" {
		t.Fatalf("pushed %+v, want digest %s", p, img.digest)
	}
	if tag, err := f.meta.Tag(ctx, "lab/app", "v1"); err != nil || tag.Digest != img.digest {
		t.Fatalf("tag v1: %+v, %v", tag, err)
	}
	if l, err := f.meta.Linked(ctx, "lab/app", img.digest); err != nil || l.MediaType != manifest.OCIManifest {
		t.Fatalf("manifest link: %+v, %v", l, err)
	}

	// A referrer: the OCI-Subject is answered and the index records it.
	sig := newImage(t, "sig", []byte("signature bytes"), &manifest.Descriptor{MediaType: manifest.OCIManifest, Digest: img.digest, Size: int64(len(img.body))})
	if p := f.push(t, "lab/app", sig.digest, sig); p.Subject != img.digest {
		t.Fatalf("referrer pushed %+v, want subject %s", p, img.digest)
	}
	refs, _, err := f.meta.Referrers(ctx, "lab/app", img.digest)
	if err != nil || len(refs) != 1 || refs[0].Digest != sig.digest || refs[0].ArtifactType != "application/x-signature" {
		t.Fatalf("referrers: %+v, %v", refs, err)
	}

	other := newImage(t, "other", nil, nil)
	big := append([]byte(`{"schemaVersion":2,"annotations":{"x":"`), bytes.Repeat([]byte("a"), manifest.MaxSize)...)
	for _, tc := range []struct {
		name, ref, contentType string
		body                   []byte
		want                   error
		msg                    string
	}{
		{"blobs not pushed", "v2", manifest.OCIManifest, other.body, ErrManifestBlobUnknown, "is not in repository lab/app; upload or mount it first"},
		{"blobs of another repository", "v2", manifest.OCIManifest, img.body, ErrManifestBlobUnknown, "lab/elsewhere"},
		{"digest mismatch", other.digest, manifest.OCIManifest, img.body, ErrDigestInvalid, "the body hashes to " + img.digest},
		{"not a manifest", "v2", manifest.OCIManifest, []byte("blablabla"), ErrManifestInvalid, "not a JSON manifest"},
		{"too large", "v2", manifest.OCIManifest, big, ErrManifestTooLarge, "at most 4194304"},
		{"wrong size", "v2", manifest.OCIManifest, bytes.Replace(img.body, []byte(fmt.Sprintf(`"size":%d}]`, len(img.layer))), []byte(`"size":1}]`), 1), ErrManifestInvalid, "layers[0].size is 1"},
		{"child manifest missing", "v2", manifest.OCIIndex, []byte(`{"schemaVersion":2,"mediaType":"` + manifest.OCIIndex + `","manifests":[{"mediaType":"` + manifest.OCIManifest + `","digest":"` + other.digest + `","size":10}]}`), ErrManifestBlobUnknown, "manifest " + other.digest + " (manifests[0])"},
	} {
		repo := "lab/app"
		if strings.Contains(tc.msg, "lab/elsewhere") {
			repo = "lab/elsewhere"
		}
		_, err := f.repos.PutManifest(ctx, repo, tc.ref, tc.contentType, tc.body)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: PutManifest = %v, want %v containing %q", tc.name, err, tc.want, tc.msg)
		}
	}
	// An index of pushed manifests is accepted.
	idx := []byte(`{"schemaVersion":2,"mediaType":"` + manifest.OCIIndex + `","manifests":[{"mediaType":"` + manifest.OCIManifest + `","digest":"` + img.digest + `","size":` + fmt.Sprint(len(img.body)) + `,"platform":{"architecture":"amd64","os":"linux"}}]}`)
	if _, err := f.repos.PutManifest(ctx, "lab/app", "multi", manifest.OCIIndex, idx); err != nil {
		t.Fatalf("index: %v", err)
	}
}

// A push into a repository a cache rule covers is refused, naming the rule
// and its source, and changes nothing.
func TestPushIntoCacheDenied(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{})
	f.push(t, "lab/app", "v1", newImage(t, "app", nil, nil))
	img := newImage(t, "cached", nil, nil)
	before := f.blobCount(t)
	repos, _ := f.repos.Repositories(ctx, "", -1)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), `rule "HubLibrary"`) || !strings.Contains(err.Error(), "docker.io/library/app") {
			t.Errorf("%s: %v, want ErrDenied naming the rule and its source", what, err)
		}
	}
	_, err := f.repos.StartUpload(ctx, "hub/app")
	check("start upload", err)
	check("monolithic", f.repos.PutBlob(ctx, "hub/app", digestOf(img.config), -1, bytes.NewReader(img.config)))
	_, err = f.repos.Mount(ctx, "hub/app", "lab/app", digestOf(newImage(t, "app", nil, nil).config))
	check("mount", err)
	_, err = f.repos.PutManifest(ctx, "hub/app", "v1", manifest.OCIManifest, img.body)
	check("manifest", err)
	check("delete tag", f.repos.DeleteTag(ctx, "hub/app", "v1"))
	if got := f.blobCount(t); got != before {
		t.Errorf("the store holds %d blobs, %d before the refused pushes", got, before)
	}
	if after, _ := f.repos.Repositories(ctx, "", -1); fmt.Sprint(after) != fmt.Sprint(repos) {
		t.Errorf("repositories %v, %v before", after, repos)
	}
	if ups, _ := f.blobs.Uploads(ctx); len(ups) != 0 {
		t.Errorf("upload sessions were created: %+v", ups)
	}
}

func TestMount(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{})
	img := newImage(t, "app", nil, nil)
	f.push(t, "lab/src", "v1", img)
	layer := digestOf(img.layer)
	if ok, err := f.repos.Mount(ctx, "lab/dst", "lab/src", layer); err != nil || !ok {
		t.Fatalf("mount a linked blob: %v, %v", ok, err)
	}
	if _, err := f.meta.Linked(ctx, "lab/dst", layer); err != nil {
		t.Fatalf("mounted blob not linked: %v", err)
	}
	// The source must have it: a blob stored for another repository is
	// not mountable from one that never had it.
	if ok, err := f.repos.Mount(ctx, "lab/dst2", "lab/nothing", layer); err != nil || ok {
		t.Fatalf("mount from a repository without the blob: %v, %v", ok, err)
	}
	if _, err := f.meta.Linked(ctx, "lab/dst2", layer); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a refused mount linked the blob: %v", err)
	}
}

func TestDeletes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{})
	img := newImage(t, "app", nil, nil)
	f.push(t, "lab/app", "v1", img)
	f.push(t, "lab/app", "v2", img)
	if err := f.repos.DeleteTag(ctx, "lab/app", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := f.repos.DeleteTag(ctx, "lab/app", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("second tag delete: %v", err)
	}
	if err := f.repos.DeleteBlob(ctx, "lab/app", img.digest); !errors.Is(err, ErrBlobUnknown) || !strings.Contains(err.Error(), "is a manifest") {
		t.Fatalf("delete a manifest as a blob: %v", err)
	}
	if err := f.repos.DeleteManifest(ctx, "lab/app", img.digest); err != nil {
		t.Fatal(err)
	}
	if tags, _ := f.meta.Tags(ctx, "lab/app"); len(tags) != 0 {
		t.Fatalf("tags of a deleted manifest remain: %v", tags)
	}
	if err := f.repos.DeleteManifest(ctx, "lab/app", img.digest); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("second manifest delete: %v", err)
	}
	if err := f.repos.DeleteBlob(ctx, "lab/app", digestOf(img.layer)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.meta.Linked(ctx, "lab/app", digestOf(img.layer)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleted blob still linked: %v", err)
	}

	off := newFixture(t, Options{Deletes: &Deletes{Tags: true}})
	off.push(t, "lab/app", "v1", img)
	if err := off.repos.DeleteManifest(ctx, "lab/app", img.digest); !errors.Is(err, ErrDeleteDisabled) {
		t.Fatalf("manifest delete turned off: %v", err)
	}
	if err := off.repos.DeleteBlob(ctx, "lab/app", digestOf(img.layer)); !errors.Is(err, ErrDeleteDisabled) {
		t.Fatalf("blob delete turned off: %v", err)
	}
	if err := off.repos.DeleteTag(ctx, "lab/app", "v1"); err != nil {
		t.Fatalf("tag delete allowed: %v", err)
	}
}

func exists(t *testing.T, f *fixture, digest string) bool {
	t.Helper()
	_, err := f.blobs.Stat(context.Background(), digest)
	return err == nil
}

func TestGarbageCollection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{Grace: time.Hour})
	shared := []byte("shared base layer")
	a := newImage(t, "a", shared, nil)
	b := newImage(t, "b", shared, nil)
	f.push(t, "lab/a", "v1", a)
	f.push(t, "lab/b", "v1", b)
	// A blob linked to a cached repository, referenced by nothing.
	cached := []byte("cached layer")
	if err := f.blobs.Put(ctx, digestOf(cached), int64(len(cached)), bytes.NewReader(cached)); err != nil {
		t.Fatal(err)
	}
	f.meta.Link(ctx, "hub/app", storage.Link{Digest: digestOf(cached), Size: int64(len(cached)), LinkedAt: f.clock.t}, nil)
	if err := f.repos.DeleteManifest(ctx, "lab/a", a.digest); err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing goes.
	if rep, err := f.repos.CollectGarbage(ctx); err != nil || rep.Deleted != 0 {
		t.Fatalf("collection within the grace period: %+v, %v", rep, err)
	}
	// A fresh blob pushed now is young when the others have aged.
	f.clock.t = f.clock.t.Add(2 * time.Hour)
	young := []byte("young")
	f.repos.PutBlob(ctx, "lab/a", digestOf(young), -1, bytes.NewReader(young))
	rep, err := f.repos.CollectGarbage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what   string
		digest string
		want   bool
	}{
		{"deleted manifest", a.digest, false},
		{"its own config", digestOf(a.config), false},
		{"the layer b still uses", digestOf(shared), true},
		{"b's manifest", b.digest, true},
		{"b's config", digestOf(b.config), true},
		{"the cached repository's blob", digestOf(cached), true},
		{"a young unreferenced blob", digestOf(young), true},
	} {
		if got := exists(t, f, tc.digest); got != tc.want {
			t.Errorf("%s (%s): present %v, want %v", tc.what, tc.digest, got, tc.want)
		}
	}
	if rep.Deleted != 2 {
		t.Errorf("report %+v: want 2 deleted", rep)
	}
	if _, err := f.meta.Linked(ctx, "lab/a", digestOf(a.config)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the link of a collected blob remains: %v", err)
	}
}

// gatedReads holds a mount inside its protected section until released.
type gatedReads struct {
	entered, release chan struct{}
	links            Links
}

func (g gatedReads) MayRead(ctx context.Context, repo, digest string) (bool, error) {
	close(g.entered)
	<-g.release
	return linkedPolicy{g.links}.MayRead(ctx, repo, digest)
}

// A collection running while a mount is between its check and its link
// must not delete the blob: it is in use.
func TestGarbageCollectionSparesBlobInUse(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	g := gatedReads{entered: make(chan struct{}), release: make(chan struct{})}
	f := newFixture(t, Options{Grace: time.Minute, Reads: &g})
	g.links = f.meta
	blob := []byte("orphan layer")
	if err := f.repos.PutBlob(ctx, "lab/src", digestOf(blob), -1, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	f.clock.t = f.clock.t.Add(time.Hour) // old and referenced by no manifest
	mounted := make(chan error, 1)
	go func() {
		ok, err := f.repos.Mount(ctx, "lab/dst", "lab/src", digestOf(blob))
		if err == nil && !ok {
			err = errors.New("mount refused")
		}
		mounted <- err
	}()
	<-g.entered
	if rep, err := f.repos.CollectGarbage(ctx); err != nil || rep.Deleted != 0 {
		t.Fatalf("collection during a mount: %+v, %v", rep, err)
	}
	close(g.release)
	if err := <-mounted; err != nil {
		t.Fatal(err)
	}
	if !exists(t, f, digestOf(blob)) {
		t.Fatal("the mounted blob was collected")
	}
}

// An operation that protects, links and releases a blob after the
// collection's snapshot (so the snapshot misses the new link) must still
// keep it: the digest was touched.
func TestGarbageCollectionSparesBlobTouchedDuringRun(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, Options{Grace: time.Minute})
	blob := []byte("orphan layer")
	if err := f.repos.PutBlob(ctx, "lab/src", digestOf(blob), -1, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	f.clock.t = f.clock.t.Add(time.Hour)
	img := newImage(t, "app", blob, nil)
	f.repos.afterMark = func() {
		// A whole push completes between the snapshot and the sweep: the
		// config uploaded, the old layer mounted, the manifest pushed.
		if err := f.repos.PutBlob(ctx, "lab/dst", digestOf(img.config), -1, bytes.NewReader(img.config)); err != nil {
			t.Error(err)
		}
		if ok, err := f.repos.Mount(ctx, "lab/dst", "lab/src", digestOf(blob)); !ok || err != nil {
			t.Errorf("mount: %v, %v", ok, err)
		}
		if _, err := f.repos.PutManifest(ctx, "lab/dst", "v1", manifest.OCIManifest, img.body); err != nil {
			t.Error(err)
		}
	}
	if _, err := f.repos.CollectGarbage(ctx); err != nil {
		t.Fatal(err)
	}
	f.repos.afterMark = nil
	if !exists(t, f, digestOf(blob)) {
		t.Fatal("a blob linked during the collection was deleted")
	}
	if _, err := f.meta.Linked(ctx, "lab/dst", digestOf(blob)); err != nil {
		t.Fatalf("its new link was removed: %v", err)
	}
}

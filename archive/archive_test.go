package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/goleak"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// instance is one regcache's store, puller and local repositories.
type instance struct {
	dir    string
	blobs  *storage.Blobs
	meta   *storage.Meta
	repos  *local.Repos
	puller *cache.Puller
	rules  *cache.Store
	imp    *Importer
	exp    *Exporter
}

func newInstance(t *testing.T, upstream string) *instance {
	t.Helper()
	in := &instance{dir: t.TempDir()}
	var err error
	if in.blobs, err = storage.OpenBlobs(filepath.Join(in.dir, "blobs")); err != nil {
		t.Fatal(err)
	}
	if in.meta, err = storage.OpenMeta(filepath.Join(in.dir, "meta.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.meta.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rules []cache.Rule
	eps := map[string]string{}
	if upstream != "" {
		rules = []cache.Rule{{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}}
		eps["docker.io"] = upstream
	}
	if in.rules, err = cache.NewStore(t.Context(), in.meta, cache.Anonymous{}, rules, log); err != nil {
		t.Fatal(err)
	}
	endpoints, err := cache.NewEndpoints(eps)
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := uploads.New(t.Context(), in.blobs, in.meta, uploads.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	in.repos = local.New(in.blobs, in.meta, sessions, in.rules, log, local.Options{})
	in.puller = cache.NewPuller(in.rules, endpoints, cache.Anonymous{}, in.blobs, in.meta, log, cache.Options{Guard: in.repos})
	t.Cleanup(in.puller.Close)
	in.imp = NewImporter(in.blobs, in.meta, in.repos, in.rules, log)
	in.exp = NewExporter(in.puller, log)
	return in
}

// export writes an archive of refs, leaving out skip.
func (in *instance) export(t *testing.T, refs []string, skip map[string]bool) []byte {
	t.Helper()
	p, err := in.exp.Plan(t.Context(), refs, skip)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var last int64
	if err := in.exp.Write(t.Context(), p, &buf, func(n int64) { last = n }); err != nil {
		t.Fatal(err)
	}
	if last != p.Bytes {
		t.Fatalf("progress ended at %d bytes, the plan carries %d", last, p.Bytes)
	}
	return buf.Bytes()
}

// pushLocal pushes img (and returns its digest) into a local repository.
func (in *instance) pushLocal(t *testing.T, repo, tag string, img v1.Image) string {
	t.Helper()
	ctx := t.Context()
	blobs := [][]byte{}
	raw, _ := img.RawConfigFile()
	blobs = append(blobs, raw)
	layers, _ := img.Layers()
	for _, l := range layers {
		rc, _ := l.Compressed()
		b, _ := io.ReadAll(rc)
		rc.Close()
		blobs = append(blobs, b)
	}
	for _, b := range blobs {
		if err := in.repos.PutBlob(ctx, repo, digestOf(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	body, _ := img.RawManifest()
	mt, _ := img.MediaType()
	p, err := in.repos.PutManifest(ctx, repo, tag, string(mt), body)
	if err != nil {
		t.Fatal(err)
	}
	return p.Digest
}

// read returns the bytes in of repo ref serves.
func (in *instance) read(t *testing.T, repo, ref string, blob bool) []byte {
	t.Helper()
	var c cache.Content
	var err error
	if blob {
		c, err = in.puller.Blob(t.Context(), repo, ref)
	} else {
		c, err = in.puller.Manifest(t.Context(), repo, ref)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", repo, ref, err)
	}
	defer c.Body.Close()
	b, err := io.ReadAll(c.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pushUpstream(t *testing.T, upstream, ref string, v any) {
	t.Helper()
	r, err := name.ParseReference(strings.TrimPrefix(upstream, "http://")+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	switch x := v.(type) {
	case v1.Image:
		err = remote.Write(r, x)
	case v1.ImageIndex:
		err = remote.WriteIndex(r, x)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func randomIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(2000, 2)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return idx
}

// signature is an artifact manifest whose subject is the manifest d.
func signature(t *testing.T, in *instance, repo string, subject manifest.Descriptor) string {
	t.Helper()
	ctx := t.Context()
	payload := []byte("signature of " + subject.Digest)
	cfg := []byte("{}")
	for _, b := range [][]byte{payload, cfg} {
		if err := in.repos.PutBlob(ctx, repo, digestOf(b), -1, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	m := manifest.Manifest{SchemaVersion: 2, MediaType: manifest.OCIManifest, ArtifactType: "application/vnd.example.signature",
		Config:  &manifest.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digestOf(cfg), Size: 2},
		Layers:  []manifest.Descriptor{{MediaType: "application/octet-stream", Digest: digestOf(payload), Size: int64(len(payload))}},
		Subject: &subject}
	body, _ := json.Marshal(m)
	p, err := in.repos.PutManifest(ctx, repo, digestOf(body), manifest.OCIManifest, body)
	if err != nil {
		t.Fatal(err)
	}
	return p.Digest
}

// tarEntries lists the file names of an archive.
func tarEntries(t *testing.T, archive []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			out[h.Name] = b
		}
	}
}

// untar writes an archive into a directory.
func untar(t *testing.T, archive []byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range tarEntries(t, archive) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestExportImportRoundTrip: a cached image, a cached two-platform index
// and a local image with a signature are exported into one OCI layout
// (readable by go-containerregistry's layout package, as crane reads it)
// and imported into an empty registry, which serves the same bytes under
// the same tags, and the signature as a referrer.
func TestExportImportRoundTrip(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(ggcr.New(ggcr.Logger(stdlog.New(io.Discard, "", 0))))
	t.Cleanup(upstream.Close)
	img, _ := random.Image(3000, 2)
	pushUpstream(t, upstream.URL, "library/app:1", img)
	idx := randomIndex(t)
	pushUpstream(t, upstream.URL, "library/multi:1", idx)
	src := newInstance(t, upstream.URL)
	labImg, _ := random.Image(1000, 1)
	labDigest := src.pushLocal(t, "lab/tool", "v2", labImg)
	labRaw, _ := labImg.RawManifest()
	sig := signature(t, src, "lab/tool", manifest.Descriptor{MediaType: manifest.OCIManifest, Digest: labDigest, Size: int64(len(labRaw))})

	archive := src.export(t, []string{"hub/app:1", "docker.io/library/multi:1", "lab/tool:v2"}, nil)
	files := tarEntries(t, archive)
	if string(files["oci-layout"]) != layoutFile {
		t.Fatalf("oci-layout = %q", files["oci-layout"])
	}
	l, err := layout.ImageIndexFromPath(untar(t, archive))
	if err != nil {
		t.Fatalf("go-containerregistry cannot read the layout: %v", err)
	}
	im, err := l.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	imgDigest, _ := img.Digest()
	names := map[string]string{}
	for _, d := range im.Manifests {
		names[d.Annotations[AnnotationRefName]] = d.Digest.String()
	}
	want := map[string]string{"hub/app:1": imgDigest.String(), "hub/multi:1": idxDigest.String(), "lab/tool:v2": labDigest, "": sig}
	for n, d := range want {
		if names[n] != d {
			t.Errorf("index.json entry %q = %s, want %s (all: %v)", n, names[n], d, names)
		}
	}
	if i, err := l.ImageIndex(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(idxDigest.String(), "sha256:")}); err != nil {
		t.Errorf("the index is not readable from the layout: %v", err)
	} else if m, _ := i.IndexManifest(); len(m.Manifests) != 2 {
		t.Errorf("the exported index has %d platforms", len(m.Manifests))
	}

	dst := newInstance(t, "")
	rep, err := dst.imp.Import(t.Context(), bytes.NewReader(archive), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Format != FormatOCI || rep.Present != 0 || rep.Stored != len(files)-2 {
		t.Fatalf("report %+v: want every blob of the archive (%d) stored", rep, len(files)-2)
	}
	rawImg, _ := img.RawManifest()
	rawIdx, _ := idx.RawManifest()
	for _, c := range []struct {
		repo, ref string
		want      []byte
	}{{"hub/app", "1", rawImg}, {"hub/multi", "1", rawIdx}, {"lab/tool", "v2", labRaw}} {
		if got := dst.read(t, c.repo, c.ref, false); !bytes.Equal(got, c.want) {
			t.Errorf("%s:%s differs after import", c.repo, c.ref)
		}
	}
	im2, _ := idx.IndexManifest()
	for _, d := range im2.Manifests {
		child, _ := idx.Image(d.Digest)
		dst.read(t, "hub/multi", d.Digest.String(), false)
		layers, _ := child.Layers()
		for _, l := range layers {
			ld, _ := l.Digest()
			dst.read(t, "hub/multi", ld.String(), true)
		}
	}
	refs, err := dst.puller.Referrers(t.Context(), "lab/tool", labDigest)
	if err != nil || len(refs) != 1 || refs[0].Digest != sig || refs[0].ArtifactType != "application/vnd.example.signature" {
		t.Fatalf("referrers of the imported image: %+v, %v; want the signature %s", refs, err, sig)
	}
}

// TestImportRefusesDamagedArchive: one byte flipped in a layer: the
// import fails naming that blob, and stores nothing of the archive.
func TestImportRefusesDamagedArchive(t *testing.T) {
	t.Parallel()
	src := newInstance(t, "")
	img, _ := random.Image(4000, 2)
	src.pushLocal(t, "lab/app", "v1", img)
	archive := src.export(t, []string{"lab/app:v1"}, nil)
	layers, _ := img.Layers()
	victim, _ := layers[1].Digest()
	// Flip one byte in the middle of that layer's tar entry.
	files := tarEntries(t, archive)
	content := files["blobs/sha256/"+victim.Hex]
	at := bytes.Index(archive, content) + len(content)/2
	damaged := slices.Clone(archive)
	damaged[at] ^= 0xff

	dst := newInstance(t, "")
	_, err := dst.imp.Import(t.Context(), bytes.NewReader(damaged), ImportOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), victim.String()) {
		t.Fatalf("import of a damaged archive: %v, want ErrInvalid naming %s", err, victim)
	}
	u, _ := dst.blobs.WaitUsage(t.Context())
	n, blobs := u.Bytes, u.Blobs
	if blobs != 0 {
		t.Fatalf("%d blobs (%d bytes) stored from a damaged archive", blobs, n)
	}
	if repos, _ := dst.meta.Repositories(t.Context(), "", -1); len(repos) != 0 {
		t.Fatalf("repositories recorded: %v", repos)
	}
	if entries, _ := os.ReadDir(filepath.Join(dst.dir, "blobs", "tmp")); len(entries) != 0 {
		t.Fatalf("staged files left behind: %d", len(entries))
	}
	// The intact archive imports; then the damaged one is still refused,
	// although the store holds that blob now.
	if _, err := dst.imp.Import(t.Context(), bytes.NewReader(archive), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.imp.Import(t.Context(), bytes.NewReader(damaged), ImportOptions{To: "again"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), victim.String()) {
		t.Fatalf("import of a damaged archive whose blob is stored: %v, want ErrInvalid naming %s", err, victim)
	}
	if repos, _ := dst.meta.Repositories(t.Context(), "", -1); !slices.Equal(repos, []string{"lab/app"}) {
		t.Fatalf("repositories after the refused import: %v", repos)
	}
}

// TestExportRefusesDamagedBlob: a stored blob that no longer matches its
// digest stops the export, naming it.
func TestExportRefusesDamagedBlob(t *testing.T) {
	t.Parallel()
	src := newInstance(t, "")
	img, _ := random.Image(4000, 1)
	src.pushLocal(t, "lab/app", "v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	path := filepath.Join(src.dir, "blobs", "sha256", ld.Hex[:2], ld.Hex)
	b, _ := os.ReadFile(path)
	b[10] ^= 0xff
	os.WriteFile(path, b, 0o644)
	p, err := src.exp.Plan(t.Context(), []string{"lab/app:v1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = src.exp.Write(t.Context(), p, io.Discard, nil)
	if !errors.Is(err, storage.ErrDigestMismatch) || !strings.Contains(err.Error(), ld.String()) {
		t.Fatalf("export of a damaged blob: %v, want a digest mismatch naming %s", err, ld)
	}
}

// TestIncrementalExport: an export that skips the receiver's inventory
// carries only the blobs the receiver lacks, and imports there.
func TestIncrementalExport(t *testing.T) {
	t.Parallel()
	src := newInstance(t, "")
	base, _ := random.Image(3000, 2)
	src.pushLocal(t, "lab/app", "v1", base)
	dst := newInstance(t, "")
	if _, err := dst.imp.Import(t.Context(), bytes.NewReader(src.export(t, []string{"lab/app:v1"}, nil)), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	extra, _ := random.Layer(2000, types.OCILayer)
	next, _ := mutate.AppendLayers(base, extra)
	src.pushLocal(t, "lab/app", "v2", next)

	var inv bytes.Buffer
	if _, err := WriteInventory(t.Context(), dst.meta, dst.blobs, &inv); err != nil {
		t.Fatal(err)
	}
	skip, err := ReadInventory(&inv)
	if err != nil {
		t.Fatal(err)
	}
	delta := src.export(t, []string{"lab/app:v1", "lab/app:v2"}, skip)
	var got []string
	for n := range tarEntries(t, delta) {
		if strings.HasPrefix(n, "blobs/") {
			got = append(got, n)
		}
	}
	cfg, _ := next.ConfigName()
	ed, _ := extra.Digest()
	nd, _ := next.Digest()
	want := []string{"blobs/sha256/" + cfg.Hex, "blobs/sha256/" + ed.Hex, "blobs/sha256/" + nd.Hex[0:]}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("incremental archive carries %v, want only what the receiver lacks: %v", got, want)
	}
	rep, err := dst.imp.Import(t.Context(), bytes.NewReader(delta), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stored != 3 {
		t.Fatalf("report %+v, want 3 blobs stored", rep)
	}
	raw, _ := next.RawManifest()
	if !bytes.Equal(dst.read(t, "lab/app", "v2", false), raw) {
		t.Fatal("lab/app:v2 differs after the incremental import")
	}
	if _, err := ReadInventory(strings.NewReader("sha256:nope\n")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a bad inventory: %v", err)
	}
}

// TestImportNames: an entry that records only a tag (skopeo's
// oci-archive:lab.tar:v1) needs --to; --to prefixes recorded names; a
// gzip-compressed archive imports.
func TestImportNames(t *testing.T) {
	t.Parallel()
	src := newInstance(t, "")
	img, _ := random.Image(500, 1)
	digest := src.pushLocal(t, "lab/app", "v1", img)
	archive := src.export(t, []string{"lab/app:v1"}, nil)
	// Rewrite index.json as skopeo writes it: ref.name is the tag only.
	tagOnly := rewriteIndex(t, archive, func(d *manifest.Descriptor) { d.Annotations = map[string]string{AnnotationRefName: "v1"} })
	dst := newInstance(t, "")
	if _, err := dst.imp.Import(t.Context(), bytes.NewReader(tagOnly), ImportOptions{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--to") {
		t.Fatalf("a tag-only archive without --to: %v", err)
	}
	rep, err := dst.imp.Import(t.Context(), bytes.NewReader(tagOnly), ImportOptions{To: "imported/app"})
	if err != nil || len(rep.Images) != 1 || rep.Images[0].Repository != "imported/app" || rep.Images[0].Tag != "v1" {
		t.Fatalf("tag-only archive with --to: %+v, %v", rep, err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(archive)
	zw.Close()
	rep, err = dst.imp.Import(t.Context(), &gz, ImportOptions{To: "mirror"})
	if err != nil || rep.Images[0].Repository != "mirror/lab/app" || rep.Images[0].Digest != digest {
		t.Fatalf("gzip archive with --to mirror: %+v, %v", rep, err)
	}
	if got := dst.read(t, "mirror/lab/app", "v1", false); digestOf(got) != digest {
		t.Fatal("mirror/lab/app:v1 differs")
	}
}

func rewriteIndex(t *testing.T, archive []byte, edit func(*manifest.Descriptor)) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		b, _ := io.ReadAll(tr)
		if h.Name == "index.json" {
			var idx struct {
				SchemaVersion int                   `json:"schemaVersion"`
				Manifests     []manifest.Descriptor `json:"manifests"`
			}
			json.Unmarshal(b, &idx)
			for i := range idx.Manifests {
				edit(&idx.Manifests[i])
			}
			b, _ = json.Marshal(idx)
			h.Size = int64(len(b))
		}
		tw.WriteHeader(h)
		tw.Write(b)
	}
	tw.Close()
	return out.Bytes()
}

// dockerSave builds an archive as docker save (Docker 20.10) writes it:
// layer directories with layer.tar (the second image's first layer a
// symlink to the first image's), <config digest>.json, manifest.json.
func dockerSave(t *testing.T, damage bool) (archive []byte, cfgDigest string, layers [][]byte) {
	t.Helper()
	layers = [][]byte{[]byte("layer one tar bytes"), []byte("layer two tar bytes")}
	var diffIDs []string
	for _, l := range layers {
		diffIDs = append(diffIDs, digestOf(l))
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cfgDigest = digestOf(cfg)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	file := func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	for i, l := range layers {
		if damage && i == 1 {
			l = append([]byte{}, l...)
			l[0] ^= 1
		}
		file(fmt.Sprintf("layer%d/layer.tar", i), l)
		file(fmt.Sprintf("layer%d/VERSION", i), []byte("1.0"))
	}
	tw.WriteHeader(&tar.Header{Name: "other/layer.tar", Linkname: "../layer0/layer.tar", Typeflag: tar.TypeSymlink})
	file(strings.TrimPrefix(cfgDigest, "sha256:")+".json", cfg)
	mj, _ := json.Marshal([]map[string]any{
		{"Config": strings.TrimPrefix(cfgDigest, "sha256:") + ".json", "RepoTags": []string{"127.0.0.1:5000/hub/app:v1", "tool:2"}, "Layers": []string{"layer0/layer.tar", "layer1/layer.tar"}},
	})
	file("manifest.json", mj)
	tw.Close()
	return buf.Bytes(), cfgDigest, layers
}

// TestImportDockerSave: a docker save archive becomes an OCI image (its
// config, its uncompressed layers) under each of its RepoTags; a layer
// that does not match its diff_id is refused, naming it.
func TestImportDockerSave(t *testing.T) {
	t.Parallel()
	archive, cfgDigest, layers := dockerSave(t, false)
	dst := newInstance(t, "")
	rep, err := dst.imp.Import(t.Context(), bytes.NewReader(archive), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Format != FormatDocker || len(rep.Images) != 2 || rep.Images[0].Repository != "hub/app" || rep.Images[1].Repository != "library/tool" || rep.Images[1].Tag != "2" {
		t.Fatalf("report %+v", rep)
	}
	body := dst.read(t, "hub/app", "v1", false)
	m, err := manifest.Parse("", body)
	if err != nil || m.Config.Digest != cfgDigest || len(m.Layers) != 2 {
		t.Fatalf("built manifest %s: %v", body, err)
	}
	for i, l := range m.Layers {
		if got := dst.read(t, "library/tool", l.Digest, true); !bytes.Equal(got, layers[i]) {
			t.Errorf("layer %d differs", i)
		}
	}
	damaged, _, layers2 := dockerSave(t, true)
	other := newInstance(t, "")
	_, err = other.imp.Import(t.Context(), bytes.NewReader(damaged), ImportOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "layer1/layer.tar") || !strings.Contains(err.Error(), digestOf(layers2[1])) {
		t.Fatalf("damaged docker layer: %v, want ErrInvalid naming layer1/layer.tar and its diff_id", err)
	}
	if u, _ := other.blobs.WaitUsage(t.Context()); u.Blobs != 0 {
		t.Fatalf("%d blobs stored from a damaged archive", u.Blobs)
	}
}

package archive

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
)

// Annotations of index.json entries.
const (
	// AnnotationRefName names a tagged entry "<repository>:<tag>".
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is containerd's name of the image, the same.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationRepository names the repository of every entry, tagged
	// or not (referrers, images exported by digest).
	AnnotationRepository = "io.regcache.repository"
)

// layoutFile is the content of oci-layout.
const layoutFile = `{"imageLayoutVersion":"1.0.0"}`

// maxReferrerDepth bounds referrers of referrers (a signature of an SBOM).
const maxReferrerDepth = 4

// Source reads repositories, fetching what is not cached unless offline
// (cache.Puller).
type Source interface {
	Route(ctx context.Context, name, ns string) (string, error)
	Manifest(ctx context.Context, repo, ref string) (cache.Content, error)
	Blob(ctx context.Context, repo, digest string) (cache.Content, error)
	Referrers(ctx context.Context, repo, digest string) ([]storage.Descriptor, error)
}

// Exporter writes OCI image-layout archives.
type Exporter struct {
	src Source
	log *slog.Logger
	now func() time.Time
}

// NewExporter returns an Exporter reading from src.
func NewExporter(src Source, log *slog.Logger) *Exporter {
	return &Exporter{src: src, log: log, now: time.Now}
}

// ErrInvalid reports an export or import that cannot run as given, or an
// archive that fails verification.
var ErrInvalid = errors.New("invalid archive")

// Plan is what an export writes: decided, and every manifest read, before
// the first byte goes out, so that a reference that cannot be exported is
// an error answer rather than a broken archive.
type Plan struct {
	entries []manifest.Descriptor
	items   []item
	// Blobs and Bytes count what the archive carries (skipped blobs not
	// included); Skipped counts the blobs left out as present.
	Blobs   int
	Bytes   int64
	Skipped int
}

// item is one blob of the archive.
type item struct {
	repo, digest string
	size         int64
	manifest     bool
	skip         bool
}

// planner builds a Plan.
type planner struct {
	x    *Exporter
	p    *Plan
	skip map[string]bool
	seen map[string]bool
}

// Plan resolves refs ("name[:tag|@digest]", as warm takes them) and reads
// their manifests; skip names the blobs to leave out.
func (x *Exporter) Plan(ctx context.Context, refs []string, skip map[string]bool) (*Plan, error) {
	if len(refs) == 0 {
		return nil, fmt.Errorf("%w: no reference to export", ErrInvalid)
	}
	pl := planner{x: x, p: &Plan{}, skip: skip, seen: map[string]bool{}}
	done := map[string]bool{}
	for _, ref := range refs {
		name, tagOrDigest, err := cache.ParseReference(ref)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		repo, err := cache.RouteReference(ctx, x.src, name)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", ref, err)
		}
		key := repo + "\x00" + tagOrDigest
		if done[key] {
			continue
		}
		done[key] = true
		top, err := pl.manifest(ctx, repo, tagOrDigest, 0)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", ref, err)
		}
		top.Annotations = map[string]string{AnnotationRepository: repo}
		if !cache.IsDigest(tagOrDigest) {
			top.Annotations[AnnotationRefName] = repo + ":" + tagOrDigest
			top.Annotations[AnnotationImageName] = repo + ":" + tagOrDigest
		}
		pl.p.entries = append(pl.p.entries, top)
	}
	return pl.p, nil
}

// manifest adds manifest ref of repo, what it references, and its
// referrers, and returns its descriptor.
func (pl *planner) manifest(ctx context.Context, repo, ref string, depth int) (manifest.Descriptor, error) {
	c, err := pl.x.src.Manifest(ctx, repo, ref)
	if err != nil {
		return manifest.Descriptor{}, err
	}
	body, err := io.ReadAll(io.LimitReader(c.Body, manifest.MaxSize+1))
	c.Body.Close()
	if err != nil {
		return manifest.Descriptor{}, fmt.Errorf("read manifest %s@%s: %w", repo, c.Digest, err)
	}
	desc := manifest.Descriptor{MediaType: c.MediaType, Digest: c.Digest, Size: int64(len(body))}
	if pl.seen[repo+"@"+c.Digest] {
		return desc, nil
	}
	pl.seen[repo+"@"+c.Digest] = true
	m, err := manifest.Parse(c.MediaType, body)
	if err != nil {
		return manifest.Descriptor{}, fmt.Errorf("manifest %s@%s: %w", repo, c.Digest, err)
	}
	if desc.MediaType == "" {
		desc.MediaType = m.MediaType
	}
	for _, d := range m.Manifests {
		if _, err := pl.manifest(ctx, repo, d.Digest, depth); err != nil {
			return manifest.Descriptor{}, err
		}
	}
	for _, b := range m.Blobs() {
		if manifest.Foreign(b) {
			continue
		}
		pl.add(item{repo: repo, digest: b.Digest, size: b.Size})
	}
	pl.add(item{repo: repo, digest: c.Digest, size: desc.Size, manifest: true})
	if depth >= maxReferrerDepth {
		return desc, nil
	}
	refs, err := pl.x.src.Referrers(ctx, repo, c.Digest)
	if err != nil {
		// Referrers are carried when they can be listed; an upstream that
		// cannot list them does not stop the export of the image.
		pl.x.log.Warn("export: referrers not listed", "repo", repo, "digest", c.Digest, "err", err)
		return desc, nil
	}
	for _, r := range refs {
		rd, err := pl.manifest(ctx, repo, r.Digest, depth+1)
		if err != nil {
			return manifest.Descriptor{}, fmt.Errorf("referrer %s of %s: %w", r.Digest, c.Digest, err)
		}
		rd.ArtifactType = r.ArtifactType
		rd.Annotations = map[string]string{AnnotationRepository: repo}
		pl.p.entries = append(pl.p.entries, rd)
	}
	return desc, nil
}

// add plans one blob, once.
func (pl *planner) add(it item) {
	if pl.seen[it.digest] {
		return
	}
	pl.seen[it.digest] = true
	if pl.skip[it.digest] {
		it.skip = true
		pl.p.Skipped++
	} else {
		pl.p.Blobs++
		pl.p.Bytes += it.size
	}
	pl.p.items = append(pl.p.items, it)
}

// Write streams the planned archive to w, reporting the bytes of blobs
// written so far to progress (which may be nil). Every blob is hashed on
// the way: one that does not match its digest stops the export.
func (x *Exporter) Write(ctx context.Context, p *Plan, w io.Writer, progress func(int64)) error {
	tw := tar.NewWriter(w)
	mtime := x.now().UTC().Truncate(time.Second)
	file := func(name string, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/", Mode: 0o755, ModTime: mtime, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/", Mode: 0o755, ModTime: mtime, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	if err := file("oci-layout", []byte(layoutFile)); err != nil {
		return err
	}
	var done int64
	for _, it := range p.items {
		if it.skip {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := x.blob(ctx, tw, it, mtime, func(k int64) {
			if progress != nil {
				progress(done + k)
			}
		})
		if err != nil {
			return err
		}
		done += n
	}
	idx, err := json.Marshal(struct {
		SchemaVersion int                   `json:"schemaVersion"`
		MediaType     string                `json:"mediaType"`
		Manifests     []manifest.Descriptor `json:"manifests"`
	}{2, manifest.OCIIndex, p.entries})
	if err != nil {
		return err
	}
	if err := file("index.json", idx); err != nil {
		return err
	}
	return tw.Close()
}

// blob writes one blob as blobs/sha256/<hex>, verifying it.
func (x *Exporter) blob(ctx context.Context, tw *tar.Writer, it item, mtime time.Time, progress func(int64)) (int64, error) {
	var c cache.Content
	var err error
	if it.manifest {
		c, err = x.src.Manifest(ctx, it.repo, it.digest)
	} else {
		c, err = x.src.Blob(ctx, it.repo, it.digest)
	}
	if err != nil {
		return 0, fmt.Errorf("export blob %s of %s: %w", it.digest, it.repo, err)
	}
	defer c.Body.Close()
	if c.Size != it.size {
		return 0, fmt.Errorf("export blob %s of %s: %d bytes, its manifest says %d", it.digest, it.repo, c.Size, it.size)
	}
	name := "blobs/sha256/" + strings.TrimPrefix(it.digest, "sha256:")
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: c.Size, ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h, &counter{report: progress}), c.Body)
	if err != nil {
		return n, fmt.Errorf("export blob %s of %s: %w", it.digest, it.repo, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != it.digest {
		return n, fmt.Errorf("%w: blob %s of %s hashes to %s: the stored copy is damaged", storage.ErrDigestMismatch, it.digest, it.repo, got)
	}
	return n, nil
}

// counter counts the bytes written through it, reporting the running
// count.
type counter struct {
	n      int64
	report func(int64)
}

// Write counts b and reports the running count.
func (c *counter) Write(b []byte) (int, error) {
	c.n += int64(len(b))
	if c.report != nil {
		c.report(c.n)
	}
	return len(b), nil
}

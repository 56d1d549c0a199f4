package archive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
)

// Store is where an import writes blobs (storage.Blobs).
type Store interface {
	Create(ctx context.Context, digest string, size int64) (*storage.Writer, error)
	CreateUnknown(ctx context.Context, size int64) (*storage.Writer, error)
	Stat(ctx context.Context, digest string) (int64, error)
	Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64, error)
}

// Meta records imported images (storage.Meta).
type Meta interface {
	PutImage(ctx context.Context, repo string, img storage.Image) error
}

// Guard protects digests from a collection until they are linked
// (local.Repos).
type Guard interface {
	Protect(digests ...string) (release func())
}

// Rules tells cached repositories from local ones (cache.Store).
type Rules interface {
	Covering(repo string) (rule, source string, ok bool)
}

// Importer loads archives into the store.
type Importer struct {
	blobs Store
	meta  Meta
	guard Guard
	rules Rules
	log   *slog.Logger
	now   func() time.Time
}

// NewImporter wires an Importer.
func NewImporter(blobs Store, meta Meta, guard Guard, rules Rules, log *slog.Logger) *Importer {
	return &Importer{blobs: blobs, meta: meta, guard: guard, rules: rules, log: log, now: time.Now}
}

// ImportOptions adjust an import.
type ImportOptions struct {
	// To is a repository prefix: images are recorded under To/<name in
	// the archive>, or under To itself when the archive records a tag but
	// no repository (skopeo's oci-archive:lab.tar:v1).
	To string
}

// ImportReport says what an import stored.
type ImportReport struct {
	// Format is oci-layout or docker-save.
	Format string     `json:"format"`
	Images []Imported `json:"images"`
	// Blobs counts the blobs of the archive; Stored those new to the
	// store, Present those it held already (verified in the archive all
	// the same); Bytes their size.
	Blobs   int   `json:"blobs"`
	Stored  int   `json:"stored"`
	Present int   `json:"present"`
	Bytes   int64 `json:"bytes"`
}

// Imported is one image recorded.
type Imported struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"`
	Digest     string `json:"digest"`
}

// Formats of ImportReport.Format.
const (
	FormatOCI    = "oci-layout"
	FormatDocker = "docker-save"
)

// maxMetaFile bounds index.json, manifest.json and the like.
const maxMetaFile = 16 << 20

// Import reads an archive (tar, or gzip-compressed tar) from r and stores
// its images, all or nothing (doc.go).
func (im *Importer) Import(ctx context.Context, r io.Reader, opts ImportOptions) (ImportReport, error) {
	s := &session{im: im, ctx: ctx, staged: map[string]*storage.Staged{}, present: map[string]int64{},
		layers: map[string]string{}, links: map[string]string{}, files: map[string][]byte{}, protected: map[string]bool{},
		repos: map[string]*storage.Image{}}
	defer s.release()
	err := s.read(r)
	if err == nil {
		err = s.assemble(opts)
	}
	if err == nil {
		err = s.commit()
	}
	if err != nil {
		s.cancel()
		return ImportReport{}, err
	}
	s.rep.Blobs = s.rep.Stored + s.rep.Present
	im.log.Info("imported archive", "format", s.rep.Format, "images", len(s.rep.Images), "stored", s.rep.Stored, "present", s.rep.Present, "bytes", s.rep.Bytes)
	return s.rep, nil
}

// session is one import.
type session struct {
	im        *Importer
	ctx       context.Context
	staged    map[string]*storage.Staged // by digest
	present   map[string]int64           // by digest: stored already
	layers    map[string]string          // docker layer path -> digest
	links     map[string]string          // link path -> target path
	files     map[string][]byte          // index.json, manifest.json, ...
	protected map[string]bool
	releases  []func()
	repos     map[string]*storage.Image
	order     []string // repositories, in the order first met
	needed    map[string]bool
	rep       ImportReport
}

func (s *session) protect(digest string) {
	if s.protected[digest] || s.im.guard == nil {
		return
	}
	s.protected[digest] = true
	s.releases = append(s.releases, s.im.guard.Protect(digest))
}

func (s *session) release() {
	for _, r := range s.releases {
		r()
	}
}

// cancel removes every staged blob not committed.
func (s *session) cancel() {
	for _, st := range s.staged {
		st.Cancel()
	}
}

// read consumes the archive, staging its blobs.
func (s *session) read(r io.Reader) error {
	br := bufio.NewReader(r)
	var src io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%w: gzip: %v", ErrInvalid, err)
		}
		defer gz.Close()
		src = gz
	}
	tr := tar.NewReader(src)
	entries := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: not a readable tar archive (after %d entries): %v", ErrInvalid, entries, err)
		}
		entries++
		if err := s.ctx.Err(); err != nil {
			return err
		}
		name := cleanName(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			s.links[name] = path.Clean(path.Join(path.Dir(name), hdr.Linkname))
		case tar.TypeLink:
			s.links[name] = cleanName(hdr.Linkname)
		case tar.TypeReg:
			if err := s.file(name, hdr.Size, tr); err != nil {
				return err
			}
		}
	}
	if entries == 0 {
		return fmt.Errorf("%w: the archive is empty", ErrInvalid)
	}
	return nil
}

func cleanName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+strings.TrimPrefix(n, "./")), "/")
}

// file handles one regular file of the archive.
func (s *session) file(name string, size int64, r io.Reader) error {
	base := path.Base(name)
	switch {
	case name == "index.json" || name == "oci-layout" || name == "manifest.json" || name == "repositories":
		if size > maxMetaFile {
			return fmt.Errorf("%w: %s is %d bytes, more than %d", ErrInvalid, name, size, maxMetaFile)
		}
		b, err := io.ReadAll(io.LimitReader(r, maxMetaFile))
		if err != nil {
			return fmt.Errorf("%w: read %s: %v", ErrInvalid, name, err)
		}
		s.files[name] = b
	case strings.HasPrefix(name, "blobs/sha256/") && path.Dir(name) == "blobs/sha256":
		digest := "sha256:" + base
		if _, err := storage.ParseDigest(digest); err != nil {
			return fmt.Errorf("%w: archive entry %s is not named by a sha256 digest", ErrInvalid, name)
		}
		return s.blob(name, digest, size, r)
	case path.Dir(name) == "." && strings.HasSuffix(base, ".json") && len(base) == 64+len(".json"):
		// A docker save image config, named by its digest.
		digest := "sha256:" + strings.TrimSuffix(base, ".json")
		if _, err := storage.ParseDigest(digest); err != nil {
			return nil
		}
		return s.blob(name, digest, size, r)
	case base == "layer.tar":
		return s.layer(name, size, r)
	}
	return nil
}

// blob stages blob digest, or verifies it when the store holds it.
func (s *session) blob(name, digest string, size int64, r io.Reader) error {
	s.rep.Bytes += size
	s.protect(digest)
	if _, ok := s.staged[digest]; ok {
		return verify(name, digest, r)
	}
	if _, ok := s.present[digest]; ok {
		return verify(name, digest, r)
	}
	if n, err := s.im.blobs.Stat(s.ctx, digest); err == nil {
		if err := verify(name, digest, r); err != nil {
			return err
		}
		s.present[digest] = n
		return nil
	}
	w, err := s.im.blobs.Create(s.ctx, digest, size)
	if err != nil {
		return fmt.Errorf("store blob %s: %w", digest, err)
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Cancel()
		if errors.Is(err, storage.ErrStorageFull) {
			return err
		}
		return fmt.Errorf("%w: archive entry %s (blob %s): %v", ErrInvalid, name, digest, err)
	}
	st, err := w.Stage("")
	if errors.Is(err, storage.ErrDigestMismatch) || errors.Is(err, storage.ErrSizeMismatch) {
		return fmt.Errorf("%w: blob %s (archive entry %s) does not match its digest: %v", ErrInvalid, digest, name, err)
	}
	if err != nil {
		return err
	}
	s.staged[digest] = st
	return nil
}

// verify hashes r and checks it is blob digest.
func verify(name, digest string, r io.Reader) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("%w: archive entry %s: %v", ErrInvalid, name, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("%w: blob %s (archive entry %s) does not match its digest: %v: content hashes to %s", ErrInvalid, digest, name, storage.ErrDigestMismatch, got)
	}
	return nil
}

// layer stages a docker save layer, whose digest its bytes tell; the
// image's config says later which it must be.
func (s *session) layer(name string, size int64, r io.Reader) error {
	s.rep.Bytes += size
	w, err := s.im.blobs.CreateUnknown(s.ctx, size)
	if err != nil {
		return fmt.Errorf("store layer %s: %w", name, err)
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Cancel()
		if errors.Is(err, storage.ErrStorageFull) {
			return err
		}
		return fmt.Errorf("%w: archive entry %s: %v", ErrInvalid, name, err)
	}
	digest := w.Digest()
	st, err := w.Stage(digest)
	if err != nil {
		return err
	}
	s.layers[name] = digest
	s.protect(digest)
	_, staged := s.staged[digest]
	_, present := s.present[digest]
	switch {
	case staged || present:
		st.Cancel()
	default:
		if n, err := s.im.blobs.Stat(s.ctx, digest); err == nil {
			st.Cancel()
			s.present[digest] = n
			return nil
		}
		s.staged[digest] = st
	}
	return nil
}

// size returns the size of a blob in the archive or the store.
func (s *session) size(digest string) (int64, bool) {
	if st, ok := s.staged[digest]; ok {
		return st.Size(), true
	}
	if n, ok := s.present[digest]; ok {
		return n, true
	}
	s.protect(digest)
	n, err := s.im.blobs.Stat(s.ctx, digest)
	if err != nil {
		return 0, false
	}
	s.present[digest] = n
	return n, true
}

// readBlob reads a small blob (a manifest, a config) from the archive or
// the store.
func (s *session) readBlob(digest string) ([]byte, error) {
	var f io.ReadCloser
	var err error
	if st, ok := s.staged[digest]; ok {
		f, err = st.Open()
	} else if _, ok := s.size(digest); ok {
		f, _, err = s.im.blobs.Open(s.ctx, digest)
	} else {
		return nil, fmt.Errorf("%w: %s is neither in the archive nor stored here", ErrInvalid, digest)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, manifest.MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > manifest.MaxSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, digest, manifest.MaxSize)
	}
	return b, nil
}

// image returns what is recorded for repo.
func (s *session) image(repo string) *storage.Image {
	img := s.repos[repo]
	if img == nil {
		img = &storage.Image{}
		s.repos[repo] = img
		s.order = append(s.order, repo)
	}
	return img
}

// assemble checks the archive's images and plans their records.
func (s *session) assemble(opts ImportOptions) error {
	s.needed = map[string]bool{}
	switch {
	case s.files["index.json"] != nil:
		s.rep.Format = FormatOCI
		return s.assembleOCI(opts)
	case s.files["manifest.json"] != nil:
		s.rep.Format = FormatDocker
		return s.assembleDocker(opts)
	}
	return fmt.Errorf("%w: neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)", ErrInvalid)
}

func (s *session) assembleOCI(opts ImportOptions) error {
	var idx struct {
		Manifests []manifest.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(s.files["index.json"], &idx); err != nil {
		return fmt.Errorf("%w: index.json: %v", ErrInvalid, err)
	}
	if len(idx.Manifests) == 0 {
		return fmt.Errorf("%w: index.json lists no image", ErrInvalid)
	}
	now := s.im.now()
	for i, e := range idx.Manifests {
		repo, tag := entryName(e.Annotations)
		repo, err := withPrefix(repo, opts.To)
		what := fmt.Sprintf("index.json entry %d (%s", i, e.Digest)
		if tag != "" {
			what += ", tag " + tag
		}
		what += ")"
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
		}
		if repo == "" {
			return fmt.Errorf("%w: %s records no repository: give one with --to", ErrInvalid, what)
		}
		if err := s.walk(repo, e, 0); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		img := s.image(repo)
		if tag != "" {
			img.Tags = append(img.Tags, storage.Tag{Name: tag, Digest: e.Digest, FetchedAt: now})
		}
		s.rep.Images = append(s.rep.Images, Imported{Repository: repo, Tag: tag, Digest: e.Digest})
	}
	return nil
}

// walk checks manifest d of repo and everything it references, and plans
// their links.
func (s *session) walk(repo string, d manifest.Descriptor, depth int) error {
	if depth > 8 {
		return fmt.Errorf("%w: manifests nested more than 8 deep", ErrInvalid)
	}
	if _, err := storage.ParseDigest(d.Digest); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	body, err := s.readBlob(d.Digest)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	if int64(len(body)) != d.Size {
		return fmt.Errorf("%w: manifest %s is %d bytes, its descriptor says %d", ErrInvalid, d.Digest, len(body), d.Size)
	}
	m, err := manifest.Parse(d.MediaType, body)
	if err != nil {
		return fmt.Errorf("%w: manifest %s: %v", ErrInvalid, d.Digest, err)
	}
	img := s.image(repo)
	s.needed[d.Digest] = true
	img.Links = append(img.Links, storage.Link{Digest: d.Digest, MediaType: m.MediaType, Size: d.Size, LinkedAt: s.im.now()})
	for _, c := range m.Manifests {
		if err := s.walk(repo, c, depth+1); err != nil {
			return err
		}
	}
	for _, b := range m.Blobs() {
		if manifest.Foreign(b) {
			continue
		}
		n, ok := s.size(b.Digest)
		if !ok {
			return fmt.Errorf("%w: blob %s, which manifest %s references, is neither in the archive nor stored here", ErrInvalid, b.Digest, d.Digest)
		}
		if n != b.Size {
			return fmt.Errorf("%w: blob %s is %d bytes, manifest %s says %d", ErrInvalid, b.Digest, n, d.Digest, b.Size)
		}
		s.needed[b.Digest] = true
		img.Links = append(img.Links, storage.Link{Digest: b.Digest, Size: n, LinkedAt: s.im.now()})
	}
	if m.Subject != nil {
		img.Referrers = append(img.Referrers, storage.Referrer{Subject: m.Subject.Digest, Descriptor: storage.Descriptor{
			MediaType: m.MediaType, Digest: d.Digest, Size: d.Size, ArtifactType: m.EffectiveArtifactType(), Annotations: m.Annotations}})
	}
	return nil
}

// commit makes the needed staged blobs visible and records the images,
// one repository per transaction.
func (s *session) commit() error {
	var digests []string
	for d := range s.staged {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		st := s.staged[d]
		if !s.needed[d] {
			st.Cancel()
			continue
		}
		if err := st.Commit(); err != nil {
			return err
		}
		s.rep.Stored++
	}
	for d := range s.present {
		if s.needed[d] {
			s.rep.Present++
		}
	}
	now := s.im.now()
	for _, repo := range s.order {
		img := s.repos[repo]
		if s.im.rules != nil {
			if _, _, cached := s.im.rules.Covering(repo); cached && len(img.Referrers) > 0 {
				img.ListedAt = now
			}
		}
		if err := s.im.meta.PutImage(s.ctx, repo, *img); err != nil {
			return err
		}
	}
	return nil
}

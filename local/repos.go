package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/regcache/regcache/storage"
)

// Sentinel errors of local repositories; the registry maps each to an OCI
// error code. Test with errors.Is.
var (
	// ErrDenied: the repository is a cache (a rule covers it) and is
	// read-only.
	ErrDenied = errors.New("repository is read-only")
	// ErrDeleteDisabled: deleting this kind of content is turned off.
	ErrDeleteDisabled = errors.New("delete disabled")
	// ErrManifestInvalid: the pushed manifest is malformed or inconsistent.
	ErrManifestInvalid = errors.New("manifest invalid")
	// ErrManifestTooLarge: the pushed manifest exceeds manifest.MaxSize.
	ErrManifestTooLarge = errors.New("manifest too large")
	// ErrManifestBlobUnknown: the manifest references a blob or child
	// manifest the repository does not hold.
	ErrManifestBlobUnknown = errors.New("manifest references unknown content")
	// ErrDigestInvalid: the content does not hash to the digest named.
	ErrDigestInvalid = errors.New("digest does not match content")
	// ErrManifestUnknown: no such manifest or tag in the repository.
	ErrManifestUnknown = errors.New("manifest unknown")
	// ErrBlobUnknown: no such blob in the repository.
	ErrBlobUnknown = errors.New("blob unknown")
)

// Rules tells which repositories are caches (cache.Store).
type Rules interface {
	// Covering returns the name and source repository of the rule that
	// caches repo; ok is false when repo is a local repository.
	Covering(repo string) (rule, source string, ok bool)
}

// Blobs is the content-addressed store (storage.Blobs).
type Blobs interface {
	Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64, error)
	Stat(ctx context.Context, digest string) (int64, error)
	Create(ctx context.Context, digest string, size int64) (*storage.Writer, error)
	// Walk and Remove serve garbage collection.
	Walk(ctx context.Context, fn func(storage.BlobInfo) error) error
	Remove(ctx context.Context, digest string) error
}

// Links are the per-repository links and tags (storage.Meta).
type Links interface {
	Link(ctx context.Context, repo string, l storage.Link, tag *storage.Tag) error
	Linked(ctx context.Context, repo, digest string) (storage.Link, error)
	Unlink(ctx context.Context, repo, digest string) error
}

// Manifests records pushed and deleted manifests and tags (storage.Meta).
type Manifests interface {
	PutManifest(ctx context.Context, repo string, l storage.Link, tag *storage.Tag, ref *storage.Referrer) error
	DeleteManifest(ctx context.Context, repo, digest, subject string) ([]string, error)
	DeleteTag(ctx context.Context, repo, tag string) error
	Repositories(ctx context.Context, last string, n int) ([]string, error)
}

// Snapshots serve garbage collection (storage.Meta).
type Snapshots interface {
	Links(ctx context.Context) ([]storage.RepoLink, error)
	UnlinkEverywhere(ctx context.Context, digests []string) error
}

// Meta is the metadata local repositories need (storage.Meta).
type Meta interface {
	Links
	Manifests
	Snapshots
}

// Sessions are blob upload sessions (uploads.Sessions).
type Sessions interface {
	Start(ctx context.Context, repo string) (string, error)
	Write(ctx context.Context, repo, id string, start, length int64, r io.Reader) (int64, error)
	Status(ctx context.Context, repo, id string) (int64, error)
	Commit(ctx context.Context, repo, id, digest string, start, length int64, r io.Reader) (int64, error)
	Cancel(ctx context.Context, repo, id string) error
}

// ReadPolicy decides whether the caller of a cross-repository mount may
// read a blob of the source repository. It is the one place where that is
// decided: an authorisation check on the caller (carried by ctx) belongs
// here.
type ReadPolicy interface {
	MayRead(ctx context.Context, repo, digest string) (bool, error)
}

// linkedPolicy lets a mount read a blob linked to the source repository:
// what anybody may pull from it.
type linkedPolicy struct{ links Links }

func (p linkedPolicy) MayRead(ctx context.Context, repo, digest string) (bool, error) {
	_, err := p.links.Linked(ctx, repo, digest)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Deletes says which kinds of content clients may delete from local
// repositories.
type Deletes struct {
	Manifests, Tags, Blobs bool
}

// AllDeletes allows every kind of delete (the default).
var AllDeletes = Deletes{Manifests: true, Tags: true, Blobs: true}

// Options tune local repositories; zero values take the defaults.
type Options struct {
	// Deletes allowed; nil means AllDeletes.
	Deletes *Deletes
	// Reads decides cross-repository mounts (default: the source has the
	// blob linked).
	Reads ReadPolicy
	// Grace protects blobs written or linked more recently than this from
	// garbage collection (default DefaultGrace).
	Grace time.Duration
	// Now returns the current time (tests).
	Now func() time.Time
}

// DefaultGrace is how long a blob is kept after it was last written or
// linked although no manifest references it: the time a client has
// between uploading an image's blobs and pushing its manifest.
const DefaultGrace = time.Hour

// Repos are the local repositories: the repositories no cache rule
// covers, which accept pushes and deletes. Reads of every repository go
// through the puller (package cache); Repos owns what changes them, and
// garbage collection.
type Repos struct {
	blobs    Blobs
	meta     Meta
	sessions Sessions
	rules    Rules
	opts     Options
	deletes  Deletes
	log      *slog.Logger
	guard    guard
	gcMu     sync.Mutex // one collection at a time
	// afterMark runs between marking and sweeping (tests).
	afterMark func()
}

// New wires local repositories.
func New(blobs Blobs, meta Meta, sessions Sessions, rules Rules, log *slog.Logger, opts Options) *Repos {
	if opts.Reads == nil {
		opts.Reads = linkedPolicy{meta}
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d := AllDeletes
	if opts.Deletes != nil {
		d = *opts.Deletes
	}
	return &Repos{blobs: blobs, meta: meta, sessions: sessions, rules: rules, opts: opts, deletes: d, log: log, guard: newGuard()}
}

// writable refuses changes to a repository a cache rule covers.
func (r *Repos) writable(repo string) error {
	if rule, source, ok := r.rules.Covering(repo); ok {
		return fmt.Errorf("%w: repository %s is a cache of %s (rule %q); push to a repository no cache rule covers", ErrDenied, repo, source, rule)
	}
	return nil
}

// StartUpload opens an upload session for repo.
func (r *Repos) StartUpload(ctx context.Context, repo string) (string, error) {
	if err := r.writable(repo); err != nil {
		return "", err
	}
	return r.sessions.Start(ctx, repo)
}

// WriteUpload appends a chunk to a session (see uploads.Sessions.Write).
func (r *Repos) WriteUpload(ctx context.Context, repo, id string, start, length int64, body io.Reader) (int64, error) {
	if err := r.writable(repo); err != nil {
		return 0, err
	}
	return r.sessions.Write(ctx, repo, id, start, length, body)
}

// UploadStatus returns how many bytes a session holds.
func (r *Repos) UploadStatus(ctx context.Context, repo, id string) (int64, error) {
	return r.sessions.Status(ctx, repo, id)
}

// CancelUpload ends a session.
func (r *Repos) CancelUpload(ctx context.Context, repo, id string) error {
	return r.sessions.Cancel(ctx, repo, id)
}

// FinishUpload appends the final chunk (body may be nil), verifies the
// session's bytes against digest, commits them and links the blob to repo.
func (r *Repos) FinishUpload(ctx context.Context, repo, id, digest string, start, length int64, body io.Reader) error {
	if err := r.writable(repo); err != nil {
		return err
	}
	release := r.guard.protect(digest)
	defer release()
	size, err := r.sessions.Commit(ctx, repo, id, digest, start, length, body)
	if err != nil {
		return err
	}
	return r.link(ctx, repo, digest, size)
}

// PutBlob stores body as blob digest of repo in one request (a
// monolithic upload); size < 0 when unknown.
func (r *Repos) PutBlob(ctx context.Context, repo, digest string, size int64, body io.Reader) error {
	if err := r.writable(repo); err != nil {
		return err
	}
	release := r.guard.protect(digest)
	defer release()
	w, err := r.blobs.Create(ctx, digest, size)
	if err != nil {
		return err
	}
	n, err := io.Copy(w, body)
	if err != nil {
		w.Cancel()
		return fmt.Errorf("receive blob %s: %w", digest, err)
	}
	if err := w.Commit(); err != nil {
		return err
	}
	return r.link(ctx, repo, digest, n)
}

func (r *Repos) link(ctx context.Context, repo, digest string, size int64) error {
	err := r.meta.Link(ctx, repo, storage.Link{Digest: digest, Size: size, LinkedAt: r.opts.Now()}, nil)
	if err == nil {
		r.log.DebugContext(ctx, "pushed blob", "repo", repo, "digest", digest, "bytes", size)
	}
	return err
}

// Mount links blob digest of repository from to repo, when the caller may
// read it there (ReadPolicy) and the store holds it. It returns false,
// and changes nothing, otherwise: the client then uploads the blob.
func (r *Repos) Mount(ctx context.Context, repo, from, digest string) (bool, error) {
	if err := r.writable(repo); err != nil {
		return false, err
	}
	release := r.guard.protect(digest)
	defer release()
	ok, err := r.opts.Reads.MayRead(ctx, from, digest)
	if err != nil || !ok {
		return false, err
	}
	size, err := r.blobs.Stat(ctx, digest)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := r.link(ctx, repo, digest, size); err != nil {
		return false, err
	}
	r.log.InfoContext(ctx, "mounted blob", "repo", repo, "from", from, "digest", digest)
	return true, nil
}

// Repositories lists up to n repositories (n < 0: all), local and cached,
// after last, in lexical order.
func (r *Repos) Repositories(ctx context.Context, last string, n int) ([]string, error) {
	return r.meta.Repositories(ctx, last, n)
}

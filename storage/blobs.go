// Package storage owns regcache's bytes and metadata: a content-addressed
// blob store (on the filesystem, or with its committed blobs in an object
// store) and a bbolt database holding cache rules, per-repository links
// and tag pointers.
package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Sentinel errors of the storage package; test with errors.Is.
var (
	// ErrNotFound reports a blob, link, tag or record that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrDigestMismatch reports bytes whose digest differs from the one expected.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrSizeMismatch reports bytes whose length differs from the one expected.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrInvalidDigest reports a digest string that is not "sha256:<64 hex>".
	ErrInvalidDigest = errors.New("invalid digest")
)

// isSHA256Hex reports whether s is 64 lowercase hexadecimal digits.
func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ParseDigest checks that s is a sha256 digest ("sha256:" and 64 lowercase
// hex characters), the only algorithm the store accepts, and returns its hex part.
func ParseDigest(s string) (string, error) {
	const prefix = "sha256:"
	if len(s) != len(prefix)+64 || s[:len(prefix)] != prefix || !isSHA256Hex(s[len(prefix):]) {
		return "", fmt.Errorf("%w: %q (want sha256:<64 lowercase hex>)", ErrInvalidDigest, s)
	}
	return s[len(prefix):], nil
}

// Blobs is a content-addressed blob store on the local filesystem.
//
// Layout: <root>/sha256/<first two hex>/<hex> holds committed blobs;
// <root>/tmp holds fills in progress. A blob becomes visible only by an
// atomic rename after its size and digest have been verified, so a crash at
// any moment leaves no partial blob under its digest.
//
// With an ObjectStore (OpenObjectBlobs), committed blobs live there
// instead: fills, uploads and imports are still written and verified in
// <root>/tmp and <root>/uploads, and only verified bytes are handed to the
// object store, which makes them visible in one step (objects.go).
type Blobs struct {
	root    string
	usage   usage       // bytes committed, once counted (usage.go)
	objects ObjectStore // nil: committed blobs are files under root
	placing objectPlacing
}

// OpenBlobs opens (creating when needed) the blob store rooted at dir and
// removes temporary files left behind by an earlier process.
// It refuses a directory whose blobs are in an object store
// (OpenObjectBlobs): served from the filesystem, their links would all
// dangle.
func OpenBlobs(dir string) (*Blobs, error) {
	if where, ok := objectStoreOf(dir); ok {
		return nil, fmt.Errorf("blob store %s: its blobs are in an object store (%s); open it with that store", dir, where)
	}
	return openBlobs(&Blobs{root: dir})
}

// OpenObjectBlobs opens a blob store whose committed blobs live in
// objects; dir holds the temporary files of fills and the upload sessions,
// as with OpenBlobs, and a note saying where the blobs are (where, e.g.
// the bucket), which OpenBlobs and InspectBlobs heed.
func OpenObjectBlobs(dir string, objects ObjectStore, where string) (*Blobs, error) {
	if objects == nil {
		return nil, errors.New("open blob store: no object store")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create blob directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, objectStoreNote), []byte(where+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("blob store %s: %w", dir, err)
	}
	return openBlobs(&Blobs{root: dir, objects: objects})
}

// objectStoreNote is the file of a blob directory whose blobs are in an
// object store; it says which.
const objectStoreNote = "object-store"

// objectStoreOf reads the note of dir, if any.
func objectStoreOf(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, objectStoreNote))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

func openBlobs(b *Blobs) (*Blobs, error) {
	dir := b.root
	for _, d := range []string{b.tmpDir(), filepath.Join(dir, "sha256")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create blob directory: %w", err)
		}
	}
	entries, err := os.ReadDir(b.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("read blob temp directory: %w", err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(b.tmpDir(), e.Name())); err != nil {
			return nil, fmt.Errorf("remove stale temp file: %w", err)
		}
	}
	return b, nil
}

func (b *Blobs) tmpDir() string { return filepath.Join(b.root, "tmp") }

func (b *Blobs) path(digest string) (string, error) {
	hexPart, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(b.root, "sha256", hexPart[:2], hexPart), nil
}

// Open opens the committed blob with the given digest. The caller closes
// the body, which is an *os.File on the filesystem (so that net/http sends
// it with sendfile). It returns ErrNotFound when the store does not hold
// the blob.
func (b *Blobs) Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64, error) {
	if b.objects != nil {
		if _, err := ParseDigest(digest); err != nil {
			return nil, 0, err
		}
		return b.objects.Open(ctx, digest)
	}
	p, err := b.path(digest)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open blob %s: %w", digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat blob %s: %w", digest, err)
	}
	return f, fi.Size(), nil
}

// Stat returns the size of the committed blob, or ErrNotFound.
func (b *Blobs) Stat(ctx context.Context, digest string) (int64, error) {
	p, err := b.path(digest)
	if err != nil {
		return 0, err
	}
	if b.objects != nil {
		return b.objects.Stat(ctx, digest)
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", digest, err)
	}
	return fi.Size(), nil
}

// Create starts writing a blob expected to have the given digest and size
// (size < 0 when unknown). Nothing is visible until Commit succeeds.
func (b *Blobs) Create(ctx context.Context, digest string, size int64) (*Writer, error) {
	final, err := b.path(digest)
	if err != nil {
		return nil, err
	}
	if err := checkRoom(b.tmpDir(), size, "blob "+digest); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(b.tmpDir(), "fill-*")
	if err != nil {
		return nil, full(fmt.Errorf("create temp file for %s: %w", digest, err), "blob "+digest)
	}
	return &Writer{f: f, h: sha256.New(), digest: digest, size: size, final: final, store: b}, nil
}

// Remove deletes the committed blob digest (garbage collection decides
// when); ErrNotFound when absent. A reader holding the file open keeps
// reading it to the end.
func (b *Blobs) Remove(ctx context.Context, digest string) error {
	p, err := b.path(digest)
	if err != nil {
		return err
	}
	if b.objects != nil {
		return b.removeObject(ctx, digest)
	}
	err = b.remove(p, digest)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("remove blob %s: %w", digest, err)
	}
	return nil
}

// BlobInfo describes a committed blob.
type BlobInfo struct {
	Digest string
	Size   int64
	// Modified is when the blob's bytes were last written.
	Modified time.Time
}

// Walk calls fn for every committed blob, in no particular order, until
// fn returns an error (which Walk returns).
func (b *Blobs) Walk(ctx context.Context, fn func(BlobInfo) error) error {
	if b.objects != nil {
		return b.objects.List(ctx, "", fn)
	}
	top := filepath.Join(b.root, "sha256")
	dirs, err := os.ReadDir(top)
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := walkDir(filepath.Join(top, d.Name()), fn); err != nil {
			return err
		}
	}
	return nil
}

// walkDir calls fn for every committed blob of one <first two hex>
// directory.
func walkDir(dir string, fn func(BlobInfo) error) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, e := range entries {
		if !isSHA256Hex(e.Name()) {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		if err := fn(BlobInfo{Digest: "sha256:" + e.Name(), Size: fi.Size(), Modified: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Put writes r as the blob with the given digest and size, verifying both.
func (b *Blobs) Put(ctx context.Context, digest string, size int64, r io.Reader) error {
	w, err := b.Create(ctx, digest, size)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Cancel()
		return fmt.Errorf("write blob %s: %w", digest, err)
	}
	return w.Commit()
}

// Writer receives the bytes of one blob, hashing them as they arrive.
type Writer struct {
	f      *os.File
	h      hash.Hash
	n      int64
	digest string
	size   int64
	final  string
	done   bool
	// upload is the directory of a resumable upload (see uploads.go);
	// empty for a writer that lives in one call.
	upload string
	store  *Blobs // the store it commits into
}

// Write appends p to the temporary file and the running digest.
func (w *Writer) Write(p []byte) (int, error) {
	if w.size >= 0 && w.n+int64(len(p)) > w.size {
		return 0, fmt.Errorf("blob %s: %w: more than the expected %d bytes", w.digest, ErrSizeMismatch, w.size)
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		err = full(err, w.what())
	}
	return n, err
}

// what names the blob being written in errors: its digest, or the upload
// (whose digest is given at commit).
func (w *Writer) what() string {
	if w.digest != "" {
		return "blob " + w.digest
	}
	return "an upload"
}

// TempPath names the temporary file, which readers may open to follow the
// bytes as they land; it stays readable through an open descriptor after
// Commit renames it or Cancel removes it.
func (w *Writer) TempPath() string { return w.f.Name() }

// Written reports how many bytes have been written so far.
func (w *Writer) Written() int64 { return w.n }

// Commit verifies size and digest, makes the bytes durable and moves them
// under their digest. On any failure the temporary file is removed and
// nothing becomes visible.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("blob writer already closed")
	}
	err := w.seal()
	if err == nil {
		err = w.staged().place()
	}
	w.removeUpload()
	if err != nil {
		return full(fmt.Errorf("commit blob %s: %w", w.digest, err), w.what())
	}
	return nil
}

// Verify checks the size and digest of the bytes written so far against the
// expected ones, without committing: a reader following the fill may
// deliver the last bytes once they verified, before Commit makes them
// durable.
func (w *Writer) Verify() error {
	if err := w.verify(); err != nil {
		return fmt.Errorf("blob %s: %w", w.digest, err)
	}
	return nil
}

func (w *Writer) verify() error {
	if w.size >= 0 && w.n != w.size {
		return fmt.Errorf("%w: got %d bytes, want %d", ErrSizeMismatch, w.n, w.size)
	}
	got := "sha256:" + hex.EncodeToString(w.h.Sum(nil))
	if got != w.digest {
		return fmt.Errorf("%w: content hashes to %s", ErrDigestMismatch, got)
	}
	return nil
}

// Cancel abandons the blob and removes its temporary file. It is safe to
// call after Commit (it then does nothing).
func (w *Writer) Cancel() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
	w.removeUpload()
}

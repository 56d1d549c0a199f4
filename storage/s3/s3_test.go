package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/regcache/regcache/storage"
)

const (
	testBucket = "blobs"
	testSecret = "test-secret-never-shown"
)

func newTestStore(t *testing.T, cfg Config) (*Store, *fakeS3) {
	t.Helper()
	f := newFakeS3(t, testBucket)
	cfg.Endpoint, cfg.Bucket, cfg.PathStyle = f.URL, testBucket, true
	cfg.AccessKeyID, cfg.SecretAccessKey = "AKIDTEST", testSecret
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, f
}

func randomBlob(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, "sha256:" + hex.EncodeToString(sum[:])
}

// put writes b through the store's writer, as a fill does.
func put(t *testing.T, blobs *storage.Blobs, b []byte, digest string) error {
	t.Helper()
	w, err := blobs.Create(t.Context(), digest, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	return w.Commit()
}

// noLocalBlobs fails when a file other than the object store's note is
// in dir.
func noLocalBlobs(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && d.Name() != "object-store" {
			t.Errorf("file left in the local store: %s", p)
		}
		return nil
	})
}

func TestBlobsInBucket(t *testing.T) {
	t.Parallel()
	s, f := newTestStore(t, Config{Prefix: "/cache/"})
	dir := t.TempDir()
	blobs, err := storage.OpenObjectBlobs(dir, s, "test bucket")
	if err != nil {
		t.Fatal(err)
	}
	small, smallDigest := randomBlob(t, 1000)
	if err := put(t, blobs, small, smallDigest); err != nil {
		t.Fatal(err)
	}
	key := "cache/blobs/sha256/" + smallDigest[7:9] + "/" + smallDigest[7:]
	if got, ok := f.object(key); !ok || !bytes.Equal(got, small) {
		t.Fatalf("object %s: present %t; objects %v", key, ok, f.keys())
	}
	noLocalBlobs(t, dir)

	// A second commit of the same digest uploads nothing.
	before := len(f.opsLog())
	if err := put(t, blobs, small, smallDigest); err != nil {
		t.Fatal(err)
	}
	for _, op := range f.opsLog()[before:] {
		if strings.HasPrefix(op, "PUT") {
			t.Errorf("second commit of a stored blob: %s", op)
		}
	}

	body, size, err := blobs.Open(t.Context(), smallDigest)
	if err != nil || size != int64(len(small)) {
		t.Fatalf("open: %d bytes, %v", size, err)
	}
	defer body.Close()
	if _, ok := body.(*os.File); ok {
		t.Fatal("a blob in a bucket opened as a local file")
	}
	got, err := io.ReadAll(body)
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("read: %d bytes, %v", len(got), err)
	}
	// What http.ServeContent does for a Range: learn the size, seek, read.
	for _, r := range []struct{ off, n int64 }{{0, 10}, {500, 100}, {990, 10}, {3, 1}} {
		if end, err := body.Seek(0, io.SeekEnd); err != nil || end != size {
			t.Fatalf("seek to the end: %d, %v", end, err)
		}
		if _, err := body.Seek(r.off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		part := make([]byte, r.n)
		if _, err := io.ReadFull(body, part); err != nil || !bytes.Equal(part, small[r.off:r.off+r.n]) {
			t.Errorf("range %d+%d: %v", r.off, r.n, err)
		}
	}
	if n, err := blobs.Stat(t.Context(), smallDigest); err != nil || n != size {
		t.Errorf("stat: %d, %v", n, err)
	}

	other, otherDigest := randomBlob(t, 3000)
	if err := put(t, blobs, other, otherDigest); err != nil {
		t.Fatal(err)
	}
	var walked []string
	if err := blobs.Walk(t.Context(), func(bi storage.BlobInfo) error {
		walked = append(walked, bi.Digest)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(walked)
	want := []string{smallDigest, otherDigest}
	slices.Sort(want)
	if !slices.Equal(walked, want) {
		t.Errorf("walk: %v, want %v", walked, want)
	}
	u, err := blobs.WaitUsage(t.Context())
	if err != nil || u != (storage.Usage{Bytes: 4000, Blobs: 2}) {
		t.Errorf("usage: %+v, %v; want 4000 bytes in 2 blobs", u, err)
	}

	if err := blobs.Remove(t.Context(), smallDigest); err != nil {
		t.Fatal(err)
	}
	if _, err := blobs.Stat(t.Context(), smallDigest); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat after remove: %v, want ErrNotFound", err)
	}
	if _, _, err := blobs.Open(t.Context(), smallDigest); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("open after remove: %v, want ErrNotFound", err)
	}
	if err := blobs.Remove(t.Context(), smallDigest); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second remove: %v, want ErrNotFound", err)
	}
	if u, _ := blobs.Usage(); u != (storage.Usage{Bytes: 3000, Blobs: 1}) {
		t.Errorf("usage after remove: %+v, want 3000 bytes in 1 blob", u)
	}
	if _, err := blobs.Stat(t.Context(), "sha256:nothex"); !errors.Is(err, storage.ErrInvalidDigest) {
		t.Errorf("stat of a bad digest: %v", err)
	}

	// A blob store on the filesystem refuses the directory: its links
	// would all dangle.
	if _, err := storage.OpenBlobs(dir); err == nil || !strings.Contains(err.Error(), "test bucket") {
		t.Errorf("OpenBlobs on a directory whose blobs are in a bucket: %v", err)
	}
	if _, err := storage.InspectBlobs(dir); err == nil || !strings.Contains(err.Error(), "fsck --server") {
		t.Errorf("InspectBlobs on a directory whose blobs are in a bucket: %v", err)
	}
}

// Nothing is uploaded before the bytes verified: a wrong digest, a wrong
// size or an abandoned writer leave the bucket untouched.
func TestNothingUnverifiedUploaded(t *testing.T) {
	t.Parallel()
	s, f := newTestStore(t, Config{})
	dir := t.TempDir()
	blobs, err := storage.OpenObjectBlobs(dir, s, "test bucket")
	if err != nil {
		t.Fatal(err)
	}
	b, digest := randomBlob(t, 5000)
	bad := slices.Clone(b)
	bad[100] ^= 1
	if err := put(t, blobs, bad, digest); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Errorf("commit of flipped bytes: %v, want ErrDigestMismatch", err)
	}
	if err := put(t, blobs, b[:4000], digest); !errors.Is(err, storage.ErrDigestMismatch) && !errors.Is(err, storage.ErrSizeMismatch) {
		t.Errorf("commit of short bytes: %v", err)
	}
	w, err := blobs.Create(t.Context(), digest, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Cancel()
	for _, op := range f.opsLog() {
		if !strings.HasPrefix(op, "HEAD bucket") {
			t.Errorf("request to the bucket for unverified bytes: %s", op)
		}
	}
	noLocalBlobs(t, dir)
}

// Blobs over the part size go up in parts and appear only when the upload
// completes; a failed part aborts the upload and nothing is visible.
func TestMultipart(t *testing.T) {
	t.Parallel()
	s, f := newTestStore(t, Config{PartSize: minPartSize})
	dir := t.TempDir()
	blobs, err := storage.OpenObjectBlobs(dir, s, "test bucket")
	if err != nil {
		t.Fatal(err)
	}
	b, digest := randomBlob(t, 2*minPartSize+123)
	f.mu.Lock()
	f.failPart = 2
	f.mu.Unlock()
	if err := put(t, blobs, b, digest); err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("commit with a refused part: %v", err)
	}
	if keys := f.keys(); len(keys) != 0 {
		t.Errorf("objects after a failed multipart upload: %v", keys)
	}
	f.mu.Lock()
	open := len(f.uploads)
	f.failPart = 0
	f.mu.Unlock()
	if open != 0 {
		t.Errorf("%d multipart uploads left after a failure, want them aborted", open)
	}
	if u, _ := blobs.WaitUsage(t.Context()); u.Blobs != 0 {
		t.Errorf("usage after a failed upload: %+v", u)
	}
	noLocalBlobs(t, dir)

	if err := put(t, blobs, b, digest); err != nil {
		t.Fatal(err)
	}
	key := "blobs/sha256/" + digest[7:9] + "/" + digest[7:]
	if got, ok := f.object(key); !ok || !bytes.Equal(got, b) {
		t.Fatalf("object after the multipart upload: present %t", ok)
	}
	var parts int
	for _, op := range f.opsLog() {
		if strings.HasPrefix(op, "PUT part") {
			parts++
		}
	}
	if parts != 2+3 { // the failed upload's first two, then three
		t.Errorf("%d parts sent, want 5: %v", parts, f.opsLog())
	}
	if u, _ := blobs.Usage(); u != (storage.Usage{Bytes: int64(len(b)), Blobs: 1}) {
		t.Errorf("usage: %+v", u)
	}
}

// A PUT carries the digest as its SigV4 payload hash, so the server
// refuses bytes that do not hash to it.
func TestPayloadHashIsDigest(t *testing.T) {
	t.Parallel()
	s, f := newTestStore(t, Config{})
	b, digest := randomBlob(t, 100)
	file := filepath.Join(t.TempDir(), "blob")
	bad := slices.Clone(b)
	bad[0] ^= 1
	if err := os.WriteFile(file, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := s.Put(t.Context(), digest, fh, int64(len(bad))); err == nil {
		t.Fatal("bytes that do not hash to the digest were accepted")
	}
	if keys := f.keys(); len(keys) != 0 {
		t.Errorf("objects: %v", keys)
	}
}

// With redirects, an opened blob offers a presigned URL that holds a
// signature and not the secret key; the URL reads the blob.
func TestRedirect(t *testing.T) {
	t.Parallel()
	for _, redirect := range []bool{false, true} {
		s, _ := newTestStore(t, Config{Redirect: redirect})
		blobs, err := storage.OpenObjectBlobs(t.TempDir(), s, "test bucket")
		if err != nil {
			t.Fatal(err)
		}
		b, digest := randomBlob(t, 2000)
		if err := put(t, blobs, b, digest); err != nil {
			t.Fatal(err)
		}
		body, _, err := blobs.Open(t.Context(), digest)
		if err != nil {
			t.Fatal(err)
		}
		rd, ok := body.(interface {
			Redirect(ctx context.Context) (string, bool, error)
		})
		if !ok {
			t.Fatal("an opened blob offers no Redirect")
		}
		u, ok, err := rd.Redirect(t.Context())
		body.Close()
		if err != nil || ok != redirect {
			t.Fatalf("redirect %t: ok %t, %v", redirect, ok, err)
		}
		if !redirect {
			continue
		}
		if strings.Contains(u, testSecret) || !strings.Contains(u, "X-Amz-Signature=") || !strings.Contains(u, "X-Amz-Expires=300") {
			t.Errorf("presigned URL %q: want a signature valid 300s, without the secret", u)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("GET of the presigned URL: %d bytes, %v", len(got), err)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	ok := Config{Bucket: "b", AccessKeyID: "id", SecretAccessKey: testSecret}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no bucket", func(c *Config) { c.Bucket = "" }, "no bucket"},
		{"bad endpoint", func(c *Config) { c.Endpoint = "ftp://x" }, `endpoint "ftp://x"`},
		{"no secret", func(c *Config) { c.SecretAccessKey = "" }, "no credentials"},
		{"small parts", func(c *Config) { c.PartSize = 1 << 20 }, "part size"},
	} {
		cfg := ok
		c.edit(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), testSecret) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

func TestCheckNamesMissingBucket(t *testing.T) {
	t.Parallel()
	f := newFakeS3(t, testBucket)
	s, err := New(Config{Endpoint: f.URL, Bucket: "other", PathStyle: true, AccessKeyID: "id", SecretAccessKey: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "other") || strings.Contains(err.Error(), testSecret) {
		t.Errorf("check of a missing bucket: %v", err)
	}
}

// fsck of a store in a bucket hashes every object; with repair a corrupt
// one is copied to the quarantine and removed, so the next pull fetches it
// again.
func TestCheckObjects(t *testing.T) {
	t.Parallel()
	s, f := newTestStore(t, Config{})
	dir := t.TempDir()
	blobs, err := storage.OpenObjectBlobs(filepath.Join(dir, "blobs"), s, "test bucket")
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	good, goodDigest := randomBlob(t, 3000)
	bad, badDigest := randomBlob(t, 2000)
	for _, b := range []struct {
		bytes  []byte
		digest string
	}{{good, goodDigest}, {bad, badDigest}} {
		if err := put(t, blobs, b.bytes, b.digest); err != nil {
			t.Fatal(err)
		}
	}
	key := "blobs/sha256/" + badDigest[7:9] + "/" + badDigest[7:]
	damaged := slices.Clone(bad)
	damaged[10] ^= 1
	f.mu.Lock()
	f.objects[key] = damaged
	f.mu.Unlock()

	checker := storage.NewChecker(blobs, meta, filepath.Join(dir, "quarantine"))
	r, err := checker.Check(t.Context(), storage.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Blobs != 2 || r.BlobBytes != 5000 || r.CorruptBlobs != 1 || r.Problems[0].Digest != badDigest || r.OK() {
		t.Fatalf("check: %+v; want 2 blobs, %s corrupt", r, badDigest)
	}
	if _, ok := f.object(key); !ok {
		t.Fatal("a check without repair removed the corrupt object")
	}
	r, err = checker.Check(t.Context(), storage.CheckOptions{Repair: true})
	if err != nil || r.Repaired != 1 || !r.OK() {
		t.Fatalf("repair: %+v, %v", r, err)
	}
	if _, ok := f.object(key); ok {
		t.Error("the corrupt object is still in the bucket after the repair")
	}
	if _, ok := f.object("blobs/sha256/" + goodDigest[7:9] + "/" + goodDigest[7:]); !ok {
		t.Error("the repair removed a good object")
	}
	moved, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*", "sha256", badDigest[7:9], badDigest[7:]))
	if len(moved) != 1 {
		t.Fatalf("quarantined files: %v", moved)
	}
	if b, err := os.ReadFile(moved[0]); err != nil || !bytes.Equal(b, damaged) {
		t.Errorf("the quarantined copy is not the object's bytes: %v", err)
	}
	if u, _ := blobs.WaitUsage(t.Context()); u != (storage.Usage{Bytes: 3000, Blobs: 1}) {
		t.Errorf("usage after the repair: %+v", u)
	}
}

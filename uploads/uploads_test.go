package uploads

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/storage"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

type fixture struct {
	dir   string
	blobs *storage.Blobs
	meta  *storage.Meta
	s     *Sessions
}

// open opens (or reopens, as after a restart) the stores in dir.
func open(t *testing.T, dir string, idle time.Duration) *fixture {
	t.Helper()
	return openWith(t, dir, Options{IdleTimeout: idle})
}

// openWith is open with the given options.
func openWith(t *testing.T, dir string, opts Options) *fixture {
	t.Helper()
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(t.Context(), blobs, meta, opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, blobs: blobs, meta: meta, s: s}
}

func TestChunkedUploadSurvivesRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	f := open(t, dir, 0)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	id, err := f.s.Start(ctx, "lab/app")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.s.Write(ctx, "lab/app", id, 0, 1000, bytes.NewReader(data[:1000])); err != nil || n != 1000 {
		t.Fatalf("first chunk: %d, %v", n, err)
	}
	// Out of order: refused with the offset, nothing written.
	_, err = f.s.Write(ctx, "lab/app", id, 2000, 10, bytes.NewReader(data[2000:2010]))
	var re *RangeError
	if !errors.As(err, &re) || re.Offset != 1000 || !errors.Is(err, ErrRange) {
		t.Fatalf("out-of-order chunk: %v, want a RangeError at 1000", err)
	}
	// The same first chunk again is out of order too.
	if _, err := f.s.Write(ctx, "lab/app", id, 0, 1000, bytes.NewReader(data[:1000])); !errors.Is(err, ErrRange) {
		t.Fatalf("repeated chunk: %v", err)
	}
	// Another repository does not see the session.
	if _, err := f.s.Status(ctx, "lab/other", id); !errors.Is(err, ErrUnknown) {
		t.Fatalf("status from another repository: %v", err)
	}
	f.meta.Close()

	f = open(t, dir, 0) // restart
	defer f.meta.Close()
	if n, err := f.s.Status(ctx, "lab/app", id); err != nil || n != 1000 {
		t.Fatalf("status after restart: %d, %v", n, err)
	}
	if n, err := f.s.Write(ctx, "lab/app", id, -1, -1, bytes.NewReader(data[1000:5000])); err != nil || n != 5000 {
		t.Fatalf("streamed chunk: %d, %v", n, err)
	}
	size, err := f.s.Commit(ctx, "lab/app", id, digestOf(data), 5000, int64(len(data)-5000), bytes.NewReader(data[5000:]))
	if err != nil || size != int64(len(data)) {
		t.Fatalf("commit: %d, %v", size, err)
	}
	if got, err := f.blobs.Stat(ctx, digestOf(data)); err != nil || got != int64(len(data)) {
		t.Fatalf("committed blob: %d, %v", got, err)
	}
	if _, err := f.s.Status(ctx, "lab/app", id); !errors.Is(err, ErrUnknown) {
		t.Fatalf("status after commit: %v", err)
	}
	if recs, _ := f.meta.Records(ctx, recordKind); len(recs) != 0 {
		t.Fatalf("session records left: %v", recs)
	}
}

func TestCommitWrongDigestEndsSession(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := open(t, t.TempDir(), 0)
	defer f.meta.Close()
	id, err := f.s.Start(ctx, "lab/app")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("hello")
	if _, err := f.s.Commit(ctx, "lab/app", id, digestOf([]byte("other")), -1, -1, bytes.NewReader(data)); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("commit with a wrong digest: %v", err)
	}
	if _, err := f.blobs.Stat(ctx, digestOf(data)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unverified bytes visible: %v", err)
	}
	if _, err := f.s.Status(ctx, "lab/app", id); !errors.Is(err, ErrUnknown) {
		t.Fatalf("session after a failed commit: %v", err)
	}
	// A short final chunk keeps the session.
	id, _ = f.s.Start(ctx, "lab/app")
	if _, err := f.s.Commit(ctx, "lab/app", id, digestOf(data), 0, 10, strings.NewReader("hello")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short final chunk: %v", err)
	}
	if n, err := f.s.Status(ctx, "lab/app", id); err != nil || n != 5 {
		t.Fatalf("status after a short final chunk: %d, %v", n, err)
	}
	if err := f.s.Cancel(ctx, "lab/app", id); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Cancel(ctx, "lab/app", id); !errors.Is(err, ErrUnknown) {
		t.Fatalf("second cancel: %v", err)
	}
}

func TestExpireIdleSessions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := open(t, t.TempDir(), time.Hour)
	defer f.meta.Close()
	idle, _ := f.s.Start(ctx, "lab/app")
	fresh, _ := f.s.Start(ctx, "lab/app")
	f.s.Write(ctx, "lab/app", idle, 0, 3, strings.NewReader("abc"))
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(f.dir, "blobs", "uploads", idle, "data"), old, old); err != nil {
		t.Fatal(err)
	}
	// Bytes that belong to no session (a crash before the record).
	if _, err := f.blobs.CreateUpload(ctx, "orphan-upload"); err != nil {
		t.Fatal(err)
	}
	n, err := f.s.Expire(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Expire = %d, %v; want the idle session and the orphan", n, err)
	}
	if _, err := f.s.Status(ctx, "lab/app", idle); !errors.Is(err, ErrUnknown) {
		t.Fatalf("idle session survives: %v", err)
	}
	if _, err := f.s.Status(ctx, "lab/app", fresh); err != nil {
		t.Fatalf("fresh session expired: %v", err)
	}
	if ups, _ := f.blobs.Uploads(ctx); len(ups) != 1 || ups[0].ID != fresh {
		t.Fatalf("uploads on disk: %+v", ups)
	}
}

// A session a request is writing to is never expired, however old its
// bytes look.
func TestExpireSkipsBusySession(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := open(t, t.TempDir(), time.Hour)
	defer f.meta.Close()
	id, _ := f.s.Start(ctx, "lab/app")
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(filepath.Join(f.dir, "blobs", "uploads", id, "data"), old, old)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := f.s.Write(ctx, "lab/app", id, -1, -1, pr)
		done <- err
	}()
	pw.Write([]byte("first")) // returns once the writer is copying: the session is busy
	if n, err := f.s.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("Expire during a write = %d, %v; want 0", n, err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, err := f.s.Status(ctx, "lab/app", id); err != nil || n != 5 {
		t.Fatalf("status: %d, %v", n, err)
	}
}

// An upload past MaxSize is refused, declared or streamed, and its session
// dropped with its bytes; one at the cap commits.
func TestMaxSize(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := openWith(t, t.TempDir(), Options{MaxSize: 1000})
	data := bytes.Repeat([]byte("x"), 1001)
	for _, tc := range []struct {
		name   string
		length int64 // declared; -1 streamed
	}{{"declared", 1001}, {"streamed", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := f.s.Start(ctx, "lab/app")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.s.Write(ctx, "lab/app", id, 0, 600, bytes.NewReader(data[:600])); err != nil {
				t.Fatal(err)
			}
			_, err = f.s.Write(ctx, "lab/app", id, 600, tc.length, bytes.NewReader(data[600:]))
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "1000") {
				t.Fatalf("writing past the cap: %v, want ErrTooLarge naming the limit", err)
			}
			if _, err := f.s.Status(ctx, "lab/app", id); !errors.Is(err, ErrUnknown) {
				t.Errorf("the session outlived the refusal: %v", err)
			}
		})
	}
	id, err := f.s.Start(ctx, "lab/app")
	if err != nil {
		t.Fatal(err)
	}
	exact := data[:1000]
	if _, err := f.s.Commit(ctx, "lab/app", id, digestOf(exact), 0, -1, bytes.NewReader(exact)); err != nil {
		t.Fatalf("an upload of exactly the cap: %v", err)
	}
	if ups, _ := f.blobs.Uploads(ctx); len(ups) != 0 {
		t.Errorf("uploads left behind: %v", ups)
	}
}

// TestIDSuffix: with IDSuffix every session ID ends in it (URL safe, and
// accepted by the store); Exists knows a session only in its repository;
// a suffix that is not lowercase letters and digits is refused.
func TestIDSuffix(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := openWith(t, t.TempDir(), Options{IDSuffix: "a1b2c3d4e5f6"})
	defer f.meta.Close()
	id, err := f.s.Start(ctx, "team/app")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(id, "-a1b2c3d4e5f6") || len(id) != 32+1+12 {
		t.Fatalf("session id %q: want 32 hex digits, '-', the suffix", id)
	}
	if !f.s.Exists("team/app", id) || f.s.Exists("team/other", id) || f.s.Exists("team/app", id+"x") {
		t.Fatalf("Exists: want the session in team/app only")
	}
	if _, err := f.s.Write(ctx, "team/app", id, 0, 3, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Commit(ctx, "team/app", id, digestOf([]byte("abc")), -1, 0, nil); err != nil {
		t.Fatal(err)
	}
	if f.s.Exists("team/app", id) {
		t.Fatal("Exists after commit: want false")
	}
	for _, bad := range []string{"A1", "a-b", "a/b", strings.Repeat("a", 17)} {
		blobs, _ := storage.OpenBlobs(filepath.Join(t.TempDir(), "blobs"))
		_, err := New(ctx, blobs, f.meta, Options{IDSuffix: bad}, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("IDSuffix %q: err %v, want a refusal naming it", bad, err)
		}
	}
}

package storage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUploadResumeAndCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := payload(300 << 10)
	w, err := b.CreateUpload(ctx, "upload-0001")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateUpload(ctx, "upload-0001"); !errors.Is(err, ErrUploadExists) {
		t.Fatalf("second CreateUpload = %v, want ErrUploadExists", err)
	}
	if _, err := w.Write(data[:100<<10]); err != nil {
		t.Fatal(err)
	}
	if err := w.Suspend(); err != nil {
		t.Fatal(err)
	}
	// A new Blobs, as after a restart: the upload survives OpenBlobs.
	b, err = OpenBlobs(b.root)
	if err != nil {
		t.Fatal(err)
	}
	w, err = b.ResumeUpload(ctx, "upload-0001")
	if err != nil {
		t.Fatal(err)
	}
	if w.Written() != 100<<10 {
		t.Fatalf("resumed at %d, want %d", w.Written(), 100<<10)
	}
	if _, err := w.Write(data[100<<10:]); err != nil {
		t.Fatal(err)
	}
	assertAbsent(t, b, digestOf(data))
	if err := w.CommitAs(digestOf(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	assertContent(t, b, digestOf(data), data)
	if _, err := b.ResumeUpload(ctx, "upload-0001"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ResumeUpload after commit = %v, want ErrNotFound", err)
	}
	if ups, err := b.Uploads(ctx); err != nil || len(ups) != 0 {
		t.Fatalf("Uploads after commit = %v, %v; want none", ups, err)
	}
}

// A process killed after writing bytes but before the checkpoint leaves a
// data file longer than the state says; a power loss may leave it shorter.
// Either way the upload resumes from the bytes on disk, hashed again.
func TestUploadResumeRehashes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dataPath string, data []byte) []byte // returns the bytes now on disk
	}{
		{"more bytes than checkpointed", func(t *testing.T, p string, data []byte) []byte {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(data[1000:1500]); err != nil {
				t.Fatal(err)
			}
			return data[:1500]
		}},
		{"fewer bytes than checkpointed", func(t *testing.T, p string, data []byte) []byte {
			if err := os.Truncate(p, 600); err != nil {
				t.Fatal(err)
			}
			return data[:600]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			b, err := OpenBlobs(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			data := payload(4000)
			w, err := b.CreateUpload(ctx, "upload-0002")
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data[:1000])
			if err := w.Suspend(); err != nil {
				t.Fatal(err)
			}
			have := tc.damage(t, filepath.Join(b.root, "uploads", "upload-0002", "data"), data)
			w, err = b.ResumeUpload(ctx, "upload-0002")
			if err != nil {
				t.Fatal(err)
			}
			if w.Written() != int64(len(have)) {
				t.Fatalf("resumed at %d, want %d", w.Written(), len(have))
			}
			w.Write(data[len(have):])
			if err := w.CommitAs(digestOf(data), -1); err != nil {
				t.Fatalf("commit after re-hash: %v", err)
			}
			assertContent(t, b, digestOf(data), data)
		})
	}
}

func TestUploadCommitVerifies(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := payload(5000)
	for _, tc := range []struct {
		name   string
		digest string
		size   int64
		want   error
	}{
		{"wrong digest", digestOf([]byte("other")), -1, ErrDigestMismatch},
		{"wrong size", digestOf(data), 4999, ErrSizeMismatch},
		{"invalid digest", "sha256:nothex", -1, ErrInvalidDigest},
	} {
		w, err := b.CreateUpload(ctx, "upload-verify")
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.CommitAs(tc.digest, tc.size); !errors.Is(err, tc.want) {
			t.Fatalf("%s: CommitAs = %v, want %v", tc.name, err, tc.want)
		}
		assertAbsent(t, b, digestOf(data))
		if _, err := b.ResumeUpload(ctx, "upload-verify"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: a failed commit must end the upload, ResumeUpload = %v", tc.name, err)
		}
	}
}

func TestUploadsListAndRemove(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.CreateUpload(ctx, "upload-list1")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("12345"))
	w.Suspend()
	ups, err := b.Uploads(ctx)
	if err != nil || len(ups) != 1 || ups[0].ID != "upload-list1" || ups[0].Size != 5 {
		t.Fatalf("Uploads = %+v, %v", ups, err)
	}
	if err := b.RemoveUpload(ctx, "upload-list1"); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveUpload(ctx, "upload-list1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second RemoveUpload = %v, want ErrNotFound", err)
	}
	if _, err := b.ResumeUpload(ctx, "../../etc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ResumeUpload of a path = %v, want ErrNotFound", err)
	}
}

func TestBlobsWalkRemove(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, s := range []string{"a", "bb", "ccc"} {
		if err := b.Put(ctx, digestOf([]byte(s)), int64(len(s)), strings.NewReader(s)); err != nil {
			t.Fatal(err)
		}
		want[digestOf([]byte(s))] = int64(len(s))
	}
	got := map[string]int64{}
	if err := b.Walk(ctx, func(bi BlobInfo) error { got[bi.Digest] = bi.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[digestOf([]byte("bb"))] != 2 {
		t.Fatalf("Walk = %v, want %v", got, want)
	}
	if err := b.Remove(ctx, digestOf([]byte("bb"))); err != nil {
		t.Fatal(err)
	}
	assertAbsent(t, b, digestOf([]byte("bb")))
	if err := b.Remove(ctx, digestOf([]byte("bb"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove = %v", err)
	}
}

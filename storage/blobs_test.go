package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// digestOf returns the sha256 digest string of b.
func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// payload returns n deterministic, non-repeating-looking bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestBlobsFilesystem(t *testing.T) {
	t.Parallel()
	testBlobStore(t, func(t *testing.T) *Blobs {
		t.Helper()
		b, err := OpenBlobs(t.TempDir())
		if err != nil {
			t.Fatalf("OpenBlobs: %v", err)
		}
		return b
	})
}

// testBlobStore is the conformance suite every blob store backend must pass.
// open returns a fresh, empty store for one subtest.
func testBlobStore(t *testing.T, open func(t *testing.T) *Blobs) {
	t.Run("RoundTrip", func(t *testing.T) { t.Parallel(); testBlobRoundTrip(t, open) })
	t.Run("DigestMismatch", func(t *testing.T) { t.Parallel(); testBlobDigestMismatch(t, open) })
	t.Run("SizeMismatch", func(t *testing.T) { t.Parallel(); testBlobSizeMismatch(t, open) })
	t.Run("UnknownSize", func(t *testing.T) { t.Parallel(); testBlobUnknownSize(t, open) })
	t.Run("InterruptedFill", func(t *testing.T) { t.Parallel(); testBlobInterruptedFill(t, open) })
	t.Run("InvisibleDuringFill", func(t *testing.T) { t.Parallel(); testBlobInvisibleDuringFill(t, open) })
	t.Run("InvalidDigest", func(t *testing.T) { t.Parallel(); testBlobInvalidDigest(t, open) })
	t.Run("WriterLifecycle", func(t *testing.T) { t.Parallel(); testBlobWriterLifecycle(t, open) })
}

// assertAbsent checks that digest is neither statable nor openable.
func assertAbsent(t *testing.T, b *Blobs, digest string) {
	t.Helper()
	if size, err := b.Stat(t.Context(), digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(%s) = %d, %v; want ErrNotFound", digest, size, err)
	}
	f, _, err := b.Open(t.Context(), digest)
	if f != nil {
		f.Close()
	}
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(%s) error = %v; want ErrNotFound", digest, err)
	}
}

// assertContent checks that digest is committed with exactly want as bytes.
func assertContent(t *testing.T, b *Blobs, digest string, want []byte) {
	t.Helper()
	size, err := b.Stat(t.Context(), digest)
	if err != nil {
		t.Fatalf("Stat(%s): %v", digest, err)
	}
	if size != int64(len(want)) {
		t.Errorf("Stat(%s) size = %d, want %d", digest, size, len(want))
	}
	f, size, err := b.Open(t.Context(), digest)
	if err != nil {
		t.Fatalf("Open(%s): %v", digest, err)
	}
	defer f.Close()
	if size != int64(len(want)) {
		t.Errorf("Open(%s) size = %d, want %d", digest, size, len(want))
	}
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read blob %s: %v", digest, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("blob %s content differs: got %d bytes, want %d", digest, len(got), len(want))
	}
}

// assertNoTemp checks that no fill is left in <root>/tmp.
func assertNoTemp(t *testing.T, b *Blobs) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(b.root, "tmp"))
	if err != nil {
		t.Fatalf("read tmp dir: %v", err)
	}
	if len(entries) != 0 {
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		t.Errorf("tmp dir not empty: %v", names)
	}
}

func testBlobRoundTrip(t *testing.T, open func(t *testing.T) *Blobs) {
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"one byte", []byte{0}},
		{"text", []byte("hello, regcache\n")},
		{"1 MiB", payload(1 << 20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			d := digestOf(tt.data)
			assertAbsent(t, b, d)
			if err := b.Put(t.Context(), d, int64(len(tt.data)), bytes.NewReader(tt.data)); err != nil {
				t.Fatalf("Put: %v", err)
			}
			assertContent(t, b, d, tt.data)
			assertNoTemp(t, b)
		})
	}
	t.Run("empty blob digest", func(t *testing.T) {
		t.Parallel()
		const emptySHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		if got := digestOf(nil); got != emptySHA256 {
			t.Fatalf("digestOf(nil) = %s, want %s", got, emptySHA256)
		}
		b := open(t)
		if err := b.Put(t.Context(), emptySHA256, 0, strings.NewReader("")); err != nil {
			t.Fatalf("Put empty: %v", err)
		}
		assertContent(t, b, emptySHA256, nil)
	})
	t.Run("put twice", func(t *testing.T) {
		t.Parallel()
		b := open(t)
		data := payload(100)
		d := digestOf(data)
		for i := range 2 {
			if err := b.Put(t.Context(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Fatalf("Put #%d: %v", i+1, err)
			}
		}
		assertContent(t, b, d, data)
		assertNoTemp(t, b)
	})
}

func testBlobDigestMismatch(t *testing.T, open func(t *testing.T) *Blobs) {
	data := []byte("the real content")
	tests := []struct {
		name   string
		digest string // digest claimed
		body   []byte // bytes actually sent
	}{
		{"other content", digestOf([]byte("something else")), data},
		{"empty body for non-empty digest", digestOf(data), nil},
		{"one bit flipped", digestOf(data), append([]byte("T"), data[1:]...)},
		{"empty digest non-empty body", digestOf(nil), []byte("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			// Claim the size actually sent so only the digest is wrong.
			err := b.Put(t.Context(), tt.digest, int64(len(tt.body)), bytes.NewReader(tt.body))
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("Put error = %v, want ErrDigestMismatch", err)
			}
			assertAbsent(t, b, tt.digest)
			assertAbsent(t, b, digestOf(tt.body))
			assertNoTemp(t, b)
		})
	}
}

func testBlobSizeMismatch(t *testing.T, open func(t *testing.T) *Blobs) {
	data := payload(64)
	d := digestOf(data)
	tests := []struct {
		name string
		size int64
	}{
		{"too short by one", int64(len(data)) + 1},
		{"too short by much", 1 << 20},
		{"too long by one", int64(len(data)) - 1},
		{"too long zero", 0},
	}
	for _, tt := range tests {
		t.Run("Put/"+tt.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			err := b.Put(t.Context(), d, tt.size, bytes.NewReader(data))
			if !errors.Is(err, ErrSizeMismatch) {
				t.Fatalf("Put(size=%d) error = %v, want ErrSizeMismatch", tt.size, err)
			}
			assertAbsent(t, b, d)
			assertNoTemp(t, b)
		})
	}

	// Extra bytes must be refused as they arrive, not only at Commit, so a
	// lying upstream cannot fill the disk.
	t.Run("too long fails at Write", func(t *testing.T) {
		t.Parallel()
		b := open(t)
		w, err := b.Create(t.Context(), d, int64(len(data))-1)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		n, err := w.Write(data[:len(data)-1])
		if err != nil || n != len(data)-1 {
			t.Fatalf("Write within size = %d, %v", n, err)
		}
		n, err = w.Write(data[len(data)-1:])
		if !errors.Is(err, ErrSizeMismatch) {
			t.Fatalf("Write past size error = %v, want ErrSizeMismatch", err)
		}
		if n != 0 {
			t.Errorf("Write past size wrote %d bytes, want 0", n)
		}
		if got := w.Written(); got != int64(len(data))-1 {
			t.Errorf("Written() = %d, want %d", got, len(data)-1)
		}
		if err := w.Commit(); err == nil {
			t.Fatal("Commit after refused Write succeeded")
		}
		assertAbsent(t, b, d)
		assertNoTemp(t, b)
	})
	t.Run("too long in one Write", func(t *testing.T) {
		t.Parallel()
		b := open(t)
		w, err := b.Create(t.Context(), d, 10)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		defer w.Cancel()
		if _, err := w.Write(data); !errors.Is(err, ErrSizeMismatch) {
			t.Fatalf("Write error = %v, want ErrSizeMismatch", err)
		}
		if got := w.Written(); got != 0 {
			t.Errorf("Written() = %d, want 0", got)
		}
	})
}

func testBlobUnknownSize(t *testing.T, open func(t *testing.T) *Blobs) {
	tests := []struct {
		name    string
		data    []byte
		digest  string
		wantErr error
	}{
		{"verified", payload(4096), digestOf(payload(4096)), nil},
		{"verified empty", nil, digestOf(nil), nil},
		{"wrong digest", payload(4096), digestOf(payload(4095)), ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			err := b.Put(t.Context(), tt.digest, -1, bytes.NewReader(tt.data))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put(size=-1) error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				assertAbsent(t, b, tt.digest)
			} else {
				assertContent(t, b, tt.digest, tt.data)
			}
			assertNoTemp(t, b)
		})
	}
}

func testBlobInterruptedFill(t *testing.T, open func(t *testing.T) *Blobs) {
	data := payload(1000)
	d := digestOf(data)
	cuts := []struct {
		name string
		n    int
	}{
		{"0", 0},
		{"1", 1},
		{"half", len(data) / 2},
		{"len-1", len(data) - 1},
	}
	for _, c := range cuts {
		t.Run("cancel/"+c.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			w, err := b.Create(t.Context(), d, int64(len(data)))
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := w.Write(data[:c.n]); err != nil {
				t.Fatalf("Write: %v", err)
			}
			w.Cancel()
			assertAbsent(t, b, d)
			assertNoTemp(t, b)
			if err := w.Commit(); err == nil {
				t.Error("Commit after Cancel succeeded")
			}
			assertAbsent(t, b, d)
			assertNoTemp(t, b)
		})
		t.Run("crash/"+c.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			w, err := b.Create(t.Context(), d, int64(len(data)))
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			// Release the descriptor at the end only; the writer is
			// otherwise abandoned, as after a crash.
			t.Cleanup(func() { w.f.Close() })
			if _, err := w.Write(data[:c.n]); err != nil {
				t.Fatalf("Write: %v", err)
			}
			assertAbsent(t, b, d)

			reopened, err := OpenBlobs(b.root)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			assertNoTemp(t, reopened)
			assertAbsent(t, reopened, d)

			// The store still works after recovery.
			if err := reopened.Put(t.Context(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Fatalf("Put after recovery: %v", err)
			}
			assertContent(t, reopened, d, data)
		})
	}
	t.Run("reader error", func(t *testing.T) {
		t.Parallel()
		b := open(t)
		boom := errors.New("upstream connection reset")
		r := io.MultiReader(bytes.NewReader(data[:len(data)/2]), iotestErrReader{boom})
		err := b.Put(t.Context(), d, int64(len(data)), r)
		if !errors.Is(err, boom) {
			t.Fatalf("Put error = %v, want %v", err, boom)
		}
		assertAbsent(t, b, d)
		assertNoTemp(t, b)
	})
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

// testBlobInvisibleDuringFill checks, with readers racing the writer, that
// a blob never shows under its digest before Commit.
func testBlobInvisibleDuringFill(t *testing.T, open func(t *testing.T) *Blobs) {
	b := open(t)
	data := payload(64 << 10)
	d := digestOf(data)
	w, err := b.Create(t.Context(), d, int64(len(data)))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer w.Cancel()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := b.Stat(t.Context(), d); !errors.Is(err, ErrNotFound) {
					t.Errorf("Stat during fill = %v, want ErrNotFound", err)
					return
				}
				f, _, err := b.Open(t.Context(), d)
				if f != nil {
					f.Close()
				}
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("Open during fill = %v, want ErrNotFound", err)
					return
				}
			}
		})
	}
	const chunk = 512
	for off := 0; off < len(data); off += chunk {
		if _, err := w.Write(data[off:min(off+chunk, len(data))]); err != nil {
			t.Fatalf("Write at %d: %v", off, err)
		}
	}
	close(stop)
	wg.Wait()

	assertAbsent(t, b, d)
	if err := w.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	assertContent(t, b, d, data)
	assertNoTemp(t, b)
}

func testBlobInvalidDigest(t *testing.T, open func(t *testing.T) *Blobs) {
	b := open(t)
	valid := digestOf([]byte("x"))
	for _, tt := range invalidDigests(valid) {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := b.Stat(t.Context(), tt.digest); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Stat(%q) error = %v, want ErrInvalidDigest", tt.digest, err)
			}
			f, _, err := b.Open(t.Context(), tt.digest)
			if f != nil {
				f.Close()
			}
			if !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Open(%q) error = %v, want ErrInvalidDigest", tt.digest, err)
			}
			w, err := b.Create(t.Context(), tt.digest, 1)
			if w != nil {
				w.Cancel()
			}
			if !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Create(%q) error = %v, want ErrInvalidDigest", tt.digest, err)
			}
			if err := b.Put(t.Context(), tt.digest, 1, strings.NewReader("x")); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Put(%q) error = %v, want ErrInvalidDigest", tt.digest, err)
			}
		})
	}
	// Runs after the parallel subtests above have finished.
	t.Cleanup(func() { assertNoTemp(t, b) })
}

type digestCase struct {
	name   string
	digest string
}

// invalidDigests lists digest strings the store must refuse; valid is a
// well-formed sha256 digest they are derived from.
func invalidDigests(valid string) []digestCase {
	hexPart := strings.TrimPrefix(valid, "sha256:")
	return []digestCase{
		{"empty", ""},
		{"prefix only", "sha256:"},
		{"missing prefix", hexPart},
		{"missing colon", "sha256" + hexPart},
		{"uppercase hex", "sha256:" + strings.ToUpper(hexPart)},
		{"uppercase algorithm", "SHA256:" + hexPart},
		{"short", "sha256:" + hexPart[:63]},
		{"long", "sha256:" + hexPart + "0"},
		{"non-hex", "sha256:" + strings.Repeat("g", 64)},
		{"sha512", "sha512:" + hexPart + hexPart},
		{"sha512 short", "sha512:" + hexPart},
		{"path traversal", "sha256:../../etc"},
		{"path traversal 64 chars", "sha256:" + strings.Repeat("../", 18) + "etc/passwd"},
		{"slash in hex", "sha256:" + hexPart[:32] + "/" + hexPart[33:]},
		{"trailing newline", valid + "\n"},
		{"leading space", " " + valid},
	}
}

func TestParseDigest(t *testing.T) {
	t.Parallel()
	valid := digestOf([]byte("x"))
	tests := []struct {
		name    string
		in      string
		wantHex string
		wantErr bool
	}{
		{"valid", valid, strings.TrimPrefix(valid, "sha256:"), false},
		{"empty blob", digestOf(nil), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", false},
		{"all zero", "sha256:" + strings.Repeat("0", 64), strings.Repeat("0", 64), false},
	}
	for _, c := range invalidDigests(valid) {
		tests = append(tests, struct {
			name    string
			in      string
			wantHex string
			wantErr bool
		}{c.name, c.digest, "", true})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseDigest(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidDigest) {
					t.Fatalf("ParseDigest(%q) = %q, %v; want ErrInvalidDigest", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDigest(%q): %v", tt.in, err)
			}
			if got != tt.wantHex {
				t.Errorf("ParseDigest(%q) = %q, want %q", tt.in, got, tt.wantHex)
			}
		})
	}
}

func testBlobWriterLifecycle(t *testing.T, open func(t *testing.T) *Blobs) {
	data := []byte("committed once")
	d := digestOf(data)
	tests := []struct {
		name  string
		after func(t *testing.T, w *Writer)
	}{
		{"commit twice errors", func(t *testing.T, w *Writer) {
			if err := w.Commit(); err == nil {
				t.Error("second Commit succeeded, want error")
			}
		}},
		{"cancel after commit is harmless", func(t *testing.T, w *Writer) {
			w.Cancel()
			w.Cancel()
		}},
		{"write after commit errors", func(t *testing.T, w *Writer) {
			if _, err := w.Write([]byte("more")); err == nil {
				t.Error("Write after Commit succeeded, want error")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			w, err := b.Create(t.Context(), d, int64(len(data)))
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := w.Write(data); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if err := w.Commit(); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			tt.after(t, w)
			assertContent(t, b, d, data)
			assertNoTemp(t, b)
		})
	}
}

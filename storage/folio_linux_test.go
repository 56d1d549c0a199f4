//go:build linux

package storage

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"unsafe"
)

// largeFolioShare returns the share of path's pages that the page cache
// holds in folios larger than a page, read from /proc/self/pagemap and
// /proc/kpageflags (root only); ok is false when they cannot be read.
func largeFolioShare(t *testing.T, path string) (share float64, ok bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	m, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, false
	}
	defer pagemap.Close()
	flags, err := os.Open("/proc/kpageflags")
	if err != nil {
		return 0, false
	}
	defer flags.Close()
	const compoundHead, compoundTail = 1 << 15, 1 << 16 // KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL
	var entry [8]byte
	pages, large := 0, 0
	base := uintptr(unsafe.Pointer(&m[0]))
	var sink byte
	for off := 0; off < len(m); off += page {
		sink += m[off] // map the page
		if _, err := pagemap.ReadAt(entry[:], int64((base+uintptr(off))/uintptr(page))*8); err != nil {
			return 0, false
		}
		pfn := binary.LittleEndian.Uint64(entry[:]) & (1<<55 - 1)
		if pfn == 0 { // not present, or PFNs hidden from this user
			return 0, false
		}
		if _, err := flags.ReadAt(entry[:], int64(pfn)*8); err != nil {
			return 0, false
		}
		pages++
		if binary.LittleEndian.Uint64(entry[:])&(compoundHead|compoundTail) != 0 {
			large++
		}
	}
	runtime.KeepAlive(sink)
	return float64(large) / float64(pages), true
}

// writeIn writes body to a new file of dir in writes of n bytes.
func writeIn(t *testing.T, dir string, body []byte, n int) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "folios-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := 0; off < len(body); off += n {
		if _, err := f.Write(body[off:min(off+n, len(body))]); err != nil {
			t.Fatal(err)
		}
	}
	return f.Name()
}

// TestBlobsAreWrittenInLargeFolios: a blob that arrives in the 4 KiB
// pieces of socket reads is still written in writeUnit writes, so the page
// cache holds it in large folios, as if it had been written at once. The
// kernel's part is checked first on the same filesystem: a file written
// in 4 KiB writes is in single pages, one written in writeUnit writes is
// not. A kernel or filesystem without large folios (before Linux 6.16 on
// ext4) skips the test, saying so.
func TestBlobsAreWrittenInLargeFolios(t *testing.T) {
	dir := t.TempDir()
	body := randomBytes(4 * writeUnit)
	small, ok := largeFolioShare(t, writeIn(t, dir, body, 4096))
	if !ok {
		t.Skip("page flags are not readable here (/proc/kpageflags needs root)")
	}
	big, _ := largeFolioShare(t, writeIn(t, dir, body, writeUnit))
	if small > 0.1 || big < 0.9 {
		t.Skipf("this kernel and filesystem (%s) do not size page-cache folios by the write: %.0f%% of the pages of a file written in 4 KiB writes are in large folios, %.0f%% of one written in %d KiB writes", dir, 100*small, 100*big, writeUnit>>10)
	}

	b, err := OpenBlobs(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	digest := digestOf(body)
	w, err := b.Create(t.Context(), digest, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, &chunkReader{b: body, sizes: []int{4096}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	p, err := b.path(digest)
	if err != nil {
		t.Fatal(err)
	}
	if share, _ := largeFolioShare(t, p); share < 0.9 {
		t.Errorf("a blob that arrived in 4 KiB pieces: %.0f%% of its pages in large folios, want at least 90%% (%.0f%% for a file written in 4 KiB writes)", 100*share, 100*small)
	}
}

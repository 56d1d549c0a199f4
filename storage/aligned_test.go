package storage

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// chunkReader yields its bytes in pieces of the sizes listed, in turn, as
// socket reads do.
type chunkReader struct {
	b     []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.b), r.sizes[r.i%len(r.sizes)])
	r.i++
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// writeLog records the writes of a copy.
type writeLog struct {
	mu     sync.Mutex
	data   bytes.Buffer
	writes []int
}

func (l *writeLog) write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, len(p))
	return l.data.Write(p)
}

func (l *writeLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.writes)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// TestCopyEndsWritesOnBoundaries: whatever pieces the reader yields, and
// wherever the file starts (a resumed upload), every write but the last
// ends on a writeUnit boundary of the file, and the bytes are the
// reader's.
func TestCopyEndsWritesOnBoundaries(t *testing.T) {
	body := randomBytes(3*writeUnit + 12345)
	for _, offset := range []int64{0, 1000, writeUnit - 1, 5 * writeUnit} {
		for _, sizes := range [][]int{{4096}, {1448, 65536, 3}, {writeUnit + 7}} {
			var l writeLog
			n, err := copyAligned(l.write, &chunkReader{b: body, sizes: sizes}, offset, -1, 0, nil)
			if err != nil || n != int64(len(body)) || !bytes.Equal(l.data.Bytes(), body) {
				t.Fatalf("offset %d, pieces %v: %d bytes, %v; the bytes differ: %t", offset, sizes, n, err, !bytes.Equal(l.data.Bytes(), body))
			}
			pos := offset
			for i, w := range l.writes {
				pos += int64(w)
				if i < len(l.writes)-1 && pos%writeUnit != 0 {
					t.Fatalf("offset %d, pieces %v: write %d of %v ends at %d, not on a %d boundary", offset, sizes, i, l.writes, pos, writeUnit)
				}
			}
		}
	}
}

// TestWriterReadFrom: a Writer is an io.ReaderFrom, so io.Copy into it
// takes copyAligned (whose writes TestCopyEndsWritesOnBoundaries checks,
// and whose effect on the page cache TestBlobsAreWrittenInLargeFolios
// does), and a blob copied in 4 KiB pieces commits with its digest.
func TestWriterReadFrom(t *testing.T) {
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	body := randomBytes(writeUnit + 999)
	digest := digestOf(body)
	w, err := b.Create(t.Context(), digest, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := io.Writer(w).(io.ReaderFrom); !ok {
		t.Fatal("a Writer is not an io.ReaderFrom: io.Copy writes the reader's pieces as they come")
	}
	if n, err := io.Copy(w, &chunkReader{b: body, sizes: []int{4096}}); err != nil || n != int64(len(body)) {
		t.Fatalf("copy: %d, %v", n, err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Stat(t.Context(), digest); err != nil || n != int64(len(body)) {
		t.Fatalf("stat: %d, %v", n, err)
	}
}

// gatedReader yields first, then blocks until release is closed, then
// yields rest and EOF.
type gatedReader struct {
	first, rest []byte
	release     chan struct{}
	step, off   int
}

func (r *gatedReader) Read(p []byte) (int, error) {
	switch r.step++; r.step {
	case 1:
		return copy(p, r.first), nil
	case 2:
		<-r.release
	}
	if r.off == len(r.rest) {
		return 0, io.EOF
	}
	n := copy(p, r.rest[r.off:])
	r.off += n
	return n, nil
}

// TestFollowWritesHeldBytes: bytes that wait for their aligned write are
// written once they waited hold, while the reader still blocks, and
// readers are told; bytes that keep coming are written only on
// boundaries.
func TestFollowWritesHeldBytes(t *testing.T) {
	const hold = 50 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		var l writeLog
		var landed []int64
		var mu sync.Mutex
		r := &gatedReader{first: randomBytes(100), rest: randomBytes(writeUnit), release: make(chan struct{})}
		done := make(chan error)
		go func() {
			_, err := copyAligned(l.write, r, 0, -1, hold, func(n int64) { mu.Lock(); landed = append(landed, n); mu.Unlock() })
			done <- err
		}()
		time.Sleep(hold - time.Millisecond)
		synctest.Wait()
		if n := l.count(); n != 0 {
			t.Fatalf("%d writes before the bytes waited %v", n, hold)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		mu.Lock()
		got := append([]int64(nil), landed...)
		mu.Unlock()
		if l.count() != 1 || len(got) != 1 || got[0] != 100 {
			t.Fatalf("after %v with the reader blocked: writes %v, landed %v; want the 100 bytes read", hold, l.writes, got)
		}
		close(r.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// The rest: up to the boundary, then the tail at EOF.
		if want := []int{100, writeUnit - 100, 100}; !equalInts(l.writes, want) {
			t.Errorf("writes %v, want %v", l.writes, want)
		}
		if !bytes.Equal(l.data.Bytes(), append(append([]byte(nil), r.first...), r.rest...)) {
			t.Error("the bytes written are not the reader's")
		}

		// A fast reader: no time passes, every write ends on a boundary.
		var fast writeLog
		body := randomBytes(2*writeUnit + 5)
		if _, err := copyAligned(fast.write, &chunkReader{b: body, sizes: []int{1448}}, 0, -1, hold, nil); err != nil {
			t.Fatal(err)
		}
		if want := []int{writeUnit, writeUnit, 5}; !equalInts(fast.writes, want) {
			t.Errorf("fast reader: writes %v, want %v", fast.writes, want)
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// failingReader yields b, then fails.
type failingReader struct {
	b    []byte
	done bool
}

var errReset = errors.New("connection reset")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, errReset
	}
	r.done = true
	return copy(p, r.b), nil
}

// TestCopyWritesWhatWasReadBeforeAnError: a fill resumes from the bytes
// written, so a read error must not lose the bytes read before it; a
// write error ends the copy with that error.
func TestCopyWritesWhatWasReadBeforeAnError(t *testing.T) {
	var l writeLog
	n, err := copyAligned(l.write, &failingReader{b: randomBytes(777)}, 0, -1, time.Hour, nil)
	if !errors.Is(err, errReset) || n != 777 || l.data.Len() != 777 {
		t.Errorf("read error: %d written (%d in the file), %v; want 777 and the read's error", n, l.data.Len(), err)
	}
	errFull := errors.New("no space left on device")
	n, err = copyAligned(func(p []byte) (int, error) { return 10, errFull }, &chunkReader{b: randomBytes(writeUnit * 2), sizes: []int{writeUnit}}, 0, -1, 0, nil)
	if !errors.Is(err, errFull) || n != 10 {
		t.Errorf("write error: %d, %v; want 10 and the write's error", n, err)
	}
}

// TestSmallBlobSmallBuffer: a copy into a blob of known small size
// buffers that size (and one byte more), not writeUnit; its writes still
// end on boundaries, and a source longer than the size still fails.
func TestSmallBlobSmallBuffer(t *testing.T) {
	body := randomBytes(1000)
	for _, offset := range []int64{0, writeUnit - 10} {
		var l writeLog
		n, err := copyAligned(l.write, &chunkReader{b: body, sizes: []int{100}}, offset, int64(len(body)), 0, nil)
		want := []int{1000}
		if offset != 0 {
			want = []int{10, 990}
		}
		if err != nil || n != 1000 || !bytes.Equal(l.data.Bytes(), body) || !equalInts(l.writes, want) {
			t.Errorf("offset %d: %d bytes, %v, writes %v (want %v)", offset, n, err, l.writes, want)
		}
	}

	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.Create(t.Context(), digestOf(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = io.Copy(w, &chunkReader{b: body, sizes: []int{100}})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got >= 64<<10 {
		t.Errorf("copying a 1000-byte blob allocated %d bytes", got)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}

	w, err = b.Create(t.Context(), digestOf(body[:999]), 999)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Cancel()
	if _, err := io.Copy(w, &chunkReader{b: body, sizes: []int{100}}); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("1000 bytes into a 999-byte blob: %v, want a size mismatch", err)
	}
}

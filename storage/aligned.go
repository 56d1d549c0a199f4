package storage

import (
	"io"
	"sync"
	"time"
)

// writeUnit is the size and alignment of the writes a Writer makes when it
// copies from a reader. On Linux 6.x (ext4 since 6.16, XFS) a buffered
// write is backed by page-cache folios no larger than the write and no
// larger than its position's alignment: a blob written in the pieces
// socket reads return ends up in 4-16 KiB folios, and every later sendfile
// of it looks up sixteen times as many (a quarter of the CPU of serving it
// warm, against 2% for 256 KiB writes). Page-cache folios of a file stay
// as they were written until the file leaves the cache.
const writeUnit = 256 << 10

// ReadFrom copies r into the blob until EOF in writes that end on
// writeUnit boundaries of the file (the last one excepted); io.Copy into a
// Writer uses it. It returns the bytes written.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	return copyAligned(w.Write, r, w.n, w.remaining(), 0, nil)
}

// Follow is ReadFrom for a file that readers follow as it grows: bytes
// wait for their aligned write at most hold (a timer writes them then,
// even while r blocks), and landed, when not nil, is told of every write
// as it is made (from the goroutine that made it). A read error ends the
// copy after the bytes read before it are written.
func (w *Writer) Follow(r io.Reader, hold time.Duration, landed func(n int64)) (int64, error) {
	return copyAligned(w.Write, r, w.n, w.remaining(), hold, landed)
}

// remaining is how many bytes the blob still expects, or -1 when its size
// is unknown.
func (w *Writer) remaining() int64 {
	if w.size < 0 {
		return -1
	}
	return max(w.size-w.n, 0)
}

// aligned is one copy of copyAligned. buf[start:end] was read and is not
// written yet; the next read goes to buf[end:limit], where limit is the
// next writeUnit boundary of the file. A timer may write buf[start:end]
// while that read runs: the two touch different bytes of buf.
type aligned struct {
	write  func([]byte) (int, error)
	landed func(int64)

	mu                sync.Mutex
	buf               []byte
	start, end, limit int
	written           int64
	err               error // the first write error
	done              bool  // the copy returned: the timer writes no more
}

// copyAligned copies src to write, whose file is at offset, as described
// at ReadFrom and Follow (hold 0: no timer). When the bytes still expected
// (remaining, -1: unknown) fit in less than writeUnit, the buffer holds
// them and one byte more (a longer source fails at write's size check),
// not writeUnit: a config blob does not cost 256 KiB.
func copyAligned(write func([]byte) (int, error), src io.Reader, offset, remaining int64, hold time.Duration, landed func(int64)) (int64, error) {
	size := writeUnit
	if remaining >= 0 && remaining < writeUnit {
		size = int(remaining) + 1
	}
	a := &aligned{write: write, landed: landed, buf: make([]byte, size)}
	a.limit = min(writeUnit-int(offset%writeUnit), size)
	var timer *time.Timer
	if hold > 0 {
		timer = time.AfterFunc(hold, a.writeHeld)
		timer.Stop()
	}
	defer func() {
		a.mu.Lock()
		a.done = true
		a.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		a.mu.Lock()
		end, limit := a.end, a.limit
		a.mu.Unlock()
		k, rerr := src.Read(a.buf[end:limit])
		a.mu.Lock()
		held := a.start < a.end
		a.end += k
		switch {
		case rerr != nil:
			a.writePending()
		case a.end == a.limit:
			a.writePending()
			a.start, a.end, a.limit = 0, 0, len(a.buf)
			if timer != nil {
				timer.Stop()
			}
		case !held && a.end > a.start && timer != nil:
			timer.Reset(hold)
		}
		written, werr := a.written, a.err
		a.mu.Unlock()
		switch {
		case werr != nil:
			return written, werr
		case rerr == io.EOF:
			return written, nil
		case rerr != nil:
			return written, rerr
		}
	}
}

// writeHeld is the timer's: it writes what waited hold for its aligned
// write.
func (a *aligned) writeHeld() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.done {
		a.writePending()
	}
}

// writePending writes buf[start:end]; the caller holds mu.
func (a *aligned) writePending() {
	if a.err != nil || a.start == a.end {
		return
	}
	n, err := a.write(a.buf[a.start:a.end])
	a.start += n
	a.written += int64(n)
	if n > 0 && a.landed != nil {
		a.landed(int64(n))
	}
	if err == nil && a.start < a.end {
		err = io.ErrShortWrite
	}
	a.err = err
}

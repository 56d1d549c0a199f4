// Package logsink owns the output of regcache's log: a Writer that takes
// each line into memory and writes it from a goroutine of its own, so that
// a request never waits for the log's output (a terminal, a pipe to a
// container runtime, a file) to accept its access log line.
//
// Lines are not held back: the writing goroutine wakes for the first line,
// lets the goroutines ready to run go first (on a busy server, requests
// about to log their own lines) and writes what has gathered by then;
// while it writes, the lines of other requests gather and go out together
// in its next write. A busy server thus makes one write for many lines,
// an idle one writes each line as it comes. Only when the output stops
// accepting lines and MaxPending bytes wait does a Write block (nothing is
// dropped).
package logsink

import (
	"io"
	"runtime"
	"sync"
)

// MaxPending is how many bytes may wait for the output before a Write
// blocks until it accepted some.
const MaxPending = 4 << 20

// Writer is an io.Writer for slog handlers, which write one whole line per
// call. Close it to write what is pending and stop its goroutine.
type Writer struct {
	out io.Writer

	mu      sync.Mutex
	cond    *sync.Cond // signalled after every write to out
	pending []byte
	queued  uint64 // bytes ever taken by Write
	written uint64 // bytes handed to out so far
	closed  bool
	err     error // the first error out returned

	wake chan struct{}
	done chan struct{}
}

// New returns a Writer writing to out; its goroutine runs until Close.
func New(out io.Writer) *Writer {
	w := &Writer{out: out, wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// Write takes p (a whole line) for the output. It blocks only while
// MaxPending bytes wait for an output that stopped accepting them; after
// Close it writes to the output itself.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	for !w.closed && len(w.pending) > 0 && len(w.pending)+len(p) > MaxPending {
		w.cond.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		return w.out.Write(p)
	}
	w.pending = append(w.pending, p...)
	w.queued += uint64(len(p))
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // the goroutine is awake already
	}
	return len(p), nil
}

// run writes what is pending each time a Write wakes it.
func (w *Writer) run() {
	defer close(w.done)
	var spare []byte
	for range w.wake {
		// Let the goroutines that are ready to run go first: on a busy
		// server they are requests about to add their lines, which then
		// go out in this write rather than in one write each. On an
		// idle one nothing is ready and this returns at once.
		runtime.Gosched()
		w.mu.Lock()
		batch := w.pending
		w.pending = spare[:0]
		closed := w.closed
		w.mu.Unlock()
		var err error
		if len(batch) > 0 {
			_, err = w.out.Write(batch)
		}
		w.mu.Lock()
		w.written += uint64(len(batch))
		if err != nil && w.err == nil {
			w.err = err
		}
		w.cond.Broadcast()
		w.mu.Unlock()
		spare = batch
		if cap(spare) > MaxPending { // after a burst: do not keep its memory
			spare = nil
		}
		if closed {
			return
		}
	}
}

// Flush waits until every line written before it has been handed to the
// output.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	target := w.queued
	for w.written < target && !w.closed {
		w.signal()
		w.cond.Wait()
	}
	return w.err
}

// signal wakes the goroutine; the caller holds mu.
func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Close writes what is pending, stops the goroutine and returns the first
// error the output returned. Later Writes go to the output directly.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return w.err
	}
	w.closed = true
	w.cond.Broadcast() // blocked Writes go to the output directly
	w.signal()
	w.mu.Unlock()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

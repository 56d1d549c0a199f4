package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// fill is one upstream fetch of one blob into the store. Every client that
// wants the blob meanwhile streams it from the temporary file as bytes land,
// so the first byte reaches clients before the last byte left the upstream,
// and memory does not grow with the blob or the number of waiters.
//
// The last byte is held back until the digest verified: a client never
// receives a complete body for bytes that turn out wrong. When the fill
// fails, every reader gets the error and nothing is committed.
type fill struct {
	digest    string
	upKey     string // upstream repository + credential set that started it
	requestID string // of the request that started it, for the logs of joiners

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every state change
	started    bool          // the upstream answered; size and temp file known
	size       int64         // expected size; -1 when the upstream sent none
	temp       string        // temporary file, readable while the fill runs
	written    int64
	woken      int64       // written at the last wake-up
	wokenAt    time.Time   // time of the last wake-up
	late       *time.Timer // wakes waiters for bytes no wake-up covered yet
	verified   bool        // size and digest verified: every byte may be read
	committing bool        // linking has begun: no more repositories join
	done       bool
	err        error
	repos      map[string]bool // local repositories to link on success
	peer       peerState       // where the bytes come from in a cluster (blob.go)
}

func newFill(digest, upKey, repo string) *fill {
	return &fill{digest: digest, upKey: upKey, size: -1, changed: make(chan struct{}), repos: map[string]bool{repo: true}}
}

// broadcast wakes every waiter; the caller holds f.mu.
func (f *fill) broadcast() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fill) start(size int64, temp string) {
	f.mu.Lock()
	f.started, f.size, f.temp = true, size, temp
	f.broadcast()
	f.mu.Unlock()
}

// Waiters are woken when this many bytes landed since the last wake-up, or
// this long passed: hand-offs per megabyte, not per packet, and a slow
// upstream still streams smoothly.
const (
	wakeBytes    = 1 << 20
	wakeInterval = 20 * time.Millisecond
)

func (f *fill) progress(n int64) {
	f.mu.Lock()
	f.written += n
	if now := time.Now(); f.written-f.woken >= wakeBytes || now.Sub(f.wokenAt) >= wakeInterval {
		f.woken, f.wokenAt = f.written, now
		f.broadcast()
	} else if f.late == nil {
		// The upstream may pause right after these bytes (a slow or
		// stalled upstream, or a peer replica waiting for its own):
		// waiters get them within wakeInterval all the same, not at the
		// next write.
		f.late = time.AfterFunc(wakeInterval, f.wakeLate)
	}
	f.mu.Unlock()
}

// wakeLate wakes the waiters for bytes written since the last wake-up.
func (f *fill) wakeLate() {
	f.mu.Lock()
	f.late = nil
	if f.written > f.woken {
		f.woken, f.wokenAt = f.written, time.Now()
		f.broadcast()
	}
	f.mu.Unlock()
}

// verify marks every byte readable (size and digest checked).
func (f *fill) verify() {
	f.mu.Lock()
	f.verified = true
	f.broadcast()
	f.mu.Unlock()
}

// commitRepos stops repositories from joining and returns those to link.
func (f *fill) commitRepos() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.committing = true
	out := make([]string, 0, len(f.repos))
	for r := range f.repos {
		out = append(out, r)
	}
	return out
}

func (f *fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	f.broadcast()
	f.mu.Unlock()
}

// join adds repo to the repositories linked on success; false when the
// fill is already linking or finished (the caller then reads the store).
func (f *fill) join(repo string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.committing || f.done {
		return false
	}
	f.repos[repo] = true
	return true
}

// wait blocks until cond (evaluated under f.mu) holds or ctx ends.
func (f *fill) wait(ctx context.Context, cond func() bool) error {
	for {
		f.mu.Lock()
		if cond() {
			f.mu.Unlock()
			return nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// verifiedBytes waits until every byte of the fill verified, or the fill
// failed (its error), or ctx ended.
func (f *fill) verifiedBytes(ctx context.Context) error {
	if err := f.wait(ctx, func() bool { return f.verified || f.done }); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.verified {
		return f.err
	}
	return nil
}

// result waits for the end of the fill and returns its error.
func (f *fill) result(ctx context.Context) error {
	if err := f.wait(ctx, func() bool { return f.done }); err != nil {
		return err
	}
	return f.err
}

// reader returns a reader of the blob as it is being filled, once the
// upstream answered with a size. ok is false when the size is unknown or
// the fill ended before starting (the caller then waits for the result).
func (f *fill) reader(ctx context.Context) (r *fillReader, ok bool, err error) {
	if err := f.wait(ctx, func() bool { return f.started || f.done }); err != nil {
		return nil, false, err
	}
	f.mu.Lock()
	started, size, temp, done, ferr := f.started, f.size, f.temp, f.done, f.err
	f.mu.Unlock()
	if ferr != nil {
		return nil, false, ferr
	}
	if !started || size < 0 || done {
		return nil, false, nil
	}
	file, err := os.Open(temp)
	if err != nil {
		// The fill committed (renamed) between the two looks: read the store.
		if errors.Is(err, os.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("follow fill of %s: %w", f.digest, err)
	}
	return &fillReader{f: f, file: file, ctx: ctx, size: size}, true, nil
}

// fillReader reads a blob while it is filled; it implements
// io.ReadSeekCloser for http.ServeContent. A whole-body read is safe
// before the digest verified because the last byte is held back; a read of
// part of the blob is not (no held-back byte protects it), so partial
// responses wait for Content.Verified first.
type fillReader struct {
	f    *fill
	file *os.File // the temporary file; stays valid across the rename
	ctx  context.Context
	size int64
	off  int64
}

// readable returns how many bytes may be read now: all of them once they
// verified, else what landed less the last byte; the caller holds f.mu.
func (r *fillReader) readable() int64 {
	if r.f.verified {
		return r.size
	}
	return min(r.f.written, r.size-1)
}

// available waits until bytes past the read offset are readable and returns
// the end of what may be read; an error when the fill failed before its
// bytes verified, or when the reader's context ended.
func (r *fillReader) available() (int64, error) {
	var avail int64
	var ferr error
	err := r.f.wait(r.ctx, func() bool {
		avail = r.readable()
		if r.f.err != nil && !r.f.verified {
			ferr = r.f.err
		}
		return avail > r.off || r.f.done
	})
	switch {
	case err != nil:
		return 0, err
	case ferr != nil:
		return 0, fmt.Errorf("fill of %s failed: %w", r.f.digest, ferr)
	case avail <= r.off:
		return 0, io.ErrUnexpectedEOF
	}
	return avail, nil
}

func (r *fillReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	avail, err := r.available()
	if err != nil {
		return 0, err
	}
	n := int(min(int64(len(p)), avail-r.off))
	n, err = r.file.ReadAt(p[:n], r.off)
	r.off += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

// SendTo writes the next n bytes (fewer at the end of the blob) to w as
// they become readable, each readable stretch as a section of the
// temporary *os.File, so that a net/http response sends it with sendfile.
func (r *fillReader) SendTo(w io.Writer, n int64) (int64, error) {
	var sent int64
	for sent < n && r.off < r.size {
		avail, err := r.available()
		if err != nil {
			return sent, err
		}
		if _, err := r.file.Seek(r.off, io.SeekStart); err != nil {
			return sent, err
		}
		k, err := io.Copy(w, &io.LimitedReader{R: r.file, N: min(avail-r.off, n-sent)})
		r.off += k
		sent += k
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func (r *fillReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, fmt.Errorf("seek: invalid whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek: negative position %d", offset)
	}
	r.off = offset
	return offset, nil
}

func (r *fillReader) Close() error { return r.file.Close() }

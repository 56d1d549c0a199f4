// Package uploads owns blob upload sessions: the resumable pushes of the
// distribution API (POST, then PATCH chunks, then PUT with the digest).
//
// A session belongs to one repository. Its bytes and running digest live
// in the data directory (storage.Blobs.CreateUpload), its repository in
// the metadata database, so a session survives a restart. Chunks must
// arrive in order; a chunk that does not start where the session stands
// is refused with the current offset, and nothing is written. The bytes
// become a blob only through storage.Writer.CommitAs, which verifies them
// against the digest the client names; a failed commit ends the session.
// Sessions idle for longer than the idle timeout are removed, never while
// a request is writing to them.
package uploads

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/regcache/regcache/storage"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrUnknown: no such session in this repository (never started,
	// finished, cancelled or expired).
	ErrUnknown = errors.New("blob upload unknown")
	// ErrRange: a chunk does not start where the session stands.
	ErrRange = errors.New("chunk out of order")
	// ErrInvalid: the request does not fit the session (for example a
	// chunk shorter than its Content-Range).
	ErrInvalid = errors.New("blob upload invalid")
	// ErrTooLarge: the upload grew past Options.MaxSize; the session is
	// dropped.
	ErrTooLarge = errors.New("blob upload too large")
)

// Options tune Sessions; zero values take the defaults.
type Options struct {
	// IdleTimeout is how long a session may receive nothing before it is
	// removed (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxSize caps the bytes of one upload (0: no cap).
	MaxSize int64
	// IDSuffix, when set, ends every session ID ("<random>-<suffix>"): a
	// replica of a cluster names itself in the IDs it hands out, so that
	// another replica receiving a request for the session knows where it
	// lives. 1 to 16 lowercase letters or digits.
	IDSuffix string
}

var suffixRE = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

// RangeError is an out-of-order chunk; Offset is how many bytes the
// session holds (the client resumes there).
type RangeError struct {
	Offset, Start int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%v: the chunk starts at byte %d, the session holds %d bytes (send from byte %d)", ErrRange, e.Start, e.Offset, e.Offset)
}

func (e *RangeError) Unwrap() error { return ErrRange }

// Store keeps the bytes of sessions (storage.Blobs).
type Store interface {
	CreateUpload(ctx context.Context, id string) (*storage.Writer, error)
	ResumeUpload(ctx context.Context, id string) (*storage.Writer, error)
	RemoveUpload(ctx context.Context, id string) error
	Uploads(ctx context.Context) ([]storage.UploadInfo, error)
}

// Records keeps which repository a session belongs to (storage.Meta).
type Records interface {
	PutRecord(ctx context.Context, kind, key string, value []byte) error
	DeleteRecord(ctx context.Context, kind, key string) error
	Records(ctx context.Context, kind string) (map[string][]byte, error)
}

const recordKind = "upload-sessions"

// DefaultIdleTimeout is how long a session may receive nothing before it
// is removed.
const DefaultIdleTimeout = time.Hour

type session struct {
	Repo    string    `json:"repo"`
	Started time.Time `json:"started"`
}

// Sessions manages upload sessions.
type Sessions struct {
	store   Store
	records Records
	idle    time.Duration
	maxSize int64  // 0: none
	suffix  string // "-" and Options.IDSuffix, or empty
	now     func() time.Time
	log     *slog.Logger

	mu       sync.Mutex
	sessions map[string]session
	busy     map[string]*sync.Mutex // sessions a request is using
}

// New loads the sessions that survived a restart.
func New(ctx context.Context, store Store, records Records, opts Options, log *slog.Logger) (*Sessions, error) {
	idle := opts.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	var suffix string
	if opts.IDSuffix != "" {
		if !suffixRE.MatchString(opts.IDSuffix) {
			return nil, fmt.Errorf("upload session ID suffix %q: want 1 to 16 lowercase letters or digits", opts.IDSuffix)
		}
		suffix = "-" + opts.IDSuffix
	}
	raw, err := records.Records(ctx, recordKind)
	if err != nil {
		return nil, fmt.Errorf("load upload sessions: %w", err)
	}
	s := &Sessions{store: store, records: records, idle: idle, maxSize: max(opts.MaxSize, 0), suffix: suffix, now: time.Now, log: log, sessions: map[string]session{}, busy: map[string]*sync.Mutex{}}
	for id, v := range raw {
		var ss session
		if err := json.Unmarshal(v, &ss); err != nil {
			log.Warn("upload session record unreadable; removing it", "id", id, "err", err)
			records.DeleteRecord(ctx, recordKind, id)
			continue
		}
		s.sessions[id] = ss
	}
	return s, nil
}

// IdleTimeout reports how long a session may stay idle.
func (s *Sessions) IdleTimeout() time.Duration { return s.idle }

// Count is the number of open sessions.
func (s *Sessions) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Start opens a session for repo and returns its id.
func (s *Sessions) Start(ctx context.Context, repo string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b) + s.suffix
	ss := session{Repo: repo, Started: s.now().UTC()}
	raw, err := json.Marshal(ss)
	if err != nil {
		return "", err
	}
	// The record first: bytes without a record are removed as orphans.
	if err := s.records.PutRecord(ctx, recordKind, id, raw); err != nil {
		return "", fmt.Errorf("start upload: %w", err)
	}
	w, err := s.store.CreateUpload(ctx, id)
	if err != nil {
		s.records.DeleteRecord(ctx, recordKind, id)
		return "", fmt.Errorf("start upload: %w", err)
	}
	if err := w.Suspend(); err != nil {
		s.end(ctx, id)
		return "", fmt.Errorf("start upload: %w", err)
	}
	s.mu.Lock()
	s.sessions[id] = ss
	s.mu.Unlock()
	return id, nil
}

// Exists reports whether session id of repo is open here.
func (s *Sessions) Exists(repo, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[id]
	return ok && ss.Repo == repo
}

// acquire locks session id of repo for one request; release with the
// returned function.
func (s *Sessions) acquire(repo, id string) (func(), error) {
	s.mu.Lock()
	ss, ok := s.sessions[id]
	if !ok || ss.Repo != repo {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s in %s", ErrUnknown, id, repo)
	}
	l := s.busy[id]
	if l == nil {
		l = &sync.Mutex{}
		s.busy[id] = l
	}
	s.mu.Unlock()
	l.Lock()
	// The session may have ended while this request waited.
	s.mu.Lock()
	_, ok = s.sessions[id]
	s.mu.Unlock()
	if !ok {
		l.Unlock()
		return nil, fmt.Errorf("%w: %s in %s", ErrUnknown, id, repo)
	}
	return l.Unlock, nil
}

// open locks session id of repo for one request and opens its writer;
// release unlocks it (after the writer was suspended or committed).
func (s *Sessions) open(ctx context.Context, repo, id string) (w *storage.Writer, release func(), err error) {
	release, err = s.acquire(repo, id)
	if err != nil {
		return nil, nil, err
	}
	w, err = s.store.ResumeUpload(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		s.end(ctx, id)
		err = fmt.Errorf("%w: %s in %s (its bytes are gone)", ErrUnknown, id, repo)
	}
	if err != nil {
		release()
		return nil, nil, err
	}
	return w, release, nil
}

// Status returns how many bytes the session holds.
func (s *Sessions) Status(ctx context.Context, repo, id string) (int64, error) {
	w, release, err := s.open(ctx, repo, id)
	if err != nil {
		return 0, err
	}
	defer release()
	n := w.Written()
	return n, w.Suspend()
}

// Write appends r to the session. start is where the chunk begins (its
// Content-Range), or -1 for a streamed chunk that simply appends; length
// is the chunk's declared length, or -1. It returns the bytes the session
// holds afterwards, also when the body ended early (the client may
// resume from there).
func (s *Sessions) Write(ctx context.Context, repo, id string, start, length int64, r io.Reader) (int64, error) {
	w, release, err := s.open(ctx, repo, id)
	if err != nil {
		return 0, err
	}
	defer release()
	n, err := s.write(w, start, length, r)
	if errors.Is(err, ErrTooLarge) {
		s.drop(ctx, id, w)
		return n, err
	}
	if serr := w.Suspend(); err == nil {
		err = serr
	}
	return n, err
}

// drop ends a session whose upload went past the size cap, with its bytes:
// it can never be committed.
func (s *Sessions) drop(ctx context.Context, id string, w *storage.Writer) {
	w.Cancel()
	s.end(ctx, id)
}

func (s *Sessions) write(w *storage.Writer, start, length int64, r io.Reader) (int64, error) {
	if start >= 0 && start != w.Written() {
		return w.Written(), &RangeError{Offset: w.Written(), Start: start}
	}
	if r == nil {
		return w.Written(), nil
	}
	before := w.Written()
	if s.maxSize > 0 && length >= 0 && before+length > s.maxSize {
		return before, s.tooLarge(before + length)
	}
	src := r
	if length >= 0 {
		src = io.LimitReader(r, length)
	}
	if s.maxSize > 0 {
		// One byte more than the cap allows tells an oversized stream.
		src = io.LimitReader(src, s.maxSize-before+1)
	}
	_, err := io.Copy(w, src)
	if s.maxSize > 0 && w.Written() > s.maxSize {
		return w.Written(), s.tooLarge(w.Written())
	}
	got := w.Written() - before
	if err != nil {
		return w.Written(), fmt.Errorf("%w: receiving the chunk after %d bytes: %v", ErrInvalid, got, err)
	}
	if length >= 0 && got != length {
		return w.Written(), fmt.Errorf("%w: the chunk declared %d bytes, %d arrived", ErrInvalid, length, got)
	}
	return w.Written(), nil
}

func (s *Sessions) tooLarge(n int64) error {
	return fmt.Errorf("%w: %d bytes or more, the limit is %d (limits.maxUploadSize)", ErrTooLarge, n, s.maxSize)
}

// Commit appends the final chunk r (nil when none; start and length as
// for Write), then verifies the bytes against digest and commits them
// into the store as that blob. The session ends, whether or not the
// bytes verified; the caller links the blob. It returns the blob's size.
func (s *Sessions) Commit(ctx context.Context, repo, id, digest string, start, length int64, r io.Reader) (int64, error) {
	if _, err := storage.ParseDigest(digest); err != nil {
		return 0, err
	}
	w, release, err := s.open(ctx, repo, id)
	if err != nil {
		return 0, err
	}
	defer release()
	n, err := s.write(w, start, length, r)
	if errors.Is(err, ErrTooLarge) {
		s.drop(ctx, id, w)
		return 0, err
	}
	if err != nil {
		// An out-of-order or short final chunk leaves the session as it
		// was, so the client can send it again.
		if serr := w.Suspend(); serr != nil {
			s.log.WarnContext(ctx, "suspend upload", "id", id, "err", serr)
		}
		return 0, err
	}
	err = w.CommitAs(digest, -1)
	s.end(ctx, id)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Cancel ends a session and drops its bytes.
func (s *Sessions) Cancel(ctx context.Context, repo, id string) error {
	release, err := s.acquire(repo, id)
	if err != nil {
		return err
	}
	defer release()
	if err := s.store.RemoveUpload(ctx, id); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	s.end(ctx, id)
	return nil
}

// end forgets session id (its bytes are gone or committed).
func (s *Sessions) end(ctx context.Context, id string) {
	s.mu.Lock()
	delete(s.sessions, id)
	delete(s.busy, id)
	s.mu.Unlock()
	if err := s.records.DeleteRecord(ctx, recordKind, id); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.log.WarnContext(ctx, "remove upload session record", "id", id, "err", err)
	}
}

// Expire removes the sessions that received nothing for longer than the
// idle timeout and are not in use, and bytes that belong to no session.
// It returns how many it removed.
func (s *Sessions) Expire(ctx context.Context) (int, error) {
	ups, err := s.store.Uploads(ctx)
	if err != nil {
		return 0, err
	}
	removed := 0
	onDisk := map[string]bool{}
	for _, u := range ups {
		onDisk[u.ID] = true
		s.mu.Lock()
		ss, known := s.sessions[u.ID]
		l := s.busy[u.ID]
		if l == nil {
			l = &sync.Mutex{}
			s.busy[u.ID] = l
		}
		s.mu.Unlock()
		if known && s.now().Sub(u.Modified) <= s.idle {
			continue
		}
		if !l.TryLock() {
			continue // a request is writing to it
		}
		if err := s.store.RemoveUpload(ctx, u.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
			l.Unlock()
			return removed, err
		}
		s.end(ctx, u.ID)
		l.Unlock()
		removed++
		if known {
			s.log.Info("upload session expired", "id", u.ID, "repo", ss.Repo, "bytes", u.Size, "idle", s.now().Sub(u.Modified).Round(time.Second))
		}
	}
	// Records whose bytes are gone (a crash between the two writes); only
	// old ones, as a session starting now may not have its file yet.
	s.mu.Lock()
	var gone []string
	for id, ss := range s.sessions {
		if !onDisk[id] && s.now().Sub(ss.Started) > s.idle {
			gone = append(gone, id)
		}
	}
	s.mu.Unlock()
	for _, id := range gone {
		s.end(ctx, id)
	}
	return removed, nil
}

// Run expires idle sessions every interval until ctx ends.
func (s *Sessions) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.Expire(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("expire upload sessions", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

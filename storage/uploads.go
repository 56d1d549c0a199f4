package storage

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Resumable uploads (pushes) write through the same Writer as fills: the
// bytes are hashed as they arrive and become a blob only when Commit has
// verified them. Unlike a fill, an upload spans several requests and must
// survive a restart, so it lives in <root>/uploads/<id>/:
//
//	data   the bytes received so far
//	state  the offset and the running sha256 state at the last checkpoint
//
// Resuming trusts the state only when the data file has exactly the
// offset it records (a process killed mid-write leaves more bytes, a power
// loss possibly fewer); otherwise the file is hashed again from the start.
// Either way the digest is checked against the bytes before commit.

// ErrUploadExists reports an upload id that is taken.
var ErrUploadExists = errors.New("upload exists")

var uploadIDRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{8,64}$`)

func (b *Blobs) uploadsDir() string { return filepath.Join(b.root, "uploads") }

func (b *Blobs) uploadDir(id string) (string, error) {
	if !uploadIDRE.MatchString(id) {
		return "", fmt.Errorf("upload %q: %w", id, ErrNotFound)
	}
	return filepath.Join(b.uploadsDir(), id), nil
}

// uploadState is the checkpoint of a resumable upload.
type uploadState struct {
	Offset int64  `json:"offset"`
	SHA256 []byte `json:"sha256"`
}

// CreateUpload starts a resumable upload under id (8-64 letters, digits,
// '-' or '_'), whose digest is given only at commit (CommitAs).
func (b *Blobs) CreateUpload(ctx context.Context, id string) (*Writer, error) {
	dir, err := b.uploadDir(id)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(b.uploadsDir(), 0o755); err != nil {
		return nil, fmt.Errorf("create uploads directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("upload %s: %w", id, ErrUploadExists)
		}
		return nil, full(fmt.Errorf("create upload %s: %w", id, err), "an upload")
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		os.RemoveAll(dir)
		return nil, full(fmt.Errorf("create upload %s: %w", id, err), "an upload")
	}
	w := &Writer{f: f, h: sha256.New(), size: -1, upload: dir, store: b}
	if err := w.Checkpoint(); err != nil {
		w.Cancel()
		return nil, err
	}
	return w, nil
}

// ResumeUpload reopens the upload id for more bytes, or to commit it. It
// returns ErrNotFound when no such upload exists.
func (b *Blobs) ResumeUpload(ctx context.Context, id string) (*Writer, error) {
	dir, err := b.uploadDir(id)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("upload %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open upload %s: %w", id, err)
	}
	w := &Writer{f: f, h: sha256.New(), size: -1, upload: dir, store: b}
	if err := w.restore(); err != nil {
		f.Close()
		return nil, fmt.Errorf("resume upload %s: %w", id, err)
	}
	return w, nil
}

// restore sets the running digest and offset from the checkpoint when it
// matches the data file, else by hashing the file again.
func (w *Writer) restore() error {
	fi, err := w.f.Stat()
	if err != nil {
		return err
	}
	var st uploadState
	raw, err := os.ReadFile(filepath.Join(w.upload, "state"))
	if err == nil && json.Unmarshal(raw, &st) == nil && st.Offset == fi.Size() {
		if u, ok := w.h.(encoding.BinaryUnmarshaler); ok && u.UnmarshalBinary(st.SHA256) == nil {
			w.n = st.Offset
			_, err := w.f.Seek(w.n, io.SeekStart)
			return err
		}
	}
	w.h.Reset()
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(w.h, w.f)
	if err != nil {
		return err
	}
	w.n = n
	return w.Checkpoint()
}

// Checkpoint records the offset and running digest of an upload, so that
// a restart resumes without hashing the bytes again.
func (w *Writer) Checkpoint() error {
	if w.upload == "" {
		return errors.New("checkpoint: not a resumable upload")
	}
	m, ok := w.h.(encoding.BinaryMarshaler)
	if !ok {
		return errors.New("checkpoint: the digest state cannot be saved")
	}
	state, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	raw, err := json.Marshal(uploadState{Offset: w.n, SHA256: state})
	if err != nil {
		return err
	}
	tmp := filepath.Join(w.upload, "state.tmp")
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		return full(fmt.Errorf("checkpoint upload: %w", err), "an upload")
	}
	if err := os.Rename(tmp, filepath.Join(w.upload, "state")); err != nil {
		return fmt.Errorf("checkpoint upload: %w", err)
	}
	return nil
}

// Suspend checkpoints an upload and closes its file; ResumeUpload opens it
// again. The Writer is unusable afterwards.
func (w *Writer) Suspend() error {
	if w.done {
		return errors.New("blob writer already closed")
	}
	w.done = true
	err := w.Checkpoint()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// CommitAs commits an upload as the blob digest, verifying the bytes
// against it (and against size when size >= 0). On success or failure the
// upload is gone.
func (w *Writer) CommitAs(digest string, size int64) error {
	final, err := w.store.path(digest)
	if err != nil {
		w.Cancel()
		return err
	}
	w.digest, w.size, w.final = digest, size, final
	return w.Commit()
}

func (w *Writer) removeUpload() {
	if w.upload != "" {
		os.RemoveAll(w.upload)
	}
}

// RemoveUpload deletes an upload and its bytes; ErrNotFound when absent.
func (b *Blobs) RemoveUpload(ctx context.Context, id string) error {
	dir, err := b.uploadDir(id)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("upload %s: %w", id, ErrNotFound)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove upload %s: %w", id, err)
	}
	return nil
}

// UploadInfo describes an upload in progress.
type UploadInfo struct {
	ID string
	// Size is how many bytes were received.
	Size int64
	// Modified is when bytes last arrived (or the upload started).
	Modified time.Time
}

// Uploads lists the uploads in progress.
func (b *Blobs) Uploads(ctx context.Context) ([]UploadInfo, error) {
	entries, err := os.ReadDir(b.uploadsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list uploads: %w", err)
	}
	var out []UploadInfo
	for _, e := range entries {
		fi, err := os.Stat(filepath.Join(b.uploadsDir(), e.Name(), "data"))
		if err != nil {
			// Created but without data: a crash inside CreateUpload.
			if fi, derr := e.Info(); derr == nil {
				out = append(out, UploadInfo{ID: e.Name(), Modified: fi.ModTime()})
			}
			continue
		}
		out = append(out, UploadInfo{ID: e.Name(), Size: fi.Size(), Modified: fi.ModTime()})
	}
	return out, nil
}

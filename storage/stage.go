package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Staging serves an ingest that must be all or nothing over many blobs
// (an archive import): each blob is written through a Writer and verified
// as usual, then staged, durable in the temporary directory but invisible,
// until every blob of the whole has verified; then each is committed
// (renamed into place), or every staged one is cancelled and nothing of
// the whole was ever visible. Staged files live in the same temporary
// directory as fills, so a crash leaves nothing behind after OpenBlobs.

// CreateUnknown starts writing a blob whose digest is known only from its
// bytes (a layer of a `docker save` archive, named by its position, whose
// digest the image's config states later). Stage names the digest.
func (b *Blobs) CreateUnknown(ctx context.Context, size int64) (*Writer, error) {
	if err := checkRoom(b.tmpDir(), size, "a blob"); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(b.tmpDir(), "fill-*")
	if err != nil {
		return nil, full(fmt.Errorf("create temp file: %w", err), "a blob")
	}
	return &Writer{f: f, h: sha256.New(), size: size, store: b}, nil
}

// Digest is the digest of the bytes written so far.
func (w *Writer) Digest() string {
	return "sha256:" + hex.EncodeToString(w.h.Sum(nil))
}

// Staged is a verified blob not yet visible: Commit makes it so, Cancel
// removes it.
type Staged struct {
	store  *Blobs
	temp   string
	final  string
	digest string
	size   int64
	done   bool
}

// Stage verifies the bytes written (against digest, or against the
// digest given at Create when digest is ""; and against the size given at
// Create when it was not negative), makes them durable and closes the
// temporary file. On failure the file is removed. The Writer is unusable
// afterwards.
func (w *Writer) Stage(digest string) (*Staged, error) {
	if w.done {
		return nil, errors.New("blob writer already closed")
	}
	if w.upload != "" {
		w.Cancel()
		return nil, errors.New("stage: an upload is committed with CommitAs")
	}
	switch {
	case w.digest == "" && digest != "":
		final, err := w.store.path(digest)
		if err != nil {
			w.Cancel()
			return nil, err
		}
		w.digest, w.final = digest, final
	case digest != "" && digest != w.digest:
		w.Cancel()
		return nil, fmt.Errorf("stage: the writer was created for %s, not %s", w.digest, digest)
	case w.digest == "":
		w.Cancel()
		return nil, errors.New("stage: no digest to verify the bytes against")
	}
	if err := w.seal(); err != nil {
		return nil, full(fmt.Errorf("blob %s: %w", w.digest, err), w.what())
	}
	return w.staged(), nil
}

// seal verifies the bytes written, makes them durable and closes the
// temporary file; on failure it removes the file.
func (w *Writer) seal() error {
	w.done = true
	err := w.verify()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(w.f.Name())
	}
	return err
}

// staged is the sealed bytes of w, to be placed under their digest.
func (w *Writer) staged() *Staged {
	return &Staged{store: w.store, temp: w.f.Name(), final: w.final, digest: w.digest, size: w.n}
}

// Digest is the staged blob's digest.
func (s *Staged) Digest() string { return s.digest }

// Size is the staged blob's size.
func (s *Staged) Size() int64 { return s.size }

// Open opens the staged bytes for reading (an archive's manifest, read
// before anything is committed).
func (s *Staged) Open() (*os.File, error) {
	if s.done {
		return nil, fmt.Errorf("blob %s: staged bytes already committed or cancelled", s.digest)
	}
	return os.Open(s.temp)
}

// Commit makes the staged blob visible under its digest.
func (s *Staged) Commit() error {
	if s.done {
		return fmt.Errorf("blob %s: staged bytes already committed or cancelled", s.digest)
	}
	if err := s.place(); err != nil {
		return full(fmt.Errorf("commit blob %s: %w", s.digest, err), "blob "+s.digest)
	}
	return nil
}

// place renames the sealed bytes to their digest's path and makes the
// directory entry durable; on failure the bytes are removed.
func (s *Staged) place() error {
	s.done = true
	if s.store.objects != nil {
		return s.store.placeObject(s.temp, s.digest, s.size)
	}
	err := os.MkdirAll(filepath.Dir(s.final), 0o755)
	if err == nil {
		err = s.store.place(s.temp, s.final, s.digest, s.size)
	}
	if err != nil {
		os.Remove(s.temp)
		return err
	}
	if d, err := os.Open(filepath.Dir(s.final)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Cancel removes the staged bytes; after Commit it does nothing.
func (s *Staged) Cancel() {
	if s.done {
		return
	}
	s.done = true
	os.Remove(s.temp)
}

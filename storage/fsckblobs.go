package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// InspectBlobs opens the blob store rooted at dir as it is: unlike
// OpenBlobs it creates nothing and removes nothing, so that a check sees
// a data directory exactly as a crash left it (OpenBlobs, at the next
// start, removes the temporary files of interrupted fills).
func InspectBlobs(dir string) (*Blobs, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("blob store %s: not a directory", dir)
	}
	if where, ok := objectStoreOf(dir); ok {
		return nil, fmt.Errorf("blob store %s: its blobs are in an object store (%s), which only the running server reaches: check it with regcache fsck --server", dir, where)
	}
	return &Blobs{root: dir}, nil
}

var prefixDir = regexp.MustCompile(`^[a-f0-9]{2}$`)

// hashBufferSize is the read buffer of a check: memory does not grow
// with blob size.
const hashBufferSize = 1 << 20

// progressEvery is how many hashed bytes pass between progress reports
// within one blob.
const progressEvery = 16 << 20

// checkBlobs hashes every blob in the store and, with opts.Repair, moves
// corrupt blobs and stray files to the quarantine. It returns the
// digests found corrupt, and why.
func (c *Checker) checkBlobs(ctx context.Context, r *CheckReport, opts CheckOptions, q *quarantine) (map[string]string, error) {
	if c.blobs.objects != nil {
		return c.checkObjectBlobs(ctx, r, opts, q)
	}
	prog := CheckProgress{Phase: "blobs"}
	top := filepath.Join(c.blobs.root, "sha256")
	// Totals first, for progress: one listing pass, no reads.
	if err := walkBlobTree(top, func(rel string, d fs.DirEntry) error {
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			prog.BlobsTotal++
			prog.BytesTotal += fi.Size()
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if tmp, err := os.ReadDir(c.blobs.tmpDir()); err == nil {
		r.TempFiles = len(tmp)
	}
	opts.Progress(prog)
	corrupt := map[string]string{}
	buf := make([]byte, hashBufferSize)
	err := walkBlobTree(top, func(rel string, d fs.DirEntry) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("check blobs: %w", context.Cause(ctx))
		}
		path := filepath.Join(top, rel)
		dir, name := filepath.Split(rel)
		digest := "sha256:" + name
		if _, err := ParseDigest(digest); err != nil || filepath.Clean(dir) != name[:min(2, len(name))] || !d.Type().IsRegular() {
			p := Problem{Kind: ProblemStrayFile, Path: filepath.Join("sha256", rel), Detail: "not a blob named for its digest"}
			if opts.Repair {
				p.Action, p.Repaired = q.move(path, filepath.Join("sha256", rel), nil)
			}
			r.add(p)
			return nil
		}
		size, why, fi, err := hashBlob(ctx, path, digest, buf, func(n int64) {
			prog.Bytes += n
			opts.Progress(prog)
		})
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil // removed meanwhile (a live store)
		case err != nil:
			return err
		}
		r.Blobs++
		r.BlobBytes += size
		prog.Blobs++
		opts.Progress(prog)
		if why == "" {
			return nil
		}
		corrupt[digest] = why
		p := Problem{Kind: ProblemCorruptBlob, Digest: digest, Path: filepath.Join("sha256", rel), Detail: why}
		if opts.Repair {
			p.Action, p.Repaired = q.move(path, filepath.Join("sha256", rel), fi)
		}
		r.add(p)
		return nil
	})
	return corrupt, err
}

// walkBlobTree calls fn for every entry two levels below top (the
// sha256/<xx>/<hex> layout) and for any entry where a prefix directory
// should be; rel is the path relative to top. A missing top is an empty
// store.
func walkBlobTree(top string, fn func(rel string, d fs.DirEntry) error) error {
	prefixes, err := os.ReadDir(top)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, pd := range prefixes {
		if !pd.IsDir() || !prefixDir.MatchString(pd.Name()) {
			if err := fn(pd.Name(), pd); err != nil {
				return err
			}
			continue
		}
		entries, err := os.ReadDir(filepath.Join(top, pd.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, e := range entries {
			if err := fn(filepath.Join(pd.Name(), e.Name()), e); err != nil {
				return err
			}
		}
	}
	return nil
}

// hashBlob reads the blob at path through buf and returns its size and
// why it does not verify against digest ("" when it does), with the
// FileInfo of the file it read (to recognise it when quarantining). A
// read error other than a missing file or a permission problem makes the
// blob corrupt: the store cannot serve it.
func hashBlob(ctx context.Context, path, digest string, buf []byte, progress func(int64)) (int64, string, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, "", nil, err
		}
		if isPermission(err) {
			return 0, "", nil, fmt.Errorf("read blob %s: %w (run the check as the user regcache runs as)", digest, err)
		}
		return 0, fmt.Sprintf("unreadable: %v", err), nil, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Sprintf("unreadable: %v", err), nil, nil
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, &checkReader{ctx: ctx, r: f, report: progress}, buf)
	if err != nil {
		if ctx.Err() != nil {
			return n, "", nil, fmt.Errorf("check blobs: %w", context.Cause(ctx))
		}
		if isPermission(err) {
			return n, "", nil, fmt.Errorf("read blob %s: %w (run the check as the user regcache runs as)", digest, err)
		}
		return n, fmt.Sprintf("unreadable after %d bytes: %v", n, err), fi, nil
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return n, fmt.Sprintf("its %d bytes hash to %s", n, got), fi, nil
	}
	return n, "", fi, nil
}

// checkReader stops at the end of ctx and reports progress every
// progressEvery bytes (and the remainder at the end).
type checkReader struct {
	ctx     context.Context
	r       io.Reader
	report  func(int64)
	pending int64
}

func (c *checkReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.pending += int64(n)
	if c.pending >= progressEvery || (err != nil && c.pending > 0) {
		c.report(c.pending)
		c.pending = 0
	}
	return n, err
}

// quarantine is the directory of one check's quarantined files:
// <dir>/<UTC time of the first move>/<path in the blob store>, created on
// the first move.
type quarantine struct {
	dir string
	run string // the run's subdirectory, once created
}

// move renames path (rel in the blob store) into the quarantine. When
// hashed is not nil, the file moved must be the one hashed: if a new
// copy was committed under that name meanwhile, it is put back and
// nothing is quarantined. It returns the action taken and whether the
// problem is gone.
func (q *quarantine) move(path, rel string, hashed fs.FileInfo) (string, bool) {
	if err := q.create(); err != nil {
		return fmt.Sprintf("not moved: %v", err), false
	}
	dst := filepath.Join(q.run, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Sprintf("not moved: %v", err), false
	}
	if err := os.Rename(path, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "gone meanwhile", true
		}
		return fmt.Sprintf("not moved: %v", err), false
	}
	if hashed != nil {
		if fi, err := os.Lstat(dst); err == nil && !os.SameFile(fi, hashed) {
			// A fill committed verified bytes under this name after the
			// hash: they are good, put them back.
			if err := os.Rename(dst, path); err != nil {
				return fmt.Sprintf("a new copy was committed during the check and moved by mistake to %s; move it back: %v", dst, err), false
			}
			return "left as it is: a new copy was committed during the check", true
		}
	}
	return "moved to " + dst, true
}

// create makes the run's directory, named for the current UTC time (with
// a counter when a directory of that second exists).
func (q *quarantine) create() error {
	if q.run != "" {
		return nil
	}
	if err := os.MkdirAll(q.dir, 0o755); err != nil {
		return fmt.Errorf("create quarantine: %w", err)
	}
	base := filepath.Join(q.dir, time.Now().UTC().Format("20060102T150405Z"))
	for i := 1; ; i++ {
		name := base
		if i > 1 {
			name += "-" + strconv.Itoa(i)
		}
		err := os.Mkdir(name, 0o755)
		if err == nil {
			q.run = name
			return nil
		}
		if !errors.Is(err, fs.ErrExist) || i > 100 {
			return fmt.Errorf("create quarantine: %w", err)
		}
	}
}

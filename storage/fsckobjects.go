package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// checkObjectBlobs is checkBlobs for a store whose blobs are objects: it
// lists them, reads each (a GET) and hashes it. An object that cannot be
// read ends the check with an error (a network failure is no proof of
// damage); one whose bytes do not hash to its digest is corrupt, and with
// opts.Repair it is copied to the quarantine and removed from the object
// store, so that the next pull fetches it again.
func (c *Checker) checkObjectBlobs(ctx context.Context, r *CheckReport, opts CheckOptions, q *quarantine) (map[string]string, error) {
	prog := CheckProgress{Phase: "blobs"}
	var blobs []BlobInfo
	err := c.blobs.objects.List(ctx, "", func(bi BlobInfo) error {
		blobs = append(blobs, bi)
		prog.BlobsTotal++
		prog.BytesTotal += bi.Size
		return nil
	})
	if err != nil {
		return nil, err
	}
	if tmp, err := os.ReadDir(c.blobs.tmpDir()); err == nil {
		r.TempFiles = len(tmp)
	}
	opts.Progress(prog)
	corrupt := map[string]string{}
	buf := make([]byte, hashBufferSize)
	for _, bi := range blobs {
		size, why, err := hashObject(ctx, c.blobs.objects, bi.Digest, buf, func(n int64) {
			prog.Bytes += n
			opts.Progress(prog)
		})
		switch {
		case errors.Is(err, ErrNotFound):
			continue // removed meanwhile (a live store)
		case err != nil:
			return nil, err
		}
		r.Blobs++
		r.BlobBytes += size
		prog.Blobs++
		opts.Progress(prog)
		if why == "" {
			continue
		}
		corrupt[bi.Digest] = why
		rel := filepath.Join("sha256", bi.Digest[7:9], bi.Digest[7:])
		p := Problem{Kind: ProblemCorruptBlob, Digest: bi.Digest, Path: rel, Detail: why}
		if opts.Repair {
			p.Action, p.Repaired = q.takeObject(ctx, c.blobs, bi.Digest, rel)
		}
		r.add(p)
	}
	return corrupt, nil
}

// hashObject reads the object of digest through buf and returns its size
// and why it does not verify against digest ("" when it does).
func hashObject(ctx context.Context, objects ObjectStore, digest string, buf []byte, progress func(int64)) (int64, string, error) {
	body, _, err := objects.Open(ctx, digest)
	if err != nil {
		return 0, "", err
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, &checkReader{ctx: ctx, r: body, report: progress}, buf)
	if err != nil {
		if ctx.Err() != nil {
			return n, "", fmt.Errorf("check blobs: %w", context.Cause(ctx))
		}
		return n, "", fmt.Errorf("check blob %s: %w", digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return n, fmt.Sprintf("its %d bytes hash to %s", n, got), nil
	}
	return n, "", nil
}

// takeObject copies the object of digest to the quarantine (as rel) and
// removes it from the store. It returns the action taken and whether the
// problem is gone.
func (q *quarantine) takeObject(ctx context.Context, blobs *Blobs, digest, rel string) (string, bool) {
	if err := q.create(); err != nil {
		return fmt.Sprintf("not moved: %v", err), false
	}
	dst := filepath.Join(q.run, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Sprintf("not moved: %v", err), false
	}
	body, _, err := blobs.objects.Open(ctx, digest)
	if errors.Is(err, ErrNotFound) {
		return "gone meanwhile", true
	}
	if err != nil {
		return fmt.Sprintf("not moved: %v", err), false
	}
	defer body.Close()
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Sprintf("not moved: %v", err), false
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Sprintf("not moved: copy to %s: %v", dst, err), false
	}
	if err := blobs.Remove(ctx, digest); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Sprintf("copied to %s, not removed from the object store: %v", dst, err), false
	}
	return "copied to " + dst + " and removed from the object store", true
}

package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Kinds of problem a check reports.
const (
	// ProblemCorruptBlob: a stored blob whose bytes do not hash to the
	// digest it is stored under, or cannot be read.
	ProblemCorruptBlob = "corrupt-blob"
	// ProblemStrayFile: a file or directory in the blob tree that is not
	// named for a digest where it lies (regcache never writes one).
	ProblemStrayFile = "stray-file"
	// ProblemBadLink: a per-repository link to a blob the store does not
	// hold, holds corrupt, or holds with another size; or a link record
	// that cannot be read.
	ProblemBadLink = "bad-link"
	// ProblemBadTag: a tag pointer to a manifest that is not linked to its
	// repository or not stored intact; or a tag record that cannot be read.
	ProblemBadTag = "bad-tag"
)

// ErrCheckRunning reports that a check of the same store is already running.
var ErrCheckRunning = errors.New("a check of this store is already running")

// Problem is one thing a check found wrong.
type Problem struct {
	Kind       string `json:"kind"`
	Repository string `json:"repository,omitempty"`
	Tag        string `json:"tag,omitempty"`
	Digest     string `json:"digest,omitempty"`
	// Path is the file in the blob tree, relative to its root.
	Path   string `json:"path,omitempty"`
	Detail string `json:"detail"`
	// Action says what the repair did, or why it left the problem.
	Action string `json:"action,omitempty"`
	// Repaired is true once the problem is gone: a file moved to the
	// quarantine, a record removed.
	Repaired bool `json:"repaired"`
}

// CheckReport is what a check looked at and found.
type CheckReport struct {
	// Repair tells whether the check repaired what it found.
	Repair       bool  `json:"repair"`
	Blobs        int   `json:"blobs"`
	BlobBytes    int64 `json:"blobBytes"`
	Repositories int   `json:"repositories"`
	Links        int   `json:"links"`
	Tags         int   `json:"tags"`
	// TempFiles counts files in the temporary directory: fills in progress
	// on a live store, or fills a crash interrupted (never visible, and
	// removed when regcache serve starts).
	TempFiles    int       `json:"tempFiles"`
	CorruptBlobs int       `json:"corruptBlobs"`
	StrayFiles   int       `json:"strayFiles"`
	BadLinks     int       `json:"badLinks"`
	BadTags      int       `json:"badTags"`
	Repaired     int       `json:"repaired"`
	Unrepaired   int       `json:"unrepaired"`
	Problems     []Problem `json:"problems"`
}

// OK reports whether nothing is wrong any more: no problem found, or
// every one repaired.
func (r CheckReport) OK() bool { return r.Unrepaired == 0 }

func (r *CheckReport) add(p Problem) {
	switch p.Kind {
	case ProblemCorruptBlob:
		r.CorruptBlobs++
	case ProblemStrayFile:
		r.StrayFiles++
	case ProblemBadLink:
		r.BadLinks++
	case ProblemBadTag:
		r.BadTags++
	}
	if p.Repaired {
		r.Repaired++
	} else {
		r.Unrepaired++
	}
	r.Problems = append(r.Problems, p)
}

// CheckProgress is reported while a check runs.
type CheckProgress struct {
	// Phase is "blobs" (hashing the stored blobs) or "metadata" (links
	// and tag pointers).
	Phase string `json:"phase"`
	// Blobs and Bytes count what was hashed; the totals were counted
	// before hashing began (blobs may come and go on a live store).
	Blobs             int   `json:"blobs"`
	BlobsTotal        int   `json:"blobsTotal"`
	Bytes             int64 `json:"bytes"`
	BytesTotal        int64 `json:"bytesTotal"`
	Repositories      int   `json:"repositories"`
	RepositoriesTotal int   `json:"repositoriesTotal"`
}

// CheckOptions adjust a check.
type CheckOptions struct {
	// Repair moves corrupt blobs and stray files to the quarantine
	// directory and removes bad links and tag pointers.
	Repair bool
	// Progress, when set, is called as the check advances (from the
	// checking goroutine; it should return quickly).
	Progress func(CheckProgress)
}

// Checker verifies a blob store and its metadata, and repairs them.
//
// It is safe on a live store, next to fills and serving: it reads only
// committed blobs (fills write in the temporary directory, which it
// never touches, and rename into place only verified bytes); it moves a
// blob to the quarantine only if the file it moved is the one it hashed
// (a blob committed anew meanwhile under that name is put back); and it
// removes a link or tag pointer only if its record is unchanged since it
// was judged bad. Nothing is ever deleted outright: blobs and stray
// files are moved to the quarantine directory, for an operator to look
// at and remove.
type Checker struct {
	blobs      *Blobs
	meta       *Meta
	quarantine string
	running    atomic.Bool
}

// NewChecker returns a checker of blobs and meta that moves what it
// quarantines under quarantineDir (which must be on the blob store's
// filesystem: files are renamed, never copied).
func NewChecker(blobs *Blobs, meta *Meta, quarantineDir string) *Checker {
	return &Checker{blobs: blobs, meta: meta, quarantine: quarantineDir}
}

// Check verifies every stored blob (its bytes hash to the digest it is
// stored under), every link (the blob is stored intact, with the size the
// link records) and every tag pointer (it points at a manifest linked to
// its repository and stored intact), and with opts.Repair repairs what is
// wrong. Problems are in the report; the error is for a check that could
// not run to the end (ctx ended, a blob or the database unreadable for
// lack of permission), with the report of what was done so far.
// It returns ErrCheckRunning when another check of c is running.
func (c *Checker) Check(ctx context.Context, opts CheckOptions) (CheckReport, error) {
	if !c.running.CompareAndSwap(false, true) {
		return CheckReport{}, ErrCheckRunning
	}
	defer c.running.Store(false)
	if opts.Progress == nil {
		opts.Progress = func(CheckProgress) {}
	}
	r := CheckReport{Repair: opts.Repair, Problems: []Problem{}}
	q := &quarantine{dir: c.quarantine}
	corrupt, err := c.checkBlobs(ctx, &r, opts, q)
	if err != nil {
		return r, err
	}
	if err := c.checkMeta(ctx, &r, opts, corrupt); err != nil {
		return r, err
	}
	return r, nil
}

// repoRecords is a snapshot of one repository's links and tags: raw
// records by key, compared again before a repair removes one.
type repoRecords struct {
	links map[string][]byte
	tags  map[string][]byte
}

// checkMeta checks the links and tags of every repository, one
// repository at a time: a short read transaction for the snapshot, blob
// lookups outside any transaction, and one write transaction for the
// repository's repairs.
func (c *Checker) checkMeta(ctx context.Context, r *CheckReport, opts CheckOptions, corrupt map[string]string) error {
	repos, err := c.repositories()
	if err != nil {
		return err
	}
	prog := CheckProgress{Phase: "metadata", Blobs: r.Blobs, BlobsTotal: r.Blobs, Bytes: r.BlobBytes, BytesTotal: r.BlobBytes, RepositoriesTotal: len(repos)}
	opts.Progress(prog)
	for _, repo := range repos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("check metadata: %w", context.Cause(ctx))
		}
		snap, err := c.snapshot(repo)
		if err != nil {
			return err
		}
		r.Repositories++
		r.Links += len(snap.links)
		r.Tags += len(snap.tags)
		badLinks, badTags := c.judge(ctx, repo, snap, corrupt)
		if opts.Repair && (len(badLinks) > 0 || len(badTags) > 0) {
			if err := c.remove(ctx, repo, snap, badLinks, badTags, corrupt); err != nil {
				return err
			}
		}
		for _, p := range append(badLinks, badTags...) {
			r.add(p)
		}
		prog.Repositories++
		opts.Progress(prog)
	}
	return nil
}

// repositories lists every repository with metadata, sorted.
func (c *Checker) repositories() ([]string, error) {
	var repos []string
	err := c.meta.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRepos).ForEachBucket(func(k []byte) error {
			repos = append(repos, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	sort.Strings(repos)
	return repos, nil
}

// snapshot reads the links and tags of repo in one transaction.
func (c *Checker) snapshot(repo string) (repoRecords, error) {
	s := repoRecords{links: map[string][]byte{}, tags: map[string][]byte{}}
	err := c.meta.db.View(func(tx *bolt.Tx) error {
		for sub, into := range map[string]map[string][]byte{string(bucketLinks): s.links, string(bucketTags): s.tags} {
			b, err := repoBucket(tx, repo, []byte(sub), false)
			if err != nil || b == nil {
				continue
			}
			if err := b.ForEach(func(k, v []byte) error {
				into[string(k)] = bytes.Clone(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("read metadata of %s: %w", repo, err)
	}
	return s, nil
}

// judge returns the bad links and tags of repo's snapshot; corrupt holds
// the digests found corrupt by the blob phase (and why).
func (c *Checker) judge(ctx context.Context, repo string, snap repoRecords, corrupt map[string]string) (badLinks, badTags []Problem) {
	good := map[string]bool{} // digests linked to repo and stored intact
	for _, key := range sortedKeys(snap.links) {
		why := c.judgeLink(ctx, key, snap.links[key], corrupt)
		if why == "" {
			good[key] = true
			continue
		}
		badLinks = append(badLinks, Problem{Kind: ProblemBadLink, Repository: repo, Digest: key, Detail: why})
	}
	for _, name := range sortedKeys(snap.tags) {
		var t Tag
		var why string
		switch err := json.Unmarshal(snap.tags[name], &t); {
		case err != nil:
			why = fmt.Sprintf("unreadable record: %v", err)
		case good[t.Digest]:
			continue
		case snap.links[t.Digest] == nil:
			why = fmt.Sprintf("points at %s, which is not linked to the repository", t.Digest)
		default:
			why = fmt.Sprintf("points at %s, whose link is bad", t.Digest)
		}
		badTags = append(badTags, Problem{Kind: ProblemBadTag, Repository: repo, Tag: name, Digest: t.Digest, Detail: why})
	}
	return badLinks, badTags
}

// judgeLink returns why the link record raw under key is bad, "" when it
// is good.
func (c *Checker) judgeLink(ctx context.Context, key string, raw []byte, corrupt map[string]string) string {
	var l Link
	if err := json.Unmarshal(raw, &l); err != nil {
		return fmt.Sprintf("unreadable record: %v", err)
	}
	if _, err := ParseDigest(key); err != nil {
		return fmt.Sprintf("not a digest: %v", err)
	}
	if l.Digest != key {
		return fmt.Sprintf("the record names %q", l.Digest)
	}
	if why, ok := corrupt[key]; ok {
		return "the blob is corrupt: " + why
	}
	size, err := c.blobs.Stat(ctx, key)
	switch {
	case errors.Is(err, ErrNotFound):
		return "dangling: the blob is not stored"
	case err != nil:
		return fmt.Sprintf("the blob cannot be looked up: %v", err)
	case size != l.Size:
		return fmt.Sprintf("records %d bytes, the blob has %d", l.Size, size)
	}
	return ""
}

// remove deletes the bad links and tags of repo in one transaction and
// records the outcome in each problem. A record is removed only if it is
// still what the snapshot judged and still bad (on a live store a fill
// may have stored the blob or written the record anew meanwhile): the
// judgement is made again inside the transaction, which serialises it
// with the fills' links.
func (c *Checker) remove(ctx context.Context, repo string, snap repoRecords, badLinks, badTags []Problem, corrupt map[string]string) error {
	err := c.meta.updateRepo(repo, func(tx *bolt.Tx) error {
		links, err := repoBucket(tx, repo, bucketLinks, false)
		if err != nil {
			return err
		}
		tags, err := repoBucket(tx, repo, bucketTags, false)
		if err != nil {
			return err
		}
		get := func(b *bolt.Bucket, key string) []byte {
			if b == nil {
				return nil
			}
			return b.Get([]byte(key))
		}
		stillBad := func(b *bolt.Bucket, key string, before []byte, judge func(cur []byte) bool) string {
			cur := get(b, key)
			switch {
			case !bytes.Equal(cur, before):
				return "left as it is: the record changed during the check"
			case !judge(cur):
				return "left as it is: it became good during the check"
			}
			return ""
		}
		linkBad := func(digest string) bool {
			raw := get(links, digest)
			return raw == nil || c.judgeLink(ctx, digest, raw, corrupt) != ""
		}
		for i := range badLinks {
			p := &badLinks[i]
			if p.Action = stillBad(links, p.Digest, snap.links[p.Digest], func(cur []byte) bool { return c.judgeLink(ctx, p.Digest, cur, corrupt) != "" }); p.Action != "" {
				continue
			}
			if err := links.Delete([]byte(p.Digest)); err != nil {
				return err
			}
			p.Action, p.Repaired = "removed from the metadata", true
		}
		for i := range badTags {
			p := &badTags[i]
			if p.Action = stillBad(tags, p.Tag, snap.tags[p.Tag], func(cur []byte) bool {
				var t Tag
				return json.Unmarshal(cur, &t) != nil || linkBad(t.Digest)
			}); p.Action != "" {
				continue
			}
			if err := tags.Delete([]byte(p.Tag)); err != nil {
				return err
			}
			p.Action, p.Repaired = "removed from the metadata", true
		}
		return nil
	})
	if err != nil {
		for _, ps := range [][]Problem{badLinks, badTags} {
			for i := range ps {
				ps[i].Action, ps[i].Repaired = "", false
			}
		}
		return fmt.Errorf("repair metadata of %s: %w", repo, err)
	}
	return nil
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// isPermission reports an error that a check must not take for damage:
// a store readable only by another user would be quarantined whole.
func isPermission(err error) bool { return errors.Is(err, fs.ErrPermission) }

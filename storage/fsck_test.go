package storage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// checkStore is a data directory as regcache serve lays it out, opened for
// a check.
type checkStore struct {
	dir     string
	blobs   *Blobs
	meta    *Meta
	checker *Checker
}

func newCheckStore(t *testing.T) *checkStore {
	t.Helper()
	s := &checkStore{dir: t.TempDir()}
	var err error
	if s.blobs, err = OpenBlobs(filepath.Join(s.dir, "blobs")); err != nil {
		t.Fatal(err)
	}
	s.meta = openTestMeta(t)
	s.checker = NewChecker(s.blobs, s.meta, filepath.Join(s.dir, "quarantine"))
	return s
}

// put stores content as a blob and links it to repo (as a manifest when
// tag is not ""), returning its digest.
func (s *checkStore) put(t *testing.T, repo, tag string, content []byte) string {
	t.Helper()
	d := digestOf(content)
	if err := s.blobs.Put(t.Context(), d, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	s.link(t, repo, tag, Link{Digest: d, Size: int64(len(content))})
	return d
}

func (s *checkStore) link(t *testing.T, repo, tag string, l Link) {
	t.Helper()
	var tg *Tag
	if l.LinkedAt.IsZero() {
		l.LinkedAt = time.Now()
	}
	if tag != "" {
		l.MediaType = mediaManifest
		tg = &Tag{Name: tag, FetchedAt: time.Now()}
	}
	if err := s.meta.Link(t.Context(), repo, l, tg); err != nil {
		t.Fatal(err)
	}
}

// rawPut writes a record as is, bypassing Link's checks (damage).
func (s *checkStore) rawPut(t *testing.T, repo string, sub []byte, key string, value []byte) {
	t.Helper()
	err := s.meta.update(func(tx *bolt.Tx) error {
		b, err := repoBucket(tx, repo, sub, true)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (s *checkStore) blobPath(digest string) string {
	hexPart := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(s.dir, "blobs", "sha256", hexPart[:2], hexPart)
}

func (s *checkStore) check(t *testing.T, repair bool) CheckReport {
	t.Helper()
	r, err := s.checker.Check(t.Context(), CheckOptions{Repair: repair})
	if err != nil {
		t.Fatalf("Check(repair=%v): %v", repair, err)
	}
	return r
}

// problemKey names a problem for comparison: kind and what it is about.
func problemKey(p Problem) string {
	return strings.Join([]string{p.Kind, p.Repository, p.Tag, p.Digest, p.Path}, " ")
}

func problemKeys(ps []Problem) []string {
	keys := make([]string, len(ps))
	for i, p := range ps {
		keys[i] = problemKey(p)
	}
	slices.Sort(keys)
	return keys
}

func TestCheckCleanStore(t *testing.T) {
	t.Parallel()
	s := newCheckStore(t)
	m := s.put(t, "hub/app", "v1", []byte(`{"manifest":1}`))
	s.put(t, "hub/app", "", payload(3<<20))
	// The same blob linked to a second repository.
	s.link(t, "other/app", "latest", Link{Digest: m, Size: int64(len(`{"manifest":1}`))})

	r := s.check(t, false)
	if len(r.Problems) != 0 || !r.OK() {
		t.Fatalf("clean store: problems %+v", r.Problems)
	}
	if r.Blobs != 2 || r.BlobBytes != 3<<20+int64(len(`{"manifest":1}`)) || r.Repositories != 2 || r.Links != 3 || r.Tags != 2 {
		t.Errorf("counts: %d blobs, %d bytes, %d repositories, %d links, %d tags; want 2, %d, 2, 3, 2",
			r.Blobs, r.BlobBytes, r.Repositories, r.Links, r.Tags, 3<<20+len(`{"manifest":1}`))
	}
}

// Every kind of damage is found and reported without repair, which
// changes nothing; the repair quarantines the damaged files (their bytes
// kept) and removes the bad records, leaving the good ones; a second
// check finds nothing.
func TestCheckFindsAndRepairs(t *testing.T) {
	t.Parallel()
	s := newCheckStore(t)
	ctx := t.Context()
	good := s.put(t, "hub/app", "v1", []byte(`{"good":true}`))
	goodLayer := s.put(t, "hub/app", "", payload(1<<20))

	// A blob with a flipped byte, linked as the manifest of a tag.
	flipped := s.put(t, "hub/bad", "v1", []byte(`{"flipped":true}`))
	raw, _ := os.ReadFile(s.blobPath(flipped))
	raw[3] ^= 0xff
	writeFile(t, s.blobPath(flipped), raw)
	// A truncated blob (a crash between write and rename cannot do this;
	// a disk or an operator can).
	truncated := s.put(t, "hub/bad", "", payload(2<<20+7))
	if err := os.Truncate(s.blobPath(truncated), 1<<20); err != nil {
		t.Fatal(err)
	}
	// A link and a tag to a blob the store does not hold.
	missing := digestOf([]byte("never stored"))
	s.link(t, "hub/bad", "gone", Link{Digest: missing, Size: 12})
	// A link recording the wrong size of a good blob.
	s.link(t, "hub/size", "", Link{Digest: goodLayer, Size: 5})
	// A tag to a digest not linked to its repository (but linked elsewhere).
	s.rawPut(t, "hub/orphan", bucketTags, "v1", []byte(`{"name":"v1","digest":"`+good+`"}`))
	// Records that cannot be read.
	s.rawPut(t, "hub/junk", bucketLinks, "sha256:nothex", []byte(`{"digest":"sha256:nothex"}`))
	s.rawPut(t, "hub/junk", bucketLinks, good, []byte(`{not json`))
	s.rawPut(t, "hub/junk", bucketTags, "broken", []byte(`[]`))
	// Stray files in the blob tree.
	writeFile(t, filepath.Join(s.dir, "blobs", "sha256", "README"), []byte("stray"))
	writeFile(t, filepath.Join(s.dir, "blobs", "sha256", "ab", "not-a-digest"), []byte("stray"))
	misplaced := digestOf([]byte("misplaced"))
	writeFile(t, filepath.Join(s.dir, "blobs", "sha256", "00", strings.TrimPrefix(misplaced, "sha256:")), []byte("misplaced"))
	// A fill in progress (or interrupted): neither a problem nor touched.
	tmp := filepath.Join(s.dir, "blobs", "tmp", "fill-123")
	writeFile(t, tmp, []byte("half"))

	want := []string{
		problemKey(Problem{Kind: ProblemCorruptBlob, Digest: flipped, Path: "sha256/" + flipped[7:9] + "/" + flipped[7:]}),
		problemKey(Problem{Kind: ProblemCorruptBlob, Digest: truncated, Path: "sha256/" + truncated[7:9] + "/" + truncated[7:]}),
		problemKey(Problem{Kind: ProblemStrayFile, Path: "sha256/README"}),
		problemKey(Problem{Kind: ProblemStrayFile, Path: "sha256/ab/not-a-digest"}),
		problemKey(Problem{Kind: ProblemStrayFile, Path: "sha256/00/" + misplaced[7:]}),
		problemKey(Problem{Kind: ProblemBadLink, Repository: "hub/bad", Digest: flipped}),
		problemKey(Problem{Kind: ProblemBadLink, Repository: "hub/bad", Digest: truncated}),
		problemKey(Problem{Kind: ProblemBadLink, Repository: "hub/bad", Digest: missing}),
		problemKey(Problem{Kind: ProblemBadLink, Repository: "hub/size", Digest: goodLayer}),
		problemKey(Problem{Kind: ProblemBadLink, Repository: "hub/junk", Digest: "sha256:nothex"}),
		problemKey(Problem{Kind: ProblemBadLink, Repository: "hub/junk", Digest: good}),
		problemKey(Problem{Kind: ProblemBadTag, Repository: "hub/bad", Tag: "v1", Digest: flipped}),
		problemKey(Problem{Kind: ProblemBadTag, Repository: "hub/bad", Tag: "gone", Digest: missing}),
		problemKey(Problem{Kind: ProblemBadTag, Repository: "hub/orphan", Tag: "v1", Digest: good}),
		problemKey(Problem{Kind: ProblemBadTag, Repository: "hub/junk", Tag: "broken"}),
	}
	slices.Sort(want)

	r := s.check(t, false)
	if got := problemKeys(r.Problems); !slices.Equal(got, want) {
		t.Fatalf("problems found:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if r.CorruptBlobs != 2 || r.StrayFiles != 3 || r.BadLinks != 6 || r.BadTags != 4 || r.Unrepaired != 15 || r.Repaired != 0 || r.OK() {
		t.Errorf("counts: %d corrupt, %d stray, %d links, %d tags, %d unrepaired, %d repaired",
			r.CorruptBlobs, r.StrayFiles, r.BadLinks, r.BadTags, r.Unrepaired, r.Repaired)
	}
	if r.TempFiles != 1 {
		t.Errorf("temp files = %d, want 1", r.TempFiles)
	}
	for _, p := range r.Problems {
		if p.Detail == "" || p.Repaired || p.Action != "" {
			t.Errorf("problem %s: detail %q, repaired %v, action %q; want a detail and no action", problemKey(p), p.Detail, p.Repaired, p.Action)
		}
	}
	if _, err := os.Stat(s.blobPath(flipped)); err != nil {
		t.Errorf("a check without repair moved a blob: %v", err)
	}
	if _, err := s.meta.Tag(ctx, "hub/bad", "gone"); err != nil {
		t.Errorf("a check without repair removed a tag: %v", err)
	}

	r = s.check(t, true)
	if got := problemKeys(r.Problems); !slices.Equal(got, want) {
		t.Fatalf("problems repaired:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if r.Repaired != 15 || r.Unrepaired != 0 || !r.OK() {
		t.Errorf("repair: %d repaired, %d unrepaired; want 15, 0", r.Repaired, r.Unrepaired)
	}
	quarantined := map[string][]byte{}
	for _, p := range r.Problems {
		if !p.Repaired || p.Action == "" {
			t.Errorf("problem %s: repaired %v, action %q", problemKey(p), p.Repaired, p.Action)
		}
		if p.Path != "" {
			dst, ok := strings.CutPrefix(p.Action, "moved to ")
			if !ok || !strings.HasPrefix(dst, filepath.Join(s.dir, "quarantine")+string(filepath.Separator)) || !strings.HasSuffix(dst, p.Path) {
				t.Errorf("problem %s: action %q; want moved under %s/quarantine", problemKey(p), p.Action, s.dir)
				continue
			}
			b, err := os.ReadFile(dst)
			if err != nil {
				t.Errorf("quarantined file: %v", err)
			}
			quarantined[p.Path] = b
		}
	}
	if got := quarantined["sha256/"+flipped[7:9]+"/"+flipped[7:]]; !bytes.Equal(got, raw) {
		t.Errorf("the quarantined corrupt blob holds %q, want its bytes as they were (%q)", got, raw)
	}
	assertAbsent(t, s.blobs, flipped)
	assertAbsent(t, s.blobs, truncated)
	assertContent(t, s.blobs, good, []byte(`{"good":true}`))
	assertContent(t, s.blobs, goodLayer, payload(1<<20))
	if _, err := s.meta.Linked(ctx, "hub/app", goodLayer); err != nil {
		t.Errorf("the good link of %s in hub/app was removed with the bad one in hub/size: %v", goodLayer, err)
	}
	if _, err := s.meta.Tag(ctx, "hub/app", "v1"); err != nil {
		t.Errorf("a good tag was removed: %v", err)
	}
	for _, tag := range []string{"v1", "gone"} {
		if _, err := s.meta.Tag(ctx, "hub/bad", tag); !errors.Is(err, ErrNotFound) {
			t.Errorf("bad tag hub/bad:%s after repair: %v; want removed", tag, err)
		}
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("the check touched the temporary directory: %v", err)
	}

	if r := s.check(t, false); len(r.Problems) != 0 {
		t.Errorf("after repair, a check finds %v", problemKeys(r.Problems))
	}
}

// A blob committed anew under the name of a corrupt one between the hash
// and the move (a fill on a live store) is put back, not quarantined.
func TestQuarantineKeepsABlobCommittedMeanwhile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "blobs", "sha256", "ab", "abcd")
	writeFile(t, path, []byte("corrupt"))
	hashed, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// The corrupt file is replaced by a new one (a fill's rename).
	writeFile(t, path+".new", []byte("verified"))
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	q := &quarantine{dir: filepath.Join(dir, "quarantine")}
	action, ok := q.move(path, "sha256/ab/abcd", hashed)
	if !ok || !strings.Contains(action, "new copy") {
		t.Errorf("move = %q, %v; want the new copy left in place", action, ok)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "verified" {
		t.Errorf("after the move the blob holds %q, %v; want the new copy", b, err)
	}
	// The file hashed is moved.
	hashed, _ = os.Stat(path)
	if action, ok := q.move(path, "sha256/ab/abcd", hashed); !ok || !strings.HasPrefix(action, "moved to ") {
		t.Errorf("move of the hashed file = %q, %v", action, ok)
	}
}

// A link or tag rewritten, or made good by a blob stored, between the
// check's snapshot and its repair (a fill on a live store) is left alone.
func TestRepairLeavesRecordsChangedMeanwhile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		meanwhile func(t *testing.T, s *checkStore)
		action    string
	}{
		{"linked anew", func(t *testing.T, s *checkStore) { s.put(t, "hub/app", "v1", []byte("refilled")) }, "changed"},
		{"blob stored", func(t *testing.T, s *checkStore) {
			if err := s.blobs.Put(t.Context(), digestOf([]byte("refilled")), 8, strings.NewReader("refilled")); err != nil {
				t.Fatal(err)
			}
		}, "became good"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newCheckStore(t)
			missing := digestOf([]byte("refilled"))
			s.link(t, "hub/app", "v1", Link{Digest: missing, Size: 8})
			snap, err := s.checker.snapshot("hub/app")
			if err != nil {
				t.Fatal(err)
			}
			badLinks, badTags := s.checker.judge(t.Context(), "hub/app", snap, nil)
			if len(badLinks) != 1 || len(badTags) != 1 {
				t.Fatalf("judged %d bad links and %d bad tags, want 1 and 1", len(badLinks), len(badTags))
			}
			tc.meanwhile(t, s)
			if err := s.checker.remove(t.Context(), "hub/app", snap, badLinks, badTags, nil); err != nil {
				t.Fatal(err)
			}
			for _, p := range append(badLinks, badTags...) {
				if p.Repaired || !strings.Contains(p.Action, tc.action) {
					t.Errorf("%s: repaired %v, action %q; want left as it is (%s)", problemKey(p), p.Repaired, p.Action, tc.action)
				}
			}
			if _, err := s.meta.Tag(t.Context(), "hub/app", "v1"); err != nil {
				t.Errorf("the tag was removed: %v", err)
			}
			if _, err := s.meta.Linked(t.Context(), "hub/app", missing); err != nil {
				t.Errorf("the link was removed: %v", err)
			}
		})
	}
}

// Progress counts every hashed byte, within large blobs too; one check runs
// at a time; a check ends with its context.
func TestCheckProgressExclusionAndCancel(t *testing.T) {
	t.Parallel()
	s := newCheckStore(t)
	s.put(t, "hub/app", "", payload(40<<20))
	s.put(t, "hub/app", "v1", []byte(`{}`))
	var seen []CheckProgress
	var second error
	r, err := s.checker.Check(t.Context(), CheckOptions{Progress: func(p CheckProgress) {
		if len(seen) == 0 {
			_, second = s.checker.Check(t.Context(), CheckOptions{})
		}
		seen = append(seen, p)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(second, ErrCheckRunning) {
		t.Errorf("a second check during the first: %v, want ErrCheckRunning", second)
	}
	within := 0 // reports from inside a blob: bytes grew, blobs did not
	for i, p := range seen[1:] {
		prev := seen[i]
		if p.Bytes < prev.Bytes || p.Blobs < prev.Blobs {
			t.Errorf("progress went back: %+v after %+v", p, prev)
		}
		if p.Bytes > prev.Bytes && p.Blobs == prev.Blobs {
			within++
		}
	}
	last := seen[len(seen)-1]
	if last.Bytes != r.BlobBytes || last.BytesTotal != r.BlobBytes || last.Blobs != 2 || last.Repositories != 1 || last.RepositoriesTotal != 1 {
		t.Errorf("last progress %+v; want every byte, blob and repository counted", last)
	}
	if within < 2 {
		t.Errorf("%d progress reports within blobs, want at least 2 within the 40 MiB one (every 16 MiB): %+v", within, seen)
	}

	ctx, cancel := context.WithCancel(t.Context())
	_, err = s.checker.Check(ctx, CheckOptions{Progress: func(CheckProgress) { cancel() }})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled check: %v, want context.Canceled", err)
	}
	if _, err := s.checker.Check(t.Context(), CheckOptions{}); err != nil {
		t.Errorf("a check after a cancelled one: %v", err)
	}
}

// InspectBlobs opens a store without touching its temporary files, and
// refuses a path that is not a directory.
func TestInspectBlobsLeavesTempFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := OpenBlobs(dir); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp", "fill-1")
	writeFile(t, tmp, []byte("half"))
	if _, err := InspectBlobs(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("InspectBlobs removed a temporary file: %v", err)
	}
	if _, err := InspectBlobs(filepath.Join(dir, "nope")); err == nil {
		t.Errorf("InspectBlobs of a missing directory succeeded")
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A check's memory does not grow with blob size: hashing a 64 MiB blob
// allocates about what hashing a 1 MiB one does. Not parallel: it reads
// the process's allocation counter.
func TestCheckMemoryDoesNotGrowWithBlobSize(t *testing.T) {
	allocated := func(size int) uint64 {
		s := newCheckStore(t)
		s.put(t, "hub/app", "", payload(size))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if r := s.check(t, false); r.Blobs != 1 || len(r.Problems) != 0 {
			t.Fatalf("check of one %d-byte blob: %+v", size, r)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := allocated(1<<20), allocated(64<<20)
	if large > small+(1<<20) {
		t.Errorf("checking a 64 MiB blob allocated %d bytes, a 1 MiB one %d: memory grows with blob size", large, small)
	}
}

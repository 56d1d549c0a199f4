// Package warm pre-loads the cache: for each reference it pulls the
// manifest, the child manifests of the platforms asked for, and every blob
// they reference through the puller, exactly as clients would, so that
// they are served later with the upstream gone. It runs in the server (the
// admin API streams its progress), so that an operator's laptop warms a
// remote regcache without the bytes passing through it.
package warm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/manifest"
)

// Source reads repositories, fetching what is not cached (cache.Puller).
type Source interface {
	Route(ctx context.Context, name, ns string) (string, error)
	Manifest(ctx context.Context, repo, ref string) (cache.Content, error)
	Blob(ctx context.Context, repo, digest string) (cache.Content, error)
}

// Request is what to warm.
type Request struct {
	// References are repositories of this registry (hub/app:1) or upstream
	// references resolved through the rules (docker.io/library/app:1); a
	// reference without a tag or digest means :latest.
	References []string `json:"references"`
	// Platforms limits indexes to these platforms (os/arch or
	// os/arch/variant); empty: every platform.
	Platforms []string `json:"platforms,omitempty"`
}

// MaxReferences bounds one request.
const MaxReferences = 10000

// Event is one line of a warm's progress.
type Event struct {
	// Type is start, progress, done or error for one reference, and
	// summary at the end.
	Type string `json:"type"`
	Ref  string `json:"ref,omitempty"`
	// Repository and Digest: where Ref was resolved to, and its top
	// manifest.
	Repository string   `json:"repository,omitempty"`
	Digest     string   `json:"digest,omitempty"`
	Platforms  []string `json:"platforms,omitempty"`
	// Blobs and Bytes are what the reference needs (config and layers).
	Blobs int   `json:"blobs,omitempty"`
	Bytes int64 `json:"bytes,omitempty"`
	// BlobsDone and BytesDone are what is cached so far.
	BlobsDone int   `json:"blobsDone,omitempty"`
	BytesDone int64 `json:"bytesDone,omitempty"`
	// Fetched counts the bytes that came from the upstream (the rest was
	// cached already).
	Fetched int64   `json:"fetched,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	Error   string  `json:"error,omitempty"`
	// Summary: how many references were warmed, and which failed.
	Succeeded int      `json:"succeeded,omitempty"`
	Failed    []string `json:"failed,omitempty"`
}

// Event types.
const (
	TypeStart    = "start"
	TypeProgress = "progress"
	TypeDone     = "done"
	TypeError    = "error"
	TypeSummary  = "summary"
)

// ErrInvalid reports a request that cannot run as given.
var ErrInvalid = errors.New("invalid warm request")

// Warmer warms references through a Source.
type Warmer struct {
	src Source
	log *slog.Logger
	// Refs and Blobs bound the references, and the blobs of one reference,
	// warmed at once; Tick is the period of progress events.
	Refs, Blobs int
	Tick        time.Duration
}

// New returns a Warmer with the default concurrency.
func New(src Source, log *slog.Logger) *Warmer {
	return &Warmer{src: src, log: log, Refs: 4, Blobs: 4, Tick: 500 * time.Millisecond}
}

// Check validates a request before anything runs: the references parse
// and the platforms are os/arch[/variant].
func Check(req Request) error {
	if len(req.References) == 0 {
		return fmt.Errorf("%w: no reference given", ErrInvalid)
	}
	if len(req.References) > MaxReferences {
		return fmt.Errorf("%w: %d references, at most %d at once", ErrInvalid, len(req.References), MaxReferences)
	}
	for _, r := range req.References {
		if _, _, err := cache.ParseReference(r); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	for _, p := range req.Platforms {
		if _, err := parsePlatform(p); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return nil
}

// Warm warms every reference of req (which Check accepted), calling emit
// with the progress (from one goroutine at a time); it returns the
// summary, also emitted last.
func (w *Warmer) Warm(ctx context.Context, req Request, emit func(Event)) Event {
	var mu sync.Mutex
	send := func(e Event) {
		mu.Lock()
		emit(e)
		mu.Unlock()
	}
	var platforms []manifest.Platform
	for _, p := range req.Platforms {
		pl, _ := parsePlatform(p)
		platforms = append(platforms, pl)
	}
	jobs := make(chan string)
	var (
		wg      sync.WaitGroup
		resMu   sync.Mutex
		summary = Event{Type: TypeSummary}
		active  = map[string]*job{}
	)
	for range max(w.Refs, 1) {
		wg.Go(func() {
			for ref := range jobs {
				j := &job{ref: ref, start: time.Now()}
				resMu.Lock()
				active[ref] = j
				resMu.Unlock()
				err := w.one(ctx, j, platforms, send)
				resMu.Lock()
				delete(active, ref)
				if err != nil {
					summary.Failed = append(summary.Failed, ref)
				} else {
					summary.Succeeded++
					summary.Bytes += j.total
					summary.Fetched += j.fetched.Load()
				}
				resMu.Unlock()
				if err != nil {
					send(Event{Type: TypeError, Ref: ref, Repository: j.repo, Error: cache.PublicMessage(err)})
					w.log.Warn("warm failed", "ref", ref, "err", err)
					continue
				}
				send(j.event(TypeDone))
			}
		})
	}
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		t := time.NewTicker(w.Tick)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				resMu.Lock()
				var evs []Event
				for _, j := range active {
					if j.started.Load() {
						evs = append(evs, j.event(TypeProgress))
					}
				}
				resMu.Unlock()
				sort.Slice(evs, func(a, b int) bool { return evs[a].Ref < evs[b].Ref })
				for _, e := range evs {
					send(e)
				}
			}
		}
	}()
	seen := map[string]bool{}
feed:
	for _, ref := range req.References {
		ref = strings.TrimSpace(ref)
		if seen[ref] {
			continue
		}
		seen[ref] = true
		select {
		case jobs <- ref:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(stop)
	<-ticked
	sort.Strings(summary.Failed)
	send(summary)
	return summary
}

// job is the state of one reference being warmed.
type job struct {
	ref       string
	repo      string
	digest    string
	platforms []string
	blobs     int
	total     int64
	start     time.Time
	started   atomic.Bool
	done      atomic.Int64 // bytes
	doneBlobs atomic.Int64
	fetched   atomic.Int64
}

func (j *job) event(typ string) Event {
	return Event{Type: typ, Ref: j.ref, Repository: j.repo, Digest: j.digest, Platforms: j.platforms, Blobs: j.blobs, Bytes: j.total,
		BlobsDone: int(j.doneBlobs.Load()), BytesDone: j.done.Load(), Fetched: j.fetched.Load(), Seconds: time.Since(j.start).Seconds()}
}

// one warms one reference.
func (w *Warmer) one(ctx context.Context, j *job, platforms []manifest.Platform, send func(Event)) error {
	name, ref, err := cache.ParseReference(j.ref)
	if err != nil {
		return err
	}
	repo, err := cache.RouteReference(ctx, w.src, name)
	if err != nil {
		return err
	}
	j.repo = repo
	blobs, plats, digest, err := w.manifests(ctx, repo, ref, platforms)
	if err != nil {
		return err
	}
	j.digest, j.platforms = digest, plats
	for _, b := range blobs {
		j.total += b.Size
	}
	j.blobs = len(blobs)
	j.started.Store(true)
	send(j.event(TypeStart))
	sem := make(chan struct{}, max(w.Blobs, 1))
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for _, b := range blobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := w.blob(ctx, j, repo, b); err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}

// manifests fetches ref's manifest and, for an index, the child manifests
// of the platforms asked for (all when none), and returns the blobs they
// reference (each once), the platforms and the top manifest's digest.
func (w *Warmer) manifests(ctx context.Context, repo, ref string, platforms []manifest.Platform) ([]manifest.Descriptor, []string, string, error) {
	top, m, err := w.manifest(ctx, repo, ref)
	if err != nil {
		return nil, nil, "", err
	}
	seen := map[string]bool{}
	var blobs []manifest.Descriptor
	var plats []string
	add := func(m manifest.Manifest) {
		for _, b := range m.Blobs() {
			if !seen[b.Digest] && !manifest.Foreign(b) {
				seen[b.Digest] = true
				blobs = append(blobs, b)
			}
		}
	}
	var walk func(m manifest.Manifest, depth int) error
	walk = func(m manifest.Manifest, depth int) error {
		if !manifest.IsIndex(m.MediaType) {
			add(m)
			return nil
		}
		if depth > 4 {
			return fmt.Errorf("%s@%s: indexes nested more than 4 deep", repo, top)
		}
		var have []string
		matched := 0
		for _, d := range m.Manifests {
			if d.Platform != nil {
				have = append(have, platformString(*d.Platform))
			}
			if !wanted(d.Platform, platforms) {
				continue
			}
			matched++
			_, child, err := w.manifest(ctx, repo, d.Digest)
			if err != nil {
				return err
			}
			if d.Platform != nil {
				plats = append(plats, platformString(*d.Platform))
			}
			if err := walk(child, depth+1); err != nil {
				return err
			}
		}
		if matched == 0 && len(platforms) > 0 {
			return fmt.Errorf("%w: %s@%s lists no manifest for %s (it has %s)", cache.ErrManifestUnknown, repo, top, strings.Join(requested(platforms), ", "), strings.Join(have, ", "))
		}
		return nil
	}
	if err := walk(m, 0); err != nil {
		return nil, nil, "", err
	}
	return blobs, plats, top, nil
}

// manifest reads and parses one manifest through the source.
func (w *Warmer) manifest(ctx context.Context, repo, ref string) (string, manifest.Manifest, error) {
	c, err := w.src.Manifest(ctx, repo, ref)
	if err != nil {
		return "", manifest.Manifest{}, err
	}
	defer c.Body.Close()
	body, err := io.ReadAll(io.LimitReader(c.Body, manifest.MaxSize+1))
	if err != nil {
		return "", manifest.Manifest{}, fmt.Errorf("read manifest %s@%s: %w", repo, c.Digest, err)
	}
	m, err := manifest.Parse(c.MediaType, body)
	if err != nil {
		return "", manifest.Manifest{}, fmt.Errorf("manifest %s@%s: %w", repo, c.Digest, err)
	}
	return c.Digest, m, nil
}

// blob caches one blob by reading it through the source.
func (w *Warmer) blob(ctx context.Context, j *job, repo string, d manifest.Descriptor) error {
	c, err := w.src.Blob(ctx, repo, d.Digest)
	if err != nil {
		return err
	}
	defer c.Body.Close()
	n, err := io.Copy(progress{j: j, fetched: c.Fetched}, c.Body)
	if err != nil {
		return fmt.Errorf("blob %s@%s: %w", repo, d.Digest, err)
	}
	if n != d.Size {
		return fmt.Errorf("blob %s@%s: %d bytes, its manifest says %d", repo, d.Digest, n, d.Size)
	}
	if err := c.Stored(ctx); err != nil {
		return fmt.Errorf("blob %s@%s: %w", repo, d.Digest, err)
	}
	j.doneBlobs.Add(1)
	return nil
}

// progress counts the bytes of a job as they are read.
type progress struct {
	j       *job
	fetched bool
}

// Write counts b as done (and as fetched when it came from the upstream).
func (p progress) Write(b []byte) (int, error) {
	p.j.done.Add(int64(len(b)))
	if p.fetched {
		p.j.fetched.Add(int64(len(b)))
	}
	return len(b), nil
}

// parsePlatform reads os/arch[/variant].
func parsePlatform(s string) (manifest.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return manifest.Platform{}, fmt.Errorf("platform %q: want os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm/v7", s)
	}
	p := manifest.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func platformString(p manifest.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func requested(ps []manifest.Platform) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = platformString(p)
	}
	return out
}

// wanted reports whether an index entry of platform p is asked for: any
// when none is named; an entry without a platform (an attestation) only
// then; a variant must match when the request names one.
func wanted(p *manifest.Platform, ps []manifest.Platform) bool {
	if len(ps) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	for _, q := range ps {
		if q.OS == p.OS && q.Architecture == p.Architecture && (q.Variant == "" || q.Variant == p.Variant) {
			return true
		}
	}
	return false
}

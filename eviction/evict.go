package eviction

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regcache/regcache/storage"
)

// Blobs is the content-addressed store (storage.Blobs).
type Blobs interface {
	WaitUsage(ctx context.Context) (storage.Usage, error)
	Walk(ctx context.Context, fn func(storage.BlobInfo) error) error
	Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64, error)
	Remove(ctx context.Context, digest string) error
}

// Meta is the metadata a run reads and changes (storage.Meta).
type Meta interface {
	Contents(ctx context.Context) ([]storage.RepoLink, []storage.RepoTag, error)
	AccessTimes(ctx context.Context) (map[string]time.Time, error)
	Remove(ctx context.Context, removals []storage.Removal, forget []string) error
}

// overNotifier signals commits that take the store over a bound
// (storage.Blobs; optional).
type overNotifier interface {
	NotifyOver(limit int64) <-chan struct{}
}

// Rules tells cached repositories from local ones (cache.Store).
type Rules interface {
	Covering(repo string) (rule, source string, ok bool)
}

// Collector runs a collection under the guard shared with garbage
// collection (local.Repos): sweep calls remove, under the guard's lock,
// with the candidates no operation protected since the collection began.
type Collector interface {
	Collect(ctx context.Context, fn func(ctx context.Context, sweep func(candidates []string, remove func(gone []string) error) error) error) error
}

// Flusher writes the access times gathered in memory (cache.Puller).
type Flusher interface {
	FlushAccess(ctx context.Context) error
}

// Options are the bounds and their timing; zero values take the defaults.
type Options struct {
	// MaxSize is the most the store may hold, in bytes (0: no size bound).
	MaxSize int64
	// LowWater is the fraction of MaxSize a run evicts down to (default
	// 0.9).
	LowWater float64
	// UnusedAfter evicts images nobody pulled for this long (0: never).
	UnusedAfter time.Duration
	// CheckInterval is how often the store's usage is compared with
	// MaxSize (default 1s).
	CheckInterval time.Duration
	// AgeInterval is how often unused images are looked for (default a
	// quarter of UnusedAfter, between a minute and an hour).
	AgeInterval time.Duration
	// Now returns the current time (tests).
	Now func() time.Time
	// Lock, when set, is a lock every replica sharing the store takes
	// (the shared metadata store's): a run takes it first and is skipped
	// while another replica holds it, so one run at a time changes the
	// store. The store is then counted by walking it within the run (a
	// replica's own count misses what the others commit and remove), and
	// Run starts a run every CheckInterval (default a minute) instead of
	// comparing its own count with MaxSize. nil: this process alone uses
	// the store.
	Lock func(ctx context.Context) (unlock func(), ok bool, err error)
}

// NoteBusy is the Report.Note of a run skipped because another replica
// sharing the store is running one.
const NoteBusy = "another replica sharing the store is running an eviction"

// DefaultLowWater is the default of Options.LowWater.
const DefaultLowWater = 0.9

// Evictor keeps the store within its bounds.
type Evictor struct {
	blobs   Blobs
	meta    Meta
	rules   Rules
	guard   Collector
	flusher Flusher
	log     *slog.Logger
	opts    Options

	refs refCache // parsed manifests, by digest (manifests.go)

	mu     sync.Mutex // one run at a time
	lastMu sync.Mutex
	last   Report

	runs    atomic.Int64
	images  atomic.Int64
	bytes   atomic.Int64
	skipped atomic.Int64
}

// New wires an Evictor; flusher may be nil.
func New(blobs Blobs, meta Meta, rules Rules, guard Collector, flusher Flusher, log *slog.Logger, opts Options) (*Evictor, error) {
	if opts.MaxSize < 0 {
		return nil, fmt.Errorf("eviction: maximum size %d: must not be negative", opts.MaxSize)
	}
	if opts.UnusedAfter < 0 {
		return nil, fmt.Errorf("eviction: unused-after %v: must not be negative", opts.UnusedAfter)
	}
	if opts.LowWater == 0 {
		opts.LowWater = DefaultLowWater
	}
	if opts.LowWater <= 0 || opts.LowWater > 1 {
		return nil, fmt.Errorf("eviction: low-water mark %v: must be a fraction of the maximum size, above 0 and at most 1", opts.LowWater)
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = time.Second
		if opts.Lock != nil {
			opts.CheckInterval = time.Minute
		}
	}
	if opts.AgeInterval <= 0 {
		opts.AgeInterval = min(max(opts.UnusedAfter/4, time.Minute), time.Hour)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Evictor{blobs: blobs, meta: meta, rules: rules, guard: guard, flusher: flusher, log: log, opts: opts,
		refs: refCache{m: map[string]refs{}}}, nil
}

// Enabled reports whether any bound is set.
func (e *Evictor) Enabled() bool { return e.opts.MaxSize > 0 || e.opts.UnusedAfter > 0 }

// Report says what a run evicted, or would evict.
type Report struct {
	// DryRun: nothing was removed; the figures are what would go.
	DryRun bool `json:"dryRun,omitempty"`
	// StoredBytes is what the store held when the run began.
	StoredBytes int64 `json:"storedBytes"`
	// MaxSize and LowWaterBytes are the size bound and the level a run
	// evicts down to (0: no size bound).
	MaxSize       int64 `json:"maxSize,omitempty"`
	LowWaterBytes int64 `json:"lowWaterBytes,omitempty"`
	// UnusedAfter is the age bound (0: none).
	UnusedAfter time.Duration `json:"unusedAfter,omitempty"`
	// Images are those evicted, least recently used first.
	Images []Image `json:"images"`
	// Blobs and Bytes count the blobs whose bytes went.
	Blobs int   `json:"blobsDeleted"`
	Bytes int64 `json:"bytesFreed"`
	// Kept counts images chosen but kept because they were being fetched
	// or linked while the run went on.
	Kept int `json:"keptInUse,omitempty"`
	// Note says why the store is still over its bound, when it is.
	Note string `json:"note,omitempty"`
	// Duration is how long the run took.
	Duration time.Duration `json:"duration"`
}

// Image is one evicted image.
type Image struct {
	Repository string `json:"repository"`
	// Digest is the image's top manifest (an index, or a manifest); for a
	// blob linked without a manifest, that blob.
	Digest string   `json:"digest"`
	Tags   []string `json:"tags,omitempty"`
	// Manifests counts the manifests that went with it.
	Manifests int       `json:"manifests"`
	LastUsed  time.Time `json:"lastUsed"`
	// Bytes is what its eviction freed (blobs nothing else needs).
	Bytes int64 `json:"bytes"`
	// Reason is "size" (the store was over its maximum size) or "unused"
	// (nobody pulled it for UnusedAfter).
	Reason string `json:"reason"`
}

// Reasons of Image.Reason.
const (
	ReasonSize   = "size"
	ReasonUnused = "unused"
)

// Run compares the store with its bounds every CheckInterval (and looks
// for unused images every AgeInterval) and evicts when needed, until ctx
// ends. It returns at once when no bound is set.
func (e *Evictor) Run(ctx context.Context) {
	if !e.Enabled() {
		return
	}
	check := time.NewTicker(e.opts.CheckInterval)
	defer check.Stop()
	var ageC <-chan time.Time
	if e.opts.UnusedAfter > 0 {
		age := time.NewTicker(e.opts.AgeInterval)
		defer age.Stop()
		ageC = age.C
	}
	// The commit that takes the store over its bound wakes the loop at
	// once; the check interval is the backstop.
	var overC <-chan struct{}
	if n, ok := e.blobs.(overNotifier); ok && e.opts.MaxSize > 0 && e.opts.Lock == nil {
		overC = n.NotifyOver(e.opts.MaxSize)
	}
	run := func(why string) {
		if _, err := e.Evict(ctx, false); err != nil && ctx.Err() == nil {
			e.log.Warn("eviction failed", "trigger", why, "err", err)
		}
	}
	if e.overLimit(ctx) || e.opts.UnusedAfter > 0 {
		run("start")
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C:
			if e.overLimit(ctx) {
				run(ReasonSize)
			}
		case <-overC:
			if e.overLimit(ctx) {
				run(ReasonSize)
			}
		case <-ageC:
			run(ReasonUnused)
		}
	}
}

// overLimit reports whether the store holds more than MaxSize. A shared
// store is counted by the run itself, under the lock: every check is a run.
func (e *Evictor) overLimit(ctx context.Context) bool {
	if e.opts.MaxSize <= 0 {
		return false
	}
	if e.opts.Lock != nil {
		return true
	}
	u, err := e.blobs.WaitUsage(ctx)
	n := u.Bytes
	if err != nil {
		e.log.Warn("eviction: read the store's usage", "err", err)
		return false
	}
	return n > e.opts.MaxSize
}

// Evict runs once now: it evicts the images unused for UnusedAfter and,
// when the store holds more than MaxSize, the least recently used ones
// until it holds at most the low-water mark. With dryRun it only reports
// what would go.
func (e *Evictor) Evict(ctx context.Context, dryRun bool) (Report, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	if e.opts.Lock != nil {
		unlock, ok, err := e.opts.Lock(ctx)
		if err != nil {
			return Report{}, fmt.Errorf("eviction: take the lock of the shared store: %w", err)
		}
		if !ok {
			return Report{DryRun: dryRun, MaxSize: e.opts.MaxSize, UnusedAfter: e.opts.UnusedAfter, Note: NoteBusy}, nil
		}
		defer unlock()
	}
	if e.flusher != nil {
		if err := e.flusher.FlushAccess(ctx); err != nil {
			e.log.Warn("eviction: flush access times", "err", err)
		}
	}
	var rep Report
	err := e.guard.Collect(ctx, func(ctx context.Context, sweep func([]string, func([]string) error) error) error {
		p, err := e.plan(ctx)
		if err != nil {
			return err
		}
		rep = p.report(dryRun)
		if dryRun || len(p.chosen) == 0 {
			return nil
		}
		return e.execute(ctx, p, sweep, &rep)
	})
	rep.Duration = time.Since(start)
	if err != nil {
		return rep, err
	}
	if !dryRun {
		e.runs.Add(1)
		e.lastMu.Lock()
		e.last = rep
		e.lastMu.Unlock()
		if len(rep.Images) > 0 || rep.Note != "" {
			e.log.Info("eviction", "images", len(rep.Images), "blobs", rep.Blobs, "bytesFreed", rep.Bytes, "keptInUse", rep.Kept,
				"storedBefore", rep.StoredBytes, "maxSize", rep.MaxSize, "note", rep.Note, "duration", rep.Duration.Round(time.Millisecond))
		}
	}
	return rep, nil
}

// errStopped is returned when ctx ends during a run.
var errStopped = errors.New("eviction stopped")

// Runs counts the runs since start (dry runs not included).
func (e *Evictor) Runs() int64 { return e.runs.Load() }

// EvictedImages counts the images evicted since start.
func (e *Evictor) EvictedImages() int64 { return e.images.Load() }

// EvictedBytes counts the bytes freed by eviction since start.
func (e *Evictor) EvictedBytes() int64 { return e.bytes.Load() }

// KeptInUse counts the images a run chose but kept because they were
// fetched or linked meanwhile.
func (e *Evictor) KeptInUse() int64 { return e.skipped.Load() }

// MaxSize is the size bound in bytes (0: none).
func (e *Evictor) MaxSize() int64 { return e.opts.MaxSize }

// LowWaterBytes is the level a size-triggered run evicts down to.
func (e *Evictor) LowWaterBytes() int64 { return int64(float64(e.opts.MaxSize) * e.opts.LowWater) }

// UnusedAfter is the age bound (0: none).
func (e *Evictor) UnusedAfter() time.Duration { return e.opts.UnusedAfter }

// State is what the admin API and metrics show of eviction.
type State struct {
	StoredBytes   int64         `json:"storedBytes"`
	StoredBlobs   int64         `json:"storedBlobs"`
	MaxSize       int64         `json:"maxSize,omitempty"`
	LowWaterBytes int64         `json:"lowWaterBytes,omitempty"`
	UnusedAfter   time.Duration `json:"unusedAfter,omitempty"`
	Runs          int64         `json:"evictionRuns"`
	EvictedImages int64         `json:"evictedImages"`
	EvictedBytes  int64         `json:"evictedBytes"`
	// Last is the last run's report (nil before the first).
	Last *Report `json:"lastEviction,omitempty"`
}

// State returns the store's usage, the bounds and what eviction did.
func (e *Evictor) State(ctx context.Context) (State, error) {
	u, err := e.blobs.WaitUsage(ctx)
	n, blobs := u.Bytes, u.Blobs
	if err != nil {
		return State{}, err
	}
	st := State{StoredBytes: n, StoredBlobs: blobs, MaxSize: e.opts.MaxSize, UnusedAfter: e.opts.UnusedAfter,
		Runs: e.Runs(), EvictedImages: e.EvictedImages(), EvictedBytes: e.EvictedBytes()}
	if e.opts.MaxSize > 0 {
		st.LowWaterBytes = e.LowWaterBytes()
	}
	if st.Runs > 0 {
		last := e.LastReport()
		st.Last = &last
	}
	return st, nil
}

// StoredBytes is what the store holds now.
func (e *Evictor) StoredBytes(ctx context.Context) (int64, error) {
	u, err := e.blobs.WaitUsage(ctx)
	n := u.Bytes
	return n, err
}

// LastReport is the report of the last run that was not a dry run.
func (e *Evictor) LastReport() Report {
	e.lastMu.Lock()
	defer e.lastMu.Unlock()
	return e.last
}

package main

// The eviction run: a set of images larger than regcache's --max-size is
// pulled in a loop by --clients clients, once with the limit and once
// without; the figures are throughput, blob latency (p50, p99), errors,
// upstream traffic, evictions and the most the store held, read as ratios
// of the limited run to the unlimited one.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// scEvict names the eviction run among the scenarios.
const scEvict = "evict"

// evictOptions are the eviction run's flags.
type evictOptions struct {
	Total     int64 // bytes of images in the set
	Limit     int64 // regcache's --max-size
	LayerSize int64
	Layers    int
	Loops     int // how many times the set is pulled
}

// evictFlags registers the eviction run's flags.
func evictFlags(fs *flag.FlagSet, o *evictOptions) {
	o.Total, o.Limit, o.LayerSize, o.Layers, o.Loops = 10<<30, 2<<30, 16<<20, 4, 2
	fs.Var((*sizeFlag)(&o.Total), "evict-total", "bytes of images the eviction run pulls in a loop (a multiple of --evict-layers x --evict-layer-size)")
	fs.Var((*sizeFlag)(&o.Limit), "evict-limit", "regcache's --max-size in the eviction run")
	fs.Var((*sizeFlag)(&o.LayerSize), "evict-layer-size", "size of each layer of the eviction run's images")
	fs.IntVar(&o.Layers, "evict-layers", o.Layers, "layers per image of the eviction run")
	fs.IntVar(&o.Loops, "evict-loops", o.Loops, "how many times the eviction run's clients pull the whole set, between them")
}

// EvictionResult is the eviction run in the JSON.
type EvictionResult struct {
	SetBytes   int64         `json:"set_bytes"`
	Images     int           `json:"images"`
	LimitBytes int64         `json:"limit_bytes"`
	Clients    int           `json:"clients"`
	Loops      int           `json:"loops"`
	Runs       []EvictionRun `json:"runs"`
	// Ratios of the limited run to the unlimited one (null when either
	// had errors).
	ThroughputRatio *float64 `json:"throughput_ratio"`
	P99Ratio        *float64 `json:"blob_p99_ratio"`
}

// EvictionRun is one pass of the eviction run.
type EvictionRun struct {
	Name           string  `json:"name"`
	MaxSize        int64   `json:"max_size"` // 0: no limit
	Pulls          int     `json:"pulls"`
	BytesServed    int64   `json:"bytes_served"`
	WallSeconds    float64 `json:"wall_seconds"`
	ThroughputMBps float64 `json:"throughput_mb_per_s"`
	BlobP50ms      float64 `json:"blob_p50_ms"`
	BlobP99ms      float64 `json:"blob_p99_ms"`
	UpstreamBytes  int64   `json:"upstream_bytes"`
	PeakStored     int64   `json:"peak_stored_bytes"`
	EvictedImages  int64   `json:"evicted_images"`
	EvictionRuns   int64   `json:"eviction_runs"`
	Errors         int     `json:"errors"`
	Error          string  `json:"error"`
}

func (e *EvictionResult) errors() int {
	if e == nil {
		return 0
	}
	n := 0
	for _, r := range e.Runs {
		n += r.Errors
	}
	return n
}

// evictionRun prepares the image set and measures it with and without
// the limit.
func (b *bench) evictionRun(ctx context.Context) {
	if !slices.Contains(b.opts.Scenarios, scEvict) || !slices.Contains(b.opts.Servers, srvRegcache) || ctx.Err() != nil {
		return
	}
	o := b.opts.Evict
	per := int64(o.Layers) * o.LayerSize
	if per <= 0 || o.Total < per || o.Loops < 1 {
		b.logf("eviction run skipped: --evict-total %s holds no image of %d x %s", formatSize(o.Total), o.Layers, formatSize(o.LayerSize))
		return
	}
	var key [32]byte
	copy(key[:], "regcache eviction run image set")
	rng := rand.NewChaCha8(key)
	n := int(o.Total / per)
	imgs := make([]*Image, 0, n)
	start := time.Now()
	for i := range n {
		img, err := makeImage(b.blobDir, fmt.Sprintf("bench/evict-%d", i), "latest", rng, sameSizes(o.Layers, o.LayerSize))
		if err == nil {
			err = pushManifest(ctx, b.upstream.URL(), img)
		}
		if err != nil {
			b.logf("eviction run: prepare images: %v", err)
			b.eviction = &EvictionResult{Runs: []EvictionRun{{Name: "setup", Errors: 1, Error: err.Error()}}}
			return
		}
		imgs = append(imgs, img)
	}
	var set int64
	for _, img := range imgs {
		set += img.Bytes()
	}
	b.logf("generated %d eviction images (%s) in %v", n, humanSize(set), time.Since(start).Round(time.Millisecond))
	res := &EvictionResult{SetBytes: set, Images: n, LimitBytes: o.Limit, Clients: b.opts.Clients, Loops: o.Loops}
	for _, limit := range []int64{o.Limit, 0} {
		res.Runs = append(res.Runs, b.evictPass(ctx, imgs, limit))
	}
	lim, free := res.Runs[0], res.Runs[1]
	if lim.Errors == 0 && free.Errors == 0 && free.ThroughputMBps > 0 && free.BlobP99ms > 0 {
		t, p := lim.ThroughputMBps/free.ThroughputMBps, lim.BlobP99ms/free.BlobP99ms
		res.ThroughputRatio, res.P99Ratio = &t, &p
	}
	b.eviction = res
}

// evictPass runs the clients against a fresh regcache with maxSize (0:
// none).
func (b *bench) evictPass(ctx context.Context, imgs []*Image, maxSize int64) EvictionRun {
	run := EvictionRun{Name: "no limit", MaxSize: maxSize}
	if maxSize > 0 {
		run.Name = formatSize(maxSize) + " limit"
	}
	tokenFile := filepath.Join(b.work, "data", "evict-token")
	const token = "bench-eviction-admin-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		run.Errors, run.Error = 1, err.Error()
		return run
	}
	b.regcacheArgs = []string{"--admin-token-file", tokenFile}
	if maxSize > 0 {
		b.regcacheArgs = append(b.regcacheArgs, "--max-size", strconv.FormatInt(maxSize, 10))
	}
	defer func() { b.regcacheArgs = nil }()
	err := b.withCache(ctx, srvRegcache, func(c *child) error {
		if err := resetUpstream(ctx, b.upstream.URL()); err != nil {
			return err
		}
		queue := make(chan *Image, len(imgs)*b.opts.Evict.Loops)
		rng := rand.New(rand.NewPCG(1, 2))
		for range b.opts.Evict.Loops {
			for _, i := range rng.Perm(len(imgs)) {
				queue <- imgs[i]
			}
		}
		close(queue)
		watch := watchStore(ctx, c.URL(), token)
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		started := time.Now()
		for range b.opts.Clients {
			wg.Go(func() {
				hc := newClient()
				defer hc.CloseIdleConnections()
				for img := range queue {
					d, n, err := pullTimed(ctx, hc, c.URL(), img)
					mu.Lock()
					run.Pulls++
					run.BytesServed += n
					lat = append(lat, d...)
					if err != nil {
						run.Errors++
						if run.Error == "" {
							run.Error = err.Error()
						}
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		wall := time.Since(started)
		st := watch()
		run.WallSeconds = wall.Seconds()
		run.ThroughputMBps = float64(run.BytesServed) / 1e6 / wall.Seconds()
		run.BlobP50ms, run.BlobP99ms = percentile(lat, 50), percentile(lat, 99)
		run.PeakStored, run.EvictedImages, run.EvictionRuns = st.peak, st.evicted, st.runs
		up, err := upstreamStats(ctx, b.upstream.URL())
		if err != nil {
			return err
		}
		run.UpstreamBytes, _, _ = up.totals()
		return nil
	})
	if err != nil {
		run.Errors++
		if run.Error == "" {
			run.Error = err.Error()
		}
	}
	b.logf("%-15s %-12s %d client(s): %d pulls, %s in %.2fs (%.0f MB/s), blob p50 %.1fms p99 %.1fms, upstream %s, store peak %s, %d images evicted in %d runs, %d error(s)",
		scEvict, run.Name, b.opts.Clients, run.Pulls, humanSize(run.BytesServed), run.WallSeconds, run.ThroughputMBps, run.BlobP50ms, run.BlobP99ms,
		humanSize(run.UpstreamBytes), humanSize(run.PeakStored), run.EvictedImages, run.EvictionRuns, run.Errors)
	if run.Error != "" {
		b.logf("  first error: %s", run.Error)
	}
	return run
}

// pullTimed pulls img like pull does, verifying every body, and returns
// how long each blob took to arrive whole.
func pullTimed(ctx context.Context, c *http.Client, base string, img *Image) ([]time.Duration, int64, error) {
	prefix := base + "/v2/" + img.Repo
	n, _, err := fetch(ctx, c, prefix+"/manifests/"+img.Tag, manifestAccept, Blob{img.Digest, int64(len(img.Manifest))}, true)
	if err != nil {
		return nil, n, fmt.Errorf("%s manifest: %w", img.Repo, err)
	}
	var lat []time.Duration
	for _, bl := range append([]Blob{img.Config}, img.Layers...) {
		start := time.Now()
		k, _, err := fetch(ctx, c, prefix+"/blobs/"+bl.Digest, "", bl, true)
		n += k
		if err != nil {
			return lat, n, fmt.Errorf("%s blob %s: %w", img.Repo, bl.Digest, err)
		}
		lat = append(lat, time.Since(start))
	}
	return lat, n, nil
}

// storeWatch is what the store did during a pass.
type storeWatch struct {
	peak, evicted, runs int64
}

// watchStore polls regcache's status every 100ms until the returned stop
// is called, which returns the peak of the store and the evictions.
func watchStore(ctx context.Context, base, token string) (stop func() storeWatch) {
	ctx, cancel := context.WithCancel(ctx)
	var w storeWatch
	done := make(chan struct{})
	poll := func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/admin/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		var st struct { // regcache's status summary
			Store struct {
				Bytes   int64 `json:"bytes"`
				Evicted struct {
					Runs   int64 `json:"runs"`
					Images int64 `json:"images"`
				} `json:"evicted"`
			} `json:"store"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st) == nil {
			w.peak = max(w.peak, st.Store.Bytes)
			w.evicted, w.runs = st.Store.Evicted.Images, st.Store.Evicted.Runs
		}
	}
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				poll()
			}
		}
	}()
	return func() storeWatch {
		cancel()
		<-done
		ctx = context.Background()
		poll() // the final figures
		return w
	}
}

// printEviction writes the eviction run as aligned text.
func printEviction(w io.Writer, e *EvictionResult) {
	if e == nil {
		return
	}
	fmt.Fprintf(w, "\neviction run: %d images (%s) pulled %d time(s) by %d clients, regcache --max-size %s vs no limit\n",
		e.Images, humanSize(e.SetBytes), e.Loops, e.Clients, formatSize(e.LimitBytes))
	rows := [][]string{{"run", "pulls", "MB/s", "blob p50 ms", "blob p99 ms", "upstream", "store peak", "evicted images", "errors"}}
	for _, r := range e.Runs {
		rows = append(rows, []string{r.Name, strconv.Itoa(r.Pulls), fmt.Sprintf("%.0f", r.ThroughputMBps), fmt.Sprintf("%.1f", r.BlobP50ms),
			fmt.Sprintf("%.1f", r.BlobP99ms), humanSize(r.UpstreamBytes), humanSize(r.PeakStored), strconv.FormatInt(r.EvictedImages, 10), strconv.Itoa(r.Errors)})
	}
	writeAligned(w, rows, 1)
	fmt.Fprintf(w, "limited / unlimited: throughput %s, blob p99 %s; errors with the limit: %d (must be 0)\n", fmtValue(e.ThroughputRatio), fmtValue(e.P99Ratio), e.errorsOf(0))
	for _, r := range e.Runs {
		if r.Error != "" {
			fmt.Fprintf(w, "%s / %s: %d error(s), first: %s\n", scEvict, r.Name, r.Errors, r.Error)
		}
	}
}

func (e *EvictionResult) errorsOf(i int) int {
	if i >= len(e.Runs) {
		return 0
	}
	return e.Runs[i].Errors
}

// evictionMarkdown renders the eviction run for BENCHMARKS.md.
func evictionMarkdown(e *EvictionResult) string {
	if e == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nEviction run: %d images (%s) pulled %d time(s) by %d clients, regcache `--max-size %s` against the same run without a limit.\n\n",
		e.Images, humanSize(e.SetBytes), e.Loops, e.Clients, formatSize(e.LimitBytes))
	b.WriteString("| run | pulls | MB/s | blob p50 ms | blob p99 ms | upstream | store peak | evicted images | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range e.Runs {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.1f | %.1f | %s | %s | %d | %d |\n", r.Name, r.Pulls, r.ThroughputMBps, r.BlobP50ms, r.BlobP99ms,
			humanSize(r.UpstreamBytes), humanSize(r.PeakStored), r.EvictedImages, r.Errors)
	}
	fmt.Fprintf(&b, "\nLimited / unlimited: throughput %s, blob p99 latency %s; errors with the limit: %d (must be 0).\n", fmtValue(e.ThroughputRatio), fmtValue(e.P99Ratio), e.errorsOf(0))
	return b.String()
}

package main

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Servers, as named in the table and the JSON.
const (
	srvDirect       = "direct"       // the upstream itself
	srvStatic       = "static"       // net/http file server: the physical limit
	srvRegcache     = "regcache"     // cmd/regcache
	srvDistribution = "distribution" // distribution/v3 in proxy mode
)

// Scenarios, as named in the table and the JSON. The "16" and "1GiB" in the
// names are the defaults of --clients and --big-blob-size; the JSON records
// the actual figures.
const (
	scCold1     = "cold-1"
	scCold16    = "cold-16"
	scWarm16    = "warm-16"
	scTTFBBig   = "ttfb-cold-1GiB"
	scBigCold16 = "cold-16-1GiB"
)

var (
	allServers   = []string{srvDirect, srvStatic, srvRegcache, srvDistribution}
	allScenarios = []string{scCold1, scCold16, scWarm16, scTTFBBig, scBigCold16, scEvict}
	// cacheServers are the servers with a cache, started fresh per cold scenario.
	cacheServers = []string{srvRegcache, srvDistribution}
)

// applies says which servers each scenario runs against.
var applies = map[string][]string{
	scCold1:     {srvDirect, srvRegcache, srvDistribution},
	scCold16:    {srvRegcache, srvDistribution},
	scWarm16:    {srvStatic, srvRegcache, srvDistribution},
	scTTFBBig:   {srvDirect, srvRegcache, srvDistribution},
	scBigCold16: {srvRegcache, srvDistribution},
	scEvict:     {srvRegcache},
}

// bench is one run of the benchmark.
type bench struct {
	opts  Options
	work  string
	logf  func(format string, a ...any)
	procs *procSet

	binDir   string
	blobDir  string
	upstream *child
	static   *child
	app, big *Image
	nextData int
	results  []Result
	// regcacheArgs are added to regcache's command line (the eviction run).
	regcacheArgs []string
	eviction     *EvictionResult
}

// want reports whether scenario runs against server in this run.
func (b *bench) want(scenario, server string) bool {
	if scenario == scBigCold16 && !b.opts.BigCold {
		return false
	}
	return slices.Contains(b.opts.Scenarios, scenario) && slices.Contains(b.opts.Servers, server) &&
		slices.Contains(applies[scenario], server)
}

// run prepares everything and runs every selected scenario. It returns the
// report of what was measured, also when it stopped early with an error.
func (b *bench) run(ctx context.Context) (*Report, error) {
	started := time.Now()
	load := loadAverage()
	if load > float64(runtime.NumCPU())/2 {
		b.logf("warning: load average %.2f on %d CPUs: other work on this machine will skew the figures", load, runtime.NumCPU())
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	b.binDir = filepath.Join(b.work, "bin")
	b.logf("building %s (no -race)", strings.Join(childPackages, " "))
	if err := buildChildren(ctx, b.binDir); err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "data"} {
		if err := os.MkdirAll(filepath.Join(b.work, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := b.prepare(ctx); err != nil {
		return nil, err
	}
	report := &Report{
		Machine: describeMachine(ctx),
		Config: RunConfig{
			Layers: b.opts.Layers, LayerSize: b.opts.LayerSize, Clients: b.opts.Clients,
			BigBlobSize: b.opts.BigBlobSize, Verify: b.opts.Verify,
			ImageBytes: b.app.Bytes(), BigImageBytes: b.big.Bytes(),
			Revision: gitRevision(ctx, root), Started: started.UTC().Format(time.RFC3339),
		},
	}
	err = b.scenarios(ctx)
	report.Results = b.results
	report.Ratios = computeRatios(b.results)
	report.Eviction = b.eviction
	report.Config.DurationSeconds = time.Since(started).Seconds()
	report.Machine.LoadStart, report.Machine.LoadEnd = load, loadAverage()
	return report, err
}

// prepare writes the images, starts the upstream (and the static server) and
// pushes the manifests.
func (b *bench) prepare(ctx context.Context) error {
	b.blobDir = filepath.Join(b.work, "upstream-blobs")
	var key [32]byte
	if _, err := crand.Read(key[:]); err != nil {
		return err
	}
	rng := rand.NewChaCha8(key)
	t := time.Now()
	var err error
	if b.app, err = makeImage(b.blobDir, "bench/app", "latest", rng, b.opts.Layers, b.opts.LayerSize); err != nil {
		return err
	}
	if b.big, err = makeImage(b.blobDir, "bench/big", "latest", rng, 1, b.opts.BigBlobSize); err != nil {
		return err
	}
	b.logf("generated bench/app (%d x %s) and bench/big (1 x %s) in %v",
		b.opts.Layers, formatSize(b.opts.LayerSize), formatSize(b.opts.BigBlobSize), time.Since(t).Round(time.Millisecond))

	if b.upstream, err = startChild(ctx, b.procs, childSpec{
		name: "upstream",
		bin:  filepath.Join(b.binDir, "upstream"),
		args: func(addr string) []string { return []string{"--addr", addr, "--dir", b.blobDir} },
		log:  filepath.Join(b.work, "logs", "upstream.log"),
	}); err != nil {
		return err
	}
	for _, img := range []*Image{b.app, b.big} {
		if err := pushManifest(ctx, b.upstream.URL(), img); err != nil {
			return err
		}
	}
	b.logf("upstream on %s", b.upstream.addr)

	if slices.Contains(b.opts.Servers, srvStatic) {
		staticRoot := filepath.Join(b.work, "static")
		for _, img := range []*Image{b.app, b.big} {
			if err := writeStaticTree(staticRoot, b.blobDir, img); err != nil {
				return err
			}
		}
		if b.static, err = startChild(ctx, b.procs, childSpec{
			name: "static",
			bin:  filepath.Join(b.binDir, "static"),
			args: func(addr string) []string { return []string{"--addr", addr, "--root", staticRoot} },
			log:  filepath.Join(b.work, "logs", "static.log"),
		}); err != nil {
			return err
		}
		b.logf("static file server on %s", b.static.addr)
	}
	// One unmeasured pull from each long-lived server, so that the first
	// measured requests do not pay for page faults on code paths never run
	// (the cache servers get theirs in cold-1).
	for _, c := range []*child{b.upstream, b.static} {
		if c == nil {
			continue
		}
		if err := b.warmUp(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// scenarios runs every selected scenario, cold ones on a fresh cache each.
func (b *bench) scenarios(ctx context.Context) error {
	n := b.opts.Clients
	// cold-1, then warm-16 on the instance cold-1 warmed.
	if b.want(scCold1, srvDirect) {
		b.measure(ctx, scCold1, srvDirect, b.upstream, b.app, 1)
	}
	for _, srv := range cacheServers {
		if !b.want(scCold1, srv) && !b.want(scWarm16, srv) {
			continue
		}
		err := b.withCache(ctx, srv, func(c *child) error {
			if b.want(scCold1, srv) {
				b.measure(ctx, scCold1, srv, c, b.app, 1)
			} else if err := b.warmUp(ctx, c); err != nil {
				return err
			}
			if b.want(scWarm16, srv) {
				b.measure(ctx, scWarm16, srv, c, b.app, n)
			}
			return nil
		})
		if err != nil {
			b.failed(scCold1, srv, err)
			b.failed(scWarm16, srv, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if b.want(scWarm16, srvStatic) {
		b.measure(ctx, scWarm16, srvStatic, b.static, b.app, n)
	}
	b.coldEach(ctx, scCold16, b.app, n)
	if b.want(scTTFBBig, srvDirect) {
		b.measure(ctx, scTTFBBig, srvDirect, b.upstream, b.big, 1)
	}
	b.coldEach(ctx, scTTFBBig, b.big, 1)
	b.coldEach(ctx, scBigCold16, b.big, n)
	b.evictionRun(ctx)
	return ctx.Err()
}

// coldEach measures scenario on a fresh instance of every cache server.
func (b *bench) coldEach(ctx context.Context, scenario string, img *Image, clients int) {
	for _, srv := range cacheServers {
		if !b.want(scenario, srv) || ctx.Err() != nil {
			continue
		}
		if err := b.withCache(ctx, srv, func(c *child) error {
			b.measure(ctx, scenario, srv, c, img, clients)
			return nil
		}); err != nil {
			b.failed(scenario, srv, err)
		}
	}
}

// withCache starts server with an empty data directory, runs f, then stops
// the server and removes its data.
func (b *bench) withCache(ctx context.Context, server string, f func(*child) error) error {
	b.nextData++
	id := fmt.Sprintf("%s-%d", server, b.nextData)
	data := filepath.Join(b.work, "data", id)
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(data)
	spec := childSpec{name: server, log: filepath.Join(b.work, "logs", id+".log")}
	switch server {
	case srvRegcache:
		cfg := filepath.Join(b.work, "data", id+".yaml")
		// The upstream plays docker.io; one wildcard rule maps bench/* to it.
		yaml := fmt.Sprintf("upstreams:\n  docker.io: %s\nrules:\n  - name: bench\n    source: docker.io/bench/*\n    target: bench/*\n", b.upstream.URL())
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			return err
		}
		defer os.Remove(cfg)
		spec.bin = filepath.Join(b.binDir, "regcache")
		spec.args = func(addr string) []string {
			return append([]string{"serve", "--config", cfg, "--listen", addr, "--data-dir", data}, b.regcacheArgs...)
		}
		spec.drop = []string{"REGCACHE_"}
	case srvDistribution:
		spec.bin = filepath.Join(b.binDir, "distproxy")
		spec.args = func(addr string) []string {
			return []string{"--addr", addr, "--root", data, "--remote", b.upstream.URL()}
		}
		spec.drop = []string{"REGISTRY_", "OTEL_"}
		spec.env = []string{"OTEL_TRACES_EXPORTER=none"}
	default:
		return fmt.Errorf("%s is not a cache server", server)
	}
	c, err := startChild(ctx, b.procs, spec)
	if err != nil {
		return err
	}
	defer c.stop()
	return f(c)
}

// warmUp pulls the image from c once, unmeasured.
func (b *bench) warmUp(ctx context.Context, c *child) error {
	hc := newClient()
	defer hc.CloseIdleConnections()
	if r := pull(ctx, hc, c.URL(), b.app, b.opts.Verify); r.err != nil {
		return fmt.Errorf("warm-up pull from %s: %w", c.name, r.err)
	}
	return nil
}

// failed records a scenario that could not run.
func (b *bench) failed(scenario, server string, err error) {
	if !b.want(scenario, server) {
		return
	}
	b.logf("%s / %s: %v", scenario, server, err)
	b.results = append(b.results, Result{Scenario: scenario, Server: server, Errors: 1, Error: err.Error()})
}

// measure runs clients concurrent pulls of img from c and records a Result.
func (b *bench) measure(ctx context.Context, scenario, server string, c *child, img *Image, clients int) {
	if ctx.Err() != nil {
		return
	}
	res := Result{Scenario: scenario, Server: server, Clients: clients, ImageBytes: img.Bytes()}
	fail := func(err error) {
		res.Errors++
		if res.Error == "" {
			res.Error = err.Error()
		}
	}
	if err := resetUpstream(ctx, b.upstream.URL()); err != nil {
		fail(err)
	}
	pid := c.Pid()
	peakReset := resetPeak(pid) == nil
	sampler := sampleRSS(pid)
	cpu0, err := cpuSeconds(pid)
	if err != nil {
		fail(err)
	}
	self0 := selfCPU()

	httpClients := make([]*http.Client, clients)
	for i := range httpClients {
		httpClients[i] = newClient()
	}
	pulls := make([]pullResult, clients)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			pulls[i] = pull(ctx, httpClients[i], c.URL(), img, b.opts.Verify)
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)

	cpu1, err := cpuSeconds(pid)
	if err != nil {
		fail(err)
	}
	res.ClientCPUSeconds = selfCPU() - self0
	sampled := sampler.Max()
	hwm, _, err := memStatus(pid)
	if err != nil {
		fail(err)
	}
	peak := sampled
	if peakReset {
		peak = max(peak, hwm)
	}
	for _, hc := range httpClients {
		hc.CloseIdleConnections()
	}
	up, err := upstreamStats(ctx, b.upstream.URL())
	if err != nil {
		fail(err)
	}

	var manifestTTFB, layerTTFB []time.Duration
	for _, p := range pulls {
		res.BytesServed += p.bytes
		if p.err != nil {
			fail(p.err)
		}
		if p.manifestTTFB > 0 {
			manifestTTFB = append(manifestTTFB, p.manifestTTFB)
		}
		if p.layerTTFB > 0 {
			layerTTFB = append(layerTTFB, p.layerTTFB)
		}
	}
	res.WallSeconds = wall.Seconds()
	res.ThroughputMBps = float64(res.BytesServed) / 1e6 / wall.Seconds()
	res.UpstreamBytes, res.UpstreamRequests, res.UpstreamBlobGETs = up.totals()
	res.UpstreamRatio = float64(res.UpstreamBytes) / float64(img.Bytes())
	res.ManifestTTFBms = median(manifestTTFB)
	res.LayerTTFBms = median(layerTTFB)
	res.CPUSeconds = cpu1 - cpu0
	if res.BytesServed > 0 {
		res.CPUPerGB = res.CPUSeconds / (float64(res.BytesServed) / 1e9)
	}
	res.PeakRSSMiB = float64(peak) / (1 << 20)
	res.PeakFromHWM = peakReset
	b.results = append(b.results, res)
	b.logf("%-15s %-12s %d client(s): %s in %.2fs (%.0f MB/s), upstream %.2fx, manifest TTFB %.2fms, layer TTFB %.2fms, CPU %.2fs, peak RSS %.0f MiB, %d error(s)",
		scenario, server, clients, humanSize(res.BytesServed), res.WallSeconds, res.ThroughputMBps, res.UpstreamRatio,
		res.ManifestTTFBms, res.LayerTTFBms, res.CPUSeconds, res.PeakRSSMiB, res.Errors)
	if res.Error != "" {
		b.logf("  first error: %s", res.Error)
	}
}

// median returns the median of ds in milliseconds (0 for none).
func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return float64(m) / float64(time.Millisecond)
}

// selfCPU returns this process's user+system CPU seconds: the clients' cost.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// pathStats mirrors the upstream's /_bench/stats: per "METHOD /path".
type pathStats map[string]struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

// totals sums body bytes and requests under /v2/, and counts blob GETs.
func (p pathStats) totals() (bytes, requests, blobGETs int64) {
	for k, s := range p {
		method, path, _ := strings.Cut(k, " ")
		if !strings.HasPrefix(path, "/v2/") || path == "/v2/" {
			continue
		}
		bytes += s.Bytes
		requests += s.Requests
		if method == http.MethodGet && strings.Contains(path, "/blobs/") {
			blobGETs += s.Requests
		}
	}
	return bytes, requests, blobGETs
}

func resetUpstream(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/_bench/reset", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reset upstream counters: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("reset upstream counters: %s", resp.Status)
	}
	return nil
}

func upstreamStats(ctx context.Context, base string) (pathStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_bench/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read upstream counters: %w", err)
	}
	defer resp.Body.Close()
	var s pathStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("read upstream counters: %w", err)
	}
	return s, nil
}

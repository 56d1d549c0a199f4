package main

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/regcache/regcache/cache"
)

// bench is one run of the benchmark.
type bench struct {
	opts  Options
	work  string
	logf  func(format string, a ...any)
	procs *procSet

	binDir   string
	blobDir  string
	nginx    string // the nginx binary; "" when nginx does not run
	upstream *child
	static   *child
	floor    *child
	// The images: the main one, the big one, many small layers, the
	// fanout one, and the small image the many-tags repository's tags
	// point at.
	app, big, small, fanout, tags *Image
	nextData                      int
	results                       []Result
	// regcacheArgs are added to regcache's command line (the eviction run).
	regcacheArgs []string
	eviction     *EvictionResult
	// ha are the services of the replicated servers; nil when no ha
	// scenario runs against them.
	ha *haServices
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
	if slices.Contains(b.opts.Servers, srvNginx) {
		if b.nginx, err = nginxBinary(); err != nil {
			return nil, err
		}
	}
	b.binDir = filepath.Join(b.work, "bin")
	b.logf("building %s (no -race)", strings.Join(childPackages, " "))
	if err := buildChildren(ctx, root, b.binDir, b.work); err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "data"} {
		if err := os.MkdirAll(filepath.Join(b.work, d), 0o755); err != nil {
			return nil, err
		}
	}
	if b.wantHA() {
		if err := b.prepareHA(ctx); err != nil {
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
			BigBlobSize: b.opts.BigBlobSize, Verify: b.opts.Verify, RegcacheMetrics: b.opts.RegcacheMetrics,
			ImageBytes: b.app.Bytes(), BigImageBytes: b.big.Bytes(),
			SmallLayers: b.opts.SmallLayers, SmallImageBytes: b.small.Bytes(),
			FanoutClients: b.opts.FanoutClients, FanoutImageBytes: b.fanout.Bytes(),
			ManifestClients: b.opts.ManifestClients, DurationPerServer: b.opts.Duration.Seconds(),
			Tags: b.opts.Tags, TagTTLSeconds: b.opts.TagTTL.Seconds(), PageSize: b.opts.PageSize,
			PreTouch: b.opts.PreTouch, Servers: b.opts.Servers,
			HAReplicas: b.opts.HAReplicas, HAClients: b.opts.HAClients,
			Revision: gitRevision(ctx, root), Started: started.UTC().Format(time.RFC3339),
		},
	}
	if b.nginx != "" {
		report.Config.NginxVersion = nginxVersion(ctx, b.nginx)
	}
	if b.ha != nil {
		pc := b.ha.peerChannel
		report.Config.HAPeerChannel = &pc
		report.Config.HAProxyVersion, report.Config.SeaweedFSVersion = b.ha.haproxyVersion, seaweedFSVersion
	}
	err = b.scenarios(ctx)
	if err == nil && b.opts.Micro {
		report.Micro, err = runMicro(ctx, root, b.opts.MicroBenchtime, b.logf)
	}
	report.Results = b.results
	report.Ratios = computeRatios(b.results)
	report.Eviction = b.eviction
	report.Config.DurationSeconds = time.Since(started).Seconds()
	report.Machine.LoadStart, report.Machine.LoadEnd = load, loadAverage()
	return report, err
}

// prepare writes the images, starts the upstream (and the static and floor
// servers) and pushes the manifests and tags.
func (b *bench) prepare(ctx context.Context) error {
	b.blobDir = filepath.Join(b.work, "upstream-blobs")
	var key [32]byte
	if _, err := crand.Read(key[:]); err != nil {
		return err
	}
	rng := rand.NewChaCha8(key)
	t := time.Now()
	o := b.opts
	for _, im := range []struct {
		img   **Image
		repo  string
		tag   string
		sizes []int64
	}{
		{&b.app, "bench/app", "latest", sameSizes(o.Layers, o.LayerSize)},
		{&b.big, "bench/big", "latest", sameSizes(1, o.BigBlobSize)},
		{&b.small, "bench/small", "latest", spreadSizes(rng, o.SmallLayers, o.SmallMin, o.SmallMax)},
		{&b.fanout, "bench/fanout", "latest", sameSizes(o.FanoutLayers, o.FanoutLayerSize)},
		{&b.tags, "bench/tags", tagName(0), sameSizes(1, 4<<10)},
	} {
		var err error
		if *im.img, err = makeImage(b.blobDir, im.repo, im.tag, rng, im.sizes); err != nil {
			return err
		}
	}
	b.logf("generated bench/app (%d x %s), bench/big (1 x %s), bench/small (%d layers, %s), bench/fanout (%d x %s) in %v",
		o.Layers, formatSize(o.LayerSize), formatSize(o.BigBlobSize), o.SmallLayers, humanSize(b.small.Bytes()),
		o.FanoutLayers, formatSize(o.FanoutLayerSize), time.Since(t).Round(time.Millisecond))

	var err error
	if b.upstream, err = startChild(ctx, b.procs, childSpec{
		name:  "upstream",
		bin:   filepath.Join(b.binDir, "upstream"),
		args:  func(addr string) ([]string, error) { return []string{"--addr", addr, "--dir", b.blobDir}, nil },
		log:   filepath.Join(b.work, "logs", "upstream.log"),
		probe: true,
	}); err != nil {
		return err
	}
	for _, img := range []*Image{b.app, b.big, b.small, b.fanout} {
		if err := pushManifest(ctx, b.upstream.URL(), img); err != nil {
			return err
		}
	}
	if slices.Contains(o.Scenarios, scManyTags) {
		t := time.Now()
		if err := pushTags(ctx, b.upstream.URL(), b.tags, o.Tags); err != nil {
			return err
		}
		b.logf("pushed %d tags of bench/tags in %v", o.Tags, time.Since(t).Round(time.Millisecond))
	}
	b.logf("upstream on %s", b.upstream.addr)

	if slices.Contains(o.Servers, srvStatic) {
		staticRoot := filepath.Join(b.work, "static")
		for _, img := range []*Image{b.app, b.big, b.small, b.fanout} {
			if err := writeStaticTree(staticRoot, b.blobDir, img); err != nil {
				return err
			}
		}
		if b.static, err = startChild(ctx, b.procs, childSpec{
			name:  "static",
			bin:   filepath.Join(b.binDir, "static"),
			args:  func(addr string) ([]string, error) { return []string{"--addr", addr, "--root", staticRoot}, nil },
			log:   filepath.Join(b.work, "logs", "static.log"),
			probe: true,
		}); err != nil {
			return err
		}
		b.logf("static file server on %s", b.static.addr)
	}
	if slices.Contains(o.Servers, srvFloor) {
		dir := filepath.Join(b.work, "data", "floor")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if b.floor, err = startChild(ctx, b.procs, childSpec{
			name: "floor",
			bin:  filepath.Join(b.binDir, "floor"),
			args: func(addr string) ([]string, error) {
				return []string{"--addr", addr, "--dir", dir, "--upstream", b.upstream.URL()}, nil
			},
			log:   filepath.Join(b.work, "logs", "floor.log"),
			probe: true,
		}); err != nil {
			return err
		}
		b.logf("floor on %s", b.floor.addr)
	}
	// One unmeasured pull from each long-lived server, so that the first
	// measured requests do not pay for page faults on code paths never run
	// (the cache servers get theirs in their first scenario).
	for _, c := range []*child{b.upstream, b.static, b.floor} {
		if c == nil {
			continue
		}
		if err := b.warmImage(ctx, &instance{c: c, warmed: map[*Image]bool{}}, b.app); err != nil {
			return err
		}
	}
	return nil
}

// reference returns the long-lived process that plays server.
func (b *bench) reference(server string) *child {
	switch server {
	case srvDirect:
		return b.upstream
	case srvStatic:
		return b.static
	case srvFloor:
		return b.floor
	}
	return nil
}

// scenarios runs every selected scenario, group by group: in each group,
// against each server in turn, the group's scenarios in order; a cache
// server gets a fresh instance per group, so that a group's first
// (cold) scenario starts on an empty cache.
func (b *bench) scenarios(ctx context.Context) error {
	var groups []string
	for _, sc := range scenarioList {
		if !slices.Contains(groups, sc.group) {
			groups = append(groups, sc.group)
		}
	}
	for _, group := range groups {
		for _, srv := range allServers {
			var scs []*scenario
			for _, sc := range scenarioList {
				if sc.group == group && b.want(sc, srv) {
					scs = append(scs, sc)
				}
			}
			if len(scs) == 0 {
				continue
			}
			if !slices.Contains(cacheServers, srv) {
				for _, sc := range scs {
					b.measure(ctx, sc, srv, b.reference(srv))
				}
				continue
			}
			err := b.withCache(ctx, srv, func(c *child) error {
				inst := &instance{c: c, warmed: map[*Image]bool{}}
				for _, sc := range scs {
					if err := b.runOnCache(ctx, sc, srv, inst); err != nil {
						b.failed(sc, srv, err)
					}
					if ctx.Err() != nil {
						return nil
					}
				}
				return nil
			})
			if err != nil {
				for _, sc := range scs {
					b.failed(sc, srv, err)
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	b.evictionRun(ctx)
	return ctx.Err()
}

// runOnCache readies the instance for sc (a warm scenario), measures it,
// and remembers what the instance now holds.
func (b *bench) runOnCache(ctx context.Context, sc *scenario, srv string, inst *instance) error {
	if !sc.cold {
		prepare := sc.prepare
		if prepare == nil {
			prepare = func(ctx context.Context, b *bench, inst *instance) error { return b.warmImage(ctx, inst, sc.image(b)) }
		}
		if err := prepare(ctx, b, inst); err != nil {
			return err
		}
	}
	n := len(b.results)
	b.measure(ctx, sc, srv, inst.c)
	if sc.kind == kindPull && len(b.results) > n && b.results[n].Errors == 0 {
		inst.warmed[sc.image(b)] = true
	}
	return nil
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
	if slices.Contains(haServers, server) {
		return b.withHA(ctx, server, id, data, f)
	}
	spec := childSpec{name: server, log: filepath.Join(b.work, "logs", id+".log"), probe: true}
	switch server {
	case srvRegcache:
		cfg := filepath.Join(b.work, "data", id+".yaml")
		if err := b.writeRegcacheConfig(cfg); err != nil {
			return err
		}
		defer os.Remove(cfg)
		spec.bin = filepath.Join(b.binDir, "regcache")
		spec.args = func(addr string) ([]string, error) {
			return append([]string{"serve", "--config", cfg, "--listen", addr, "--data-dir", data, fmt.Sprintf("--metrics=%t", b.opts.RegcacheMetrics)}, b.regcacheArgs...), nil
		}
		spec.drop = []string{"REGCACHE_"}
	case srvDistribution:
		spec.bin = filepath.Join(b.binDir, "distproxy")
		spec.args = func(addr string) ([]string, error) {
			return []string{"--addr", addr, "--root", data, "--remote", b.upstream.URL()}, nil
		}
		spec.drop = []string{"REGISTRY_", "OTEL_"}
		spec.env = []string{"OTEL_TRACES_EXPORTER=none"}
	case srvNginx:
		spec.bin, spec.probe, spec.group = b.nginx, false, true
		spec.args = func(addr string) ([]string, error) {
			return writeNginxConfig(nginxConfig{
				Dir: data, Listen: addr, Upstream: b.upstream.addr,
				TagTTL: nginxDuration(cache.DefaultTagTTL), ShortTTLRepo: b.tags.Repo, ShortTTL: nginxDuration(b.opts.TagTTL),
			})
		}
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

// writeRegcacheConfig writes regcache's configuration file: the upstream
// plays docker.io; one wildcard rule maps bench/* to it, and the many-tags
// repository has its own rule with a short tag TTL.
func (b *bench) writeRegcacheConfig(path string) error {
	yaml := fmt.Sprintf(`upstreams:
  docker.io: %s
rules:
  - name: bench
    source: docker.io/bench/*
    target: bench/*
  - name: bench-tags
    source: docker.io/%s
    target: %s
    tagTTL: %s
`, b.upstream.URL(), b.tags.Repo, b.tags.Repo, b.opts.TagTTL)
	return os.WriteFile(path, []byte(yaml), 0o644)
}

// failed records a scenario that could not run.
func (b *bench) failed(sc *scenario, server string, err error) {
	b.logf("%s / %s: %v", sc.name, server, err)
	b.results = append(b.results, Result{Scenario: sc.name, Server: server, Memory: memWarm, Errors: 1, Error: err.Error()})
}

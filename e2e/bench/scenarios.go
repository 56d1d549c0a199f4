package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Servers, as named in the table and the JSON.
const (
	srvDirect       = "direct"       // the upstream itself
	srvFloor        = "floor"        // e2e/bench/floor: the bare cold pipeline
	srvStatic       = "static"       // net/http file server: the physical limit
	srvRegcache     = "regcache"     // cmd/regcache
	srvDistribution = "distribution" // distribution/v3 in proxy mode
	srvNginx        = "nginx"        // nginx with proxy_cache
)

// allServers is also the order in which servers run within a group.
var (
	allServers = []string{srvDirect, srvFloor, srvStatic, srvRegcache, srvDistribution, srvNginx, srvRegcacheHA, srvDistributionHA}
	// cacheServers hold what they serve: each group of scenarios starts a
	// fresh instance (new processes, empty data directories and bucket) of
	// each.
	cacheServers = []string{srvRegcache, srvDistribution, srvNginx, srvRegcacheHA, srvDistributionHA}
	// serverDocs describe the servers for -h.
	serverDocs = map[string]string{
		srvDirect:       "the upstream itself (go-containerregistry's registry, blobs served with sendfile)",
		srvFloor:        "the bare cold pipeline: upstream socket -> 256 KiB buffer -> file + sha256 -> sendfile, nothing else",
		srvStatic:       "net/http's file server over the same files: the machine's limit for warm reads",
		srvRegcache:     "regcache serve (this checkout)",
		srvDistribution: "distribution/v3 in proxy mode (pull-through cache)",
		srvNginx:        "Debian's nginx with proxy_cache and proxy_cache_lock in front of the upstream",
		srvRegcacheHA: "--ha-replicas regcache replicas behind haproxy: blobs in one S3 bucket (SeaweedFS), metadata in etcd, " +
			"the peer channel when the build has it (ha scenarios only)",
		srvDistributionHA: "--ha-replicas distribution proxies behind haproxy, sharing a prefix of the same S3 bucket, serving the bytes (no redirect to the bucket; ha scenarios only)",
	}
)

// Scenarios, as named in the table and the JSON. The "16" and "1GiB" in
// the names are the defaults of --clients and --big-blob-size; the JSON
// records the actual figures.
const (
	scCold1     = "cold-1"
	scWarm16    = "warm-16"
	scManifests = "manifests"
	scFanout    = "fanout"
	scCold16    = "cold-16"
	scTTFBBig   = "ttfb-cold-1GiB"
	scBigCold16 = "cold-16-1GiB"
	scSmallCold = "small-blobs-cold"
	scSmallWarm = "small-blobs-warm"
	scManyTags  = "many-tags"
	aliasSmall  = "small-blobs" // selects both small-blobs scenarios
)

// Groups of scenarios sharing one instance of each cache server.
const (
	groupWarm   = "warm"
	groupCold16 = "cold-16"
	groupTTFB   = "ttfb"
	groupBig    = "big"
	groupSmall  = "small"
	groupTags   = "tags"
)

// Kinds of scenario.
const (
	kindPull     = "pull"     // clients pull an image
	kindRequests = "requests" // a request-rate load
)

// scenario is one measurement, run against each server it applies to.
type scenario struct {
	name    string
	group   string // scenarios of a group run in order on one instance of each cache server
	cold    bool   // needs an empty cache: the first scenario of its group
	kind    string // kindPull: clients pull an image; kindRequests: a request-rate load
	servers []string
	doc     string
	// image is what the scenario pulls, or warms before a request load.
	image func(b *bench) *Image
	// prepare readies a cache server's instance before a warm scenario
	// (default: one unmeasured pull of image, unless the instance holds it).
	prepare func(ctx context.Context, b *bench, inst *instance) error
	// work runs the clients and returns what they measured.
	work func(ctx context.Context, b *bench, c *child) outcome
}

var (
	refsCold  = []string{srvDirect, srvFloor, srvRegcache, srvDistribution, srvNginx}
	refsWarm  = []string{srvStatic, srvRegcache, srvDistribution, srvNginx}
	refsPeers = []string{srvRegcache, srvDistribution, srvNginx}
	// refsHA: the replicated servers, and one regcache on the filesystem
	// store as their reference.
	refsHA = []string{srvRegcache, srvRegcacheHA, srvDistributionHA}
)

// scenarioList is every scenario in the order they run.
var scenarioList = []*scenario{
	{name: scCold1, group: groupWarm, cold: true, kind: kindPull, servers: refsCold,
		doc:   "one client pulls the image (manifest, config, layers) from an empty cache: wall time against direct and floor",
		image: func(b *bench) *Image { return b.app }, work: pullWork(func(b *bench) (*Image, int) { return b.app, 1 })},
	{name: scWarm16, group: groupWarm, kind: kindPull, servers: refsWarm,
		doc:   "--clients clients pull the image together from a cache holding it: CPU per GB, throughput, TTFB against static",
		image: func(b *bench) *Image { return b.app }, work: pullWork(func(b *bench) (*Image, int) { return b.app, b.opts.Clients })},
	{name: scManifests, group: groupWarm, kind: kindRequests, servers: refsWarm,
		doc:     "--manifest-clients keep-alive clients send HEAD and GET of the image's manifest by tag and by digest for --duration: requests/s and p99 against static and nginx",
		image:   func(b *bench) *Image { return b.app },
		prepare: prepareManifests, work: manifestWork},
	{name: scFanout, group: groupWarm, kind: kindPull, servers: refsWarm,
		doc:   "--fanout-clients clients (a node pool scaling up) pull the fanout image together from a warm cache: throughput, p99 TTFB, errors, peak RSS and goroutines",
		image: func(b *bench) *Image { return b.fanout }, work: pullWork(func(b *bench) (*Image, int) { return b.fanout, b.opts.FanoutClients })},
	{name: scCold16, group: groupCold16, cold: true, kind: kindPull, servers: refsPeers,
		doc:   "--clients clients start the same pull together on an empty cache: upstream bytes / image bytes, layer TTFB",
		image: func(b *bench) *Image { return b.app }, work: pullWork(func(b *bench) (*Image, int) { return b.app, b.opts.Clients })},
	{name: scTTFBBig, group: groupTTFB, cold: true, kind: kindPull, servers: refsCold,
		doc:   "one client pulls the big image from an empty cache: its layer's time to first byte, wall time against floor",
		image: func(b *bench) *Image { return b.big }, work: pullWork(func(b *bench) (*Image, int) { return b.big, 1 })},
	{name: scBigCold16, group: groupBig, cold: true, kind: kindPull, servers: refsPeers,
		doc:   "--clients clients pull the big image together from an empty cache: peak RSS (--big-cold=false skips it)",
		image: func(b *bench) *Image { return b.big }, work: pullWork(func(b *bench) (*Image, int) { return b.big, b.opts.Clients })},
	{name: scSmallCold, group: groupSmall, cold: true, kind: kindPull, servers: []string{srvDirect, srvRegcache, srvDistribution, srvNginx},
		doc:   "--clients clients pull an image of --small-layers layers of --small-min to --small-max bytes from an empty cache: per-request and fill setup cost",
		image: func(b *bench) *Image { return b.small }, work: pullWork(func(b *bench) (*Image, int) { return b.small, b.opts.Clients })},
	{name: scSmallWarm, group: groupSmall, kind: kindPull, servers: refsWarm,
		doc:   "the same pull again, from the cache small-blobs-cold filled: requests/s and p99 against static",
		image: func(b *bench) *Image { return b.small }, work: pullWork(func(b *bench) (*Image, int) { return b.small, b.opts.Clients })},
	{name: scManyTags, group: groupTags, kind: kindRequests, servers: []string{srvDirect, srvRegcache, srvDistribution, srvNginx},
		doc:     "--tags tags in one cached repository, all stale (tag TTL --tag-ttl): --clients clients revalidate them, each once, for at most --duration, while --clients/8 walk tags/list in pages of --page-size: p99 of each",
		image:   func(b *bench) *Image { return b.tags },
		prepare: prepareManyTags, work: manyTagsWork},
	{name: scHACold, group: groupHA, cold: true, kind: kindPull, servers: refsHA,
		doc: "--ha-clients clients start the same pull together through haproxy on --ha-replicas empty replicas (and directly on one empty regcache): " +
			"upstream bytes / image bytes, wall time, errors",
		image: func(b *bench) *Image { return b.app }, work: pullWork(func(b *bench) (*Image, int) { return b.app, b.opts.HAClients })},
	{name: scHAWarm, group: groupHA, kind: kindPull, servers: refsHA,
		doc: "the same pull again, from the replicas ha-cold filled: throughput against the one regcache, " +
			"CPU and RSS of replicas + haproxy (S3 and etcd apart)",
		image: func(b *bench) *Image { return b.app }, work: pullWork(func(b *bench) (*Image, int) { return b.app, b.opts.HAClients })},
}

// scenarioNames lists the scenarios for --scenarios, in order.
func scenarioNames() []string {
	out := make([]string, 0, len(scenarioList))
	for _, sc := range scenarioList {
		out = append(out, sc.name)
	}
	return out
}

// instance is one running cache server as the scenarios of a group use it.
type instance struct {
	c      *child
	warmed map[*Image]bool // images the cache holds
}

// outcome is what the clients of one scenario measured.
type outcome struct {
	clients      int
	imageBytes   int64 // bytes of one pull; 0 for a request load
	bytes        int64 // body bytes received
	requests     int64
	wall         time.Duration
	latencies    []time.Duration // per request, to the end of its body
	ttfbs        []time.Duration // per request
	manifestTTFB []time.Duration // pulls: per client
	layerTTFB    []time.Duration // pulls: per client, of the first layer
	kinds        []*tally        // request loads: per kind of request
	errors       int
	firstErr     error
}

func (o *outcome) fail(err error) {
	o.errors++
	if o.firstErr == nil {
		o.firstErr = err
	}
}

// tally is what one kind of request measured in a request load.
type tally struct {
	name      string
	latencies []time.Duration
	ttfbs     []time.Duration
	bytes     int64
	errors    int
	firstErr  error
}

func (t *tally) ok(a answer) {
	t.latencies = append(t.latencies, a.total)
	t.ttfbs = append(t.ttfbs, a.ttfb)
	t.bytes += int64(len(a.body))
}

func (t *tally) fail(err error) {
	t.errors++
	if t.firstErr == nil {
		t.firstErr = fmt.Errorf("%s: %w", t.name, err)
	}
}

// merge adds the tallies of several clients into one outcome, one tally
// per kind in the order of names.
func (o *outcome) merge(names []string, perClient [][]*tally) {
	for i, name := range names {
		sum := &tally{name: name}
		for _, ts := range perClient {
			t := ts[i]
			sum.latencies = append(sum.latencies, t.latencies...)
			sum.ttfbs = append(sum.ttfbs, t.ttfbs...)
			sum.bytes += t.bytes
			sum.errors += t.errors
			if sum.firstErr == nil {
				sum.firstErr = t.firstErr
			}
		}
		o.kinds = append(o.kinds, sum)
		o.latencies = append(o.latencies, sum.latencies...)
		o.ttfbs = append(o.ttfbs, sum.ttfbs...)
		o.requests += int64(len(sum.latencies) + sum.errors)
		o.bytes += sum.bytes
		o.errors += sum.errors
		if o.firstErr == nil {
			o.firstErr = sum.firstErr
		}
	}
}

// pullWork returns the work of a pull scenario: clients pull the image
// that pick names, all started at once.
func pullWork(pick func(b *bench) (*Image, int)) func(context.Context, *bench, *child) outcome {
	return func(ctx context.Context, b *bench, c *child) outcome {
		img, clients := pick(b)
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
		out := outcome{clients: clients, imageBytes: img.Bytes(), wall: time.Since(start)}
		for _, hc := range httpClients {
			hc.CloseIdleConnections()
		}
		for _, p := range pulls {
			out.bytes += p.bytes
			out.requests += int64(len(p.latencies))
			out.latencies = append(out.latencies, p.latencies...)
			out.ttfbs = append(out.ttfbs, p.ttfbs...)
			if p.err != nil {
				out.fail(p.err)
			}
			if p.manifestTTFB > 0 {
				out.manifestTTFB = append(out.manifestTTFB, p.manifestTTFB)
			}
			if p.layerTTFB > 0 {
				out.layerTTFB = append(out.layerTTFB, p.layerTTFB)
			}
		}
		return out
	}
}

// warmImage pulls img from the instance once, unmeasured, unless it holds
// it already.
func (b *bench) warmImage(ctx context.Context, inst *instance, img *Image) error {
	if inst.warmed[img] {
		return nil
	}
	hc := newClient()
	defer hc.CloseIdleConnections()
	if r := pull(ctx, hc, inst.c.URL(), img, b.opts.Verify); r.err != nil {
		return fmt.Errorf("warm-up pull of %s from %s: %w", img.Repo, inst.c.name, r.err)
	}
	inst.warmed[img] = true
	return nil
}

// want reports whether sc runs against server in this run.
func (b *bench) want(sc *scenario, server string) bool {
	if sc.name == scBigCold16 && !b.opts.BigCold {
		return false
	}
	return slices.Contains(b.opts.Scenarios, sc.name) && slices.Contains(b.opts.Servers, server) &&
		slices.Contains(sc.servers, server)
}

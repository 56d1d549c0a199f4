// Package metrics owns regcache's Prometheus collectors. One Metrics,
// registered on the registry it is given, is told about every answered
// request (registry.Observer) and about hits, misses, joined fills and
// upstream requests (cache.Observer): those are counted on the spot with
// atomic counters. Everything else (credential set health, store usage,
// fills running, upload sessions, and, once they exist, evictions and
// upstream rate limits) is read from its owner when Prometheus scrapes.
//
// Label values come from bounded sets only: rule, credential set and
// upstream (login server) names from the configuration, route and method
// names, status codes. Never a repository, tag or digest a client chose.
//
// It also keeps, minute by minute over the last hour, the hits, misses and
// bytes that the status summary charts (status.Sources.Activity).
package metrics

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
)

// Options tune Metrics.
type Options struct {
	// Version is reported by regcache_build_info.
	Version string
	// Now is the clock of the minute-by-minute history (default time.Now).
	Now func() time.Time
}

// Metrics holds the collectors. Its Served, Joined, UpstreamRequest,
// Fetched and Request methods are safe for concurrent use and cost a few
// atomic additions.
type Metrics struct {
	reg  prometheus.Registerer
	src  status.Sources // set by Watch
	opts Options

	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	upstreamRequests *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec

	rules     sync.Map // rule name ("" for local repositories) -> *ruleStats
	upstreams sync.Map // login server -> *upstreamStats
	series    sync.Map // requestKey -> *requestSeries
	totals    totals
	history   history
}

var (
	_ cache.Observer    = (*Metrics)(nil)
	_ registry.Observer = (*Metrics)(nil)
)

// New creates the counters and registers them, with the Go and process
// collectors, on reg. The puller and the registry handler are told about
// what they do through it; Watch then adds what is read from its owners at
// scrape time.
func New(reg prometheus.Registerer, opts Options) (*Metrics, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Metrics{
		reg:  reg,
		opts: opts,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regcache_http_requests_total",
			Help: "HTTP requests answered, by route, method and status code class (2xx, 4xx...).",
		}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "regcache_http_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its answer, body included, by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route", "method"}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regcache_upstream_requests_total",
			Help: `Requests to upstreams, by upstream (login server), method and status code ("error": no answer).`,
		}, []string{"upstream", "method", "code"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "regcache_upstream_request_duration_seconds",
			Help:    "Time from sending a request to an upstream to its response headers (authentication included), by upstream and method.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"upstream", "method"}),
	}
	m.history.add(opts.Now(), m.totals.load())
	for _, c := range []prometheus.Collector{
		m.requests, m.requestDuration, m.upstreamRequests, m.upstreamDuration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return m, nil
}

// Watch registers the collector of the figures read from src at every
// scrape (src.Activity is not read: it is this Metrics). Rules and Fills
// are required; each optional source adds its families only when set.
// Call it once, before the metrics are served.
func (m *Metrics) Watch(src status.Sources) error {
	if src.Rules == nil || src.Fills == nil {
		return fmt.Errorf("metrics: the rules and fills sources are required")
	}
	m.src = src
	c := newScrapeCollector(m)
	if err := m.reg.Register(&c); err != nil {
		return fmt.Errorf("metrics: register: %w", err)
	}
	return nil
}

// Handler serves the metrics gathered by g (the registry New registered
// on) in the Prometheus text format, or OpenMetrics when asked for.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// ruleStats are the counters of one rule's repositories.
type ruleStats struct {
	hits, misses, stale, joined atomic.Int64
	bytes                       [4]atomic.Int64 // by sourceIndex
}

func sourceIndex(s cache.Source) int {
	switch s {
	case cache.SourceHit:
		return 0
	case cache.SourceMiss:
		return 1
	case cache.SourceStale:
		return 2
	}
	return 3
}

var sourceOfIndex = [4]cache.Source{cache.SourceHit, cache.SourceMiss, cache.SourceStale, cache.SourceLocal}

func (m *Metrics) rule(name string) *ruleStats {
	if r, ok := m.rules.Load(name); ok {
		return r.(*ruleStats)
	}
	r, _ := m.rules.LoadOrStore(name, &ruleStats{})
	return r.(*ruleStats)
}

// totals are the sums the minute-by-minute history samples.
type totals struct {
	hits, misses, stale, storeBytes, fetchedBytes atomic.Int64
}

func (t *totals) load() status.Minute {
	return status.Minute{Hits: t.hits.Load(), Misses: t.misses.Load(), Stale: t.stale.Load(),
		StoreBytes: t.storeBytes.Load(), FetchedBytes: t.fetchedBytes.Load()}
}

// Served counts one manifest or blob read of rule's repositories.
func (m *Metrics) Served(rule string, src cache.Source) {
	r := m.rule(rule)
	switch src {
	case cache.SourceHit:
		r.hits.Add(1)
		m.totals.hits.Add(1)
	case cache.SourceMiss:
		r.misses.Add(1)
		m.totals.misses.Add(1)
	case cache.SourceStale:
		r.stale.Add(1)
		m.totals.stale.Add(1)
	}
}

// Joined counts a read that joined a running fill.
func (m *Metrics) Joined(rule string) { m.rule(rule).joined.Add(1) }

// Request counts an answered request, and the body bytes of manifests and
// blobs by where they came from.
func (m *Metrics) Request(ri registry.RequestInfo) {
	s := m.requestSeries(requestKey{ri.Route, ri.Method, statusClass(ri.Status)})
	s.count.Inc()
	s.duration.Observe(ri.Duration.Seconds())
	if ri.Bytes <= 0 || (ri.Route != registry.RouteManifest && ri.Route != registry.RouteBlob) ||
		(ri.Status != http.StatusOK && ri.Status != http.StatusPartialContent) {
		return
	}
	m.rule(ri.Rule).bytes[sourceIndex(ri.Cache)].Add(ri.Bytes)
	if ri.Rule != "" && (ri.Cache == cache.SourceHit || ri.Cache == cache.SourceStale) {
		m.totals.storeBytes.Add(ri.Bytes)
	}
}

// requestKey names the series of one kind of answered request; its values
// come from small fixed sets (RequestInfo's route and method, a status
// class), so the series it names are few.
type requestKey struct{ route, method, class string }

// requestSeries are the collectors of one requestKey, looked up once:
// finding them by label values hashes the values every time.
type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

func (m *Metrics) requestSeries(k requestKey) *requestSeries {
	if s, ok := m.series.Load(k); ok {
		return s.(*requestSeries)
	}
	s, _ := m.series.LoadOrStore(k, &requestSeries{
		count:    m.requests.WithLabelValues(k.route, k.method, k.class),
		duration: m.requestDuration.WithLabelValues(k.route, k.method),
	})
	return s.(*requestSeries)
}

// statusClasses are the code label values of HTTP statuses 100-599.
var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func statusClass(code int) string {
	if code < 100 || code >= 600 {
		return "other"
	}
	return statusClasses[code/100-1]
}

// upstreamStats is what was seen of one upstream.
type upstreamStats struct {
	fetched atomic.Int64

	mu sync.Mutex
	a  status.UpstreamActivity
}

func (m *Metrics) upstream(host string) *upstreamStats {
	if u, ok := m.upstreams.Load(host); ok {
		return u.(*upstreamStats)
	}
	u, _ := m.upstreams.LoadOrStore(host, &upstreamStats{})
	return u.(*upstreamStats)
}

// UpstreamRequest counts one request to upstream and remembers its
// outcome (the status summary's reachability).
func (m *Metrics) UpstreamRequest(upstream, method string, code int, d time.Duration) {
	label := "error"
	if code != 0 {
		label = strconv.Itoa(code)
	}
	m.upstreamRequests.WithLabelValues(upstream, method, label).Inc()
	m.upstreamDuration.WithLabelValues(upstream, method).Observe(d.Seconds())
	now := m.opts.Now()
	u := m.upstream(upstream)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.a.Requests++
	u.a.LastStatus = code
	if code != 0 {
		u.a.LastContact = now
	}
	if code == 0 || code == http.StatusTooManyRequests || code >= 500 {
		u.a.Errors++
		u.a.LastErrorAt = now
		u.a.LastError = "no answer"
		if code != 0 {
			u.a.LastError = fmt.Sprintf("%s %s answered %d %s", method, upstream, code, http.StatusText(code))
		}
	}
}

// Fetched counts body bytes received from upstream.
func (m *Metrics) Fetched(upstream string, n int64) {
	if n <= 0 {
		return
	}
	m.upstream(upstream).fetched.Add(n)
	m.totals.fetchedBytes.Add(n)
}

// RuleCounts returns what each rule served since start (status.Sources).
func (m *Metrics) RuleCounts() map[string]status.Counts {
	out := map[string]status.Counts{}
	m.rules.Range(func(k, v any) bool {
		r := v.(*ruleStats)
		out[k.(string)] = status.Counts{Hits: r.hits.Load(), Misses: r.misses.Load(), Stale: r.stale.Load(), Joined: r.joined.Load(),
			StoreBytes: r.bytes[0].Load() + r.bytes[2].Load(), MissBytes: r.bytes[1].Load()}
		return true
	})
	return out
}

// UpstreamActivity returns what was seen of each upstream since start.
func (m *Metrics) UpstreamActivity() map[string]status.UpstreamActivity {
	out := map[string]status.UpstreamActivity{}
	m.upstreams.Range(func(k, v any) bool {
		u := v.(*upstreamStats)
		u.mu.Lock()
		a := u.a
		u.mu.Unlock()
		a.FetchedBytes = u.fetched.Load()
		out[k.(string)] = a
		return true
	})
	return out
}

// Minutes returns the last hour minute by minute, the minute in progress
// last.
func (m *Metrics) Minutes(now time.Time) []status.Minute {
	return m.history.minutes(now, m.totals.load())
}

// Run samples the history at every minute boundary until ctx ends.
func (m *Metrics) Run(ctx context.Context) {
	for {
		now := m.opts.Now()
		t := time.NewTimer(now.Truncate(time.Minute).Add(time.Minute).Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		m.Sample()
	}
}

// Sample records the totals now, as the start of a new minute of the
// history (Run calls it at every minute boundary).
func (m *Metrics) Sample() {
	m.history.add(m.opts.Now().Truncate(time.Minute), m.totals.load())
}

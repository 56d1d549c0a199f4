package metrics

import (
	"context"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regcache/regcache/credentials"
)

// scrapeCollector writes, at every scrape, the counters kept per rule and
// per upstream and the figures read from their owners. Every rule gets its
// series from the start (zeros), so that rate() and increase() see a
// rule's first hit.
type scrapeCollector struct {
	m *Metrics

	hits, misses, stale, joined, servedBytes *prometheus.Desc
	fetchedBytes                             *prometheus.Desc
	fillsRunning, fillsQueued, storageFull   *prometheus.Desc
	setHealthy, setChecked                   *prometheus.Desc
	storeBytes, storeBlobs, fsSize, fsFree   *prometheus.Desc
	uploads                                  *prometheus.Desc
	storeLimit, evictions, evictedBytes      *prometheus.Desc
	rateLimitRemaining                       *prometheus.Desc
	buildInfo                                *prometheus.Desc
}

func newScrapeCollector(m *Metrics) scrapeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return scrapeCollector{
		m:            m,
		hits:         d("regcache_cache_hits_total", "Manifest and blob reads of cached repositories served from the store, by rule.", "rule"),
		misses:       d("regcache_cache_misses_total", "Manifest and blob reads of cached repositories that went to the upstream (failures included), by rule.", "rule"),
		stale:        d("regcache_cache_stale_serves_total", "Cached manifests served because the upstream could not revalidate them, by rule.", "rule"),
		joined:       d("regcache_cache_coalesced_waiters_total", "Misses that joined a blob fill already running instead of fetching again, by rule.", "rule"),
		servedBytes:  d("regcache_served_bytes_total", `Manifest and blob body bytes sent to clients, by rule ("" for local repositories) and where they came from (cache: HIT and STALE from the store, MISS while fetched, LOCAL from local repositories).`, "rule", "cache"),
		fetchedBytes: d("regcache_upstream_fetched_bytes_total", "Manifest and blob body bytes received from upstreams, by upstream (login server).", "upstream"),
		fillsRunning: d("regcache_fills_in_progress", "Blob fills running or waiting for a fetch slot."),
		fillsQueued:  d("regcache_fills_queued", "Blob fills waiting for one of the limits.maxUpstreamFetches slots."),
		storageFull:  d("regcache_storage_full_events_total", "Fills and stores refused because the store's filesystem had no room."),
		setHealthy:   d("regcache_credential_set_healthy", "1 when the credential set's secrets resolved and its upstream did not refuse them at the last check, else 0 (absent before the first check).", "set"),
		setChecked:   d("regcache_credential_set_last_check_timestamp_seconds", "When the credential set was last checked (Unix time).", "set"),
		storeBytes:   d("regcache_store_bytes", "Bytes of the blobs in the store (absent while they are counted after a start)."),
		storeBlobs:   d("regcache_store_blobs", "Blobs in the store (absent while they are counted after a start)."),
		fsSize:       d("regcache_store_filesystem_size_bytes", "Size of the filesystem holding the store."),
		fsFree:       d("regcache_store_filesystem_free_bytes", "Bytes regcache may still write on the filesystem holding the store."),
		uploads:      d("regcache_upload_sessions", "Blob upload sessions (pushes) open."),
		storeLimit:   d("regcache_store_limit_bytes", "Size the store is kept under by eviction."),
		evictions:    d("regcache_evictions_total", "Images evicted to keep the store under its limit or because nobody pulled them for long."),
		evictedBytes: d("regcache_evicted_bytes_total", "Bytes of the blobs evicted to keep the store under its limit."),
		rateLimitRemaining: d("regcache_upstream_rate_limit_remaining",
			`Requests the upstream last said remain in its rate-limit window, by upstream and credential set ("" for anonymous).`, "upstream", "credential_set"),
		buildInfo: d("regcache_build_info", "Always 1; the labels say which regcache runs.", "version", "goversion"),
	}
}

// Describe sends the descriptors of the families this regcache has: those
// of evictions and rate limits only when their sources are wired.
func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.hits, c.misses, c.stale, c.joined, c.servedBytes, c.fetchedBytes,
		c.fillsRunning, c.fillsQueued, c.storageFull, c.setHealthy, c.setChecked, c.storeBytes, c.storeBlobs,
		c.fsSize, c.fsFree, c.uploads, c.buildInfo} {
		ch <- d
	}
	if c.m.src.Evictions != nil {
		ch <- c.storeLimit
		ch <- c.evictions
		ch <- c.evictedBytes
	}
	if c.m.src.RateLimits != nil {
		ch <- c.rateLimitRemaining
	}
}

// Collect writes the current values.
func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, r := range m.src.Rules.List() {
		m.rule(r.Name) // every rule has its series
	}
	m.rules.Range(func(k, v any) bool {
		name, r := k.(string), v.(*ruleStats)
		if name != "" {
			counter(c.hits, float64(r.hits.Load()), name)
			counter(c.misses, float64(r.misses.Load()), name)
			counter(c.stale, float64(r.stale.Load()), name)
			counter(c.joined, float64(r.joined.Load()), name)
		}
		for i, src := range sourceOfIndex {
			if (name == "") == (i == 3) { // local repositories serve LOCAL only, cached ones never
				counter(c.servedBytes, float64(r.bytes[i].Load()), name, string(src))
			}
		}
		return true
	})
	m.upstreams.Range(func(k, v any) bool {
		counter(c.fetchedBytes, float64(v.(*upstreamStats).fetched.Load()), k.(string))
		return true
	})

	f := m.src.Fills
	gauge(c.fillsRunning, float64(f.FillsRunning()))
	gauge(c.fillsQueued, float64(f.FillsQueued()))
	counter(c.storageFull, float64(f.StorageFullEvents()))

	if m.src.CredentialSets != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for _, s := range m.src.CredentialSets.List(ctx) {
			switch s.Status.State {
			case credentials.StateHealthy:
				gauge(c.setHealthy, 1, s.Name)
			case credentials.StateUnhealthy:
				gauge(c.setHealthy, 0, s.Name)
			}
			if !s.Status.CheckedAt.IsZero() {
				gauge(c.setChecked, float64(s.Status.CheckedAt.Unix()), s.Name)
			}
		}
		cancel()
	}
	if st := m.src.Store; st != nil {
		if u, ok := st.Usage(); ok {
			gauge(c.storeBytes, float64(u.Bytes))
			gauge(c.storeBlobs, float64(u.Blobs))
		}
		if size, free, ok := st.Filesystem(); ok {
			gauge(c.fsSize, float64(size))
			gauge(c.fsFree, float64(free))
		}
	}
	if m.src.Uploads != nil {
		gauge(c.uploads, float64(m.src.Uploads.Count()))
	}
	if e := m.src.Evictions; e != nil {
		if limit := e.MaxSize(); limit > 0 {
			gauge(c.storeLimit, float64(limit))
		}
		counter(c.evictions, float64(e.EvictedImages()))
		counter(c.evictedBytes, float64(e.EvictedBytes()))
	}
	if rl := m.src.RateLimits; rl != nil {
		for _, l := range rl.RateLimits() {
			gauge(c.rateLimitRemaining, float64(l.Remaining), l.Upstream, l.CredentialSet)
		}
	}
	version := m.opts.Version
	if version == "" {
		version = "unknown"
	}
	gauge(c.buildInfo, 1, version, runtime.Version())
}

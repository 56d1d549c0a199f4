package metrics_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/metrics"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

// sources are the real owners of the figures read at scrape time: rules,
// a puller, a blob store, upload sessions and credential sets (one whose
// secrets resolve, one whose secret is missing), all on temp directories.
type sources struct {
	src   status.Sources
	blobs *storage.Blobs
	ups   *uploads.Sessions
}

func newSources(t *testing.T) sources {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	// No upstream listens on port 1: checks resolve the secrets, and say
	// the upstream could not be reached to verify them.
	endpoints, err := cache.NewEndpoints(map[string]string{"docker.io": "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REGCACHE_SECRET_USER": "u", "REGCACHE_SECRET_PASS": "p"}
	creds, err := credentials.NewManager(ctx, credentials.Options{
		Records: meta, Endpoints: endpoints, Log: log, CheckTimeout: 5 * time.Second,
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Config: []credentials.Set{
			{Name: "hub-good", LoginServer: "docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_USER", PasswordSecretRef: "env://REGCACHE_SECRET_PASS"},
			{Name: "hub-broken", LoginServer: "docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_USER", PasswordSecretRef: "env://REGCACHE_SECRET_MISSING"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(creds.Close)
	rules, err := cache.NewStore(ctx, meta, creds, []cache.Rule{
		{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*", CredentialSet: "hub-good"},
		{Name: "quiet-rule", Source: "docker.io/quiet/app", Target: "quiet"},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	puller := cache.NewPuller(rules, endpoints, creds, blobs, meta, log, cache.Options{})
	t.Cleanup(puller.Close)
	ups, err := uploads.New(ctx, blobs, meta, uploads.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	// Check the sets once, as Run does at start.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { creds.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		checked := 0
		for _, s := range creds.List(ctx) {
			if s.Status.State != credentials.StateUnknown {
				checked++
			}
		}
		if checked == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("credential sets not checked: %+v", creds.List(ctx))
		}
	}
	return sources{src: status.Sources{Rules: rules, Fills: puller, CredentialSets: creds, Store: blobs, Uploads: ups}, blobs: blobs, ups: ups}
}

// TestScrapeReadsTheOwners scrapes a Metrics over real sources: every
// rule has its series before any traffic, credential set health is 1/0
// with a check time, store usage appears once counted, upload sessions,
// build info.
func TestScrapeReadsTheOwners(t *testing.T) {
	t.Parallel()
	s := newSources(t)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{Version: "v9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Watch(s.src); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ups.Start(t.Context(), "lab/app"); err != nil {
		t.Fatal(err)
	}
	if err := s.blobs.Put(t.Context(), digestOf("layer"), 5, strings.NewReader("layer")); err != nil {
		t.Fatal(err)
	}
	m.Served("hub-library", cache.SourceHit)
	m.Served("hub-library", cache.SourceMiss)
	m.Joined("hub-library")
	m.Fetched("docker.io", 1234)
	m.UpstreamRequest("docker.io", "GET", 503, 20*time.Millisecond)

	before := scrape(t, reg)
	for _, want := range []string{
		`regcache_cache_hits_total{rule="hub-library"} 1`,
		`regcache_cache_misses_total{rule="hub-library"} 1`,
		`regcache_cache_coalesced_waiters_total{rule="hub-library"} 1`,
		`regcache_cache_hits_total{rule="quiet-rule"} 0`,
		`regcache_cache_stale_serves_total{rule="quiet-rule"} 0`,
		`regcache_served_bytes_total{cache="HIT",rule="quiet-rule"} 0`,
		`regcache_upstream_fetched_bytes_total{upstream="docker.io"} 1234`,
		`regcache_upstream_requests_total{code="503",method="GET",upstream="docker.io"} 1`,
		`regcache_credential_set_healthy{set="hub-good"} 1`,
		`regcache_credential_set_healthy{set="hub-broken"} 0`,
		`regcache_credential_set_last_check_timestamp_seconds{set="hub-good"}`,
		`regcache_upload_sessions 1`,
		`regcache_fills_in_progress 0`,
		`regcache_storage_full_events_total 0`,
		`regcache_store_filesystem_size_bytes`,
		`regcache_build_info{goversion="go`,
		`process_cpu_seconds_total`,
		`go_goroutines`,
	} {
		if !strings.Contains(before, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	for _, absent := range []string{"regcache_store_bytes ", "regcache_evictions_total", "regcache_upstream_rate_limit_remaining"} {
		if strings.Contains(before, absent) {
			t.Errorf("scrape has %s before it exists", absent)
		}
	}
	if err := s.blobs.CountUsage(t.Context()); err != nil {
		t.Fatal(err)
	}
	if after := scrape(t, reg); !strings.Contains(after, "regcache_store_bytes 5\n") || !strings.Contains(after, "regcache_store_blobs 1\n") {
		t.Errorf("store usage not scraped once counted:\n%s", grep(after, "regcache_store"))
	}
}

// evictor and rateLimits stand for eviction.Evictor and the upstream
// state, to check the collectors read what the sources say.
type evictor struct{}

func (evictor) Runs() int64          { return 2 }
func (evictor) EvictedImages() int64 { return 7 }
func (evictor) EvictedBytes() int64  { return 7 << 20 }
func (evictor) MaxSize() int64       { return 50 << 30 }

type rateLimits struct{}

func (rateLimits) RateLimits() []status.RateLimit {
	return []status.RateLimit{{Upstream: "docker.io", CredentialSet: "hub-good", Remaining: 87, Limit: 100}, {Upstream: "docker.io", Remaining: 3}}
}

// TestOptionalSources: evictions and rate limits are exported only when
// their sources are wired, with what the sources say.
func TestOptionalSources(t *testing.T) {
	t.Parallel()
	s := newSources(t)
	s.src.Evictions, s.src.RateLimits = evictor{}, rateLimits{}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Watch(s.src); err != nil {
		t.Fatal(err)
	}
	text := scrape(t, reg)
	for _, want := range []string{
		"regcache_evictions_total 7\n",
		"regcache_evicted_bytes_total 7.340032e+06\n",
		"regcache_store_limit_bytes 5.36870912e+10\n",
		`regcache_upstream_rate_limit_remaining{credential_set="hub-good",upstream="docker.io"} 87`,
		`regcache_upstream_rate_limit_remaining{credential_set="",upstream="docker.io"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q:\n%s", want, grep(text, "evict", "limit"))
		}
	}
}

// TestRequestCounts: requests by route, method and status class; served
// bytes only for manifest and blob bodies, by rule and X-Cache; the
// status summary's totals.
func TestRequestCounts(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ri := range []registry.RequestInfo{
		{Route: registry.RouteBlob, Method: "GET", Status: 200, Cache: cache.SourceHit, Rule: "r1", Bytes: 100},
		{Route: registry.RouteBlob, Method: "GET", Status: 206, Cache: cache.SourceStale, Rule: "r1", Bytes: 10},
		{Route: registry.RouteManifest, Method: "GET", Status: 200, Cache: cache.SourceMiss, Rule: "r1", Bytes: 50},
		{Route: registry.RouteManifest, Method: "GET", Status: 404, Cache: cache.SourceMiss, Rule: "r1", Bytes: 90},
		{Route: registry.RouteBlob, Method: "GET", Status: 200, Cache: cache.SourceLocal, Bytes: 7},
		{Route: registry.RouteTags, Method: "GET", Status: 200, Cache: cache.SourceMiss, Rule: "r1", Bytes: 30},
		{Route: registry.RouteAdmin, Method: "PATCH", Status: 500, Duration: time.Second},
	} {
		m.Request(ri)
	}
	if got := m.RuleCounts()["r1"]; got.StoreBytes != 110 || got.MissBytes != 50 {
		t.Errorf("r1 bytes: %+v; want 110 from the store, 50 while fetched", got)
	}
	if got := m.RuleCounts()[""]; got.StoreBytes != 0 {
		t.Errorf("local repositories' bytes counted as saved: %+v", got)
	}
	text := scrape(t, reg)
	for _, want := range []string{
		`regcache_http_requests_total{code="2xx",method="GET",route="blob"} 3`,
		`regcache_http_requests_total{code="4xx",method="GET",route="manifest"} 1`,
		`regcache_http_requests_total{code="5xx",method="PATCH",route="admin"} 1`,
		`regcache_http_request_duration_seconds_bucket{method="PATCH",route="admin",le="1"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if mins := m.Minutes(time.Now()); len(mins) == 0 || mins[len(mins)-1].StoreBytes != 110 {
		t.Errorf("the minute in progress: %+v; want 110 bytes from the store", mins)
	}
}

// TestMinutes follows the history across minute samples with a clock of
// the test's own: each minute holds what happened in it, the minute in
// progress comes last, and minutes older than an hour are dropped.
func TestMinutes(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	now := start
	m, err := metrics.New(prometheus.NewRegistry(), metrics.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	// Minute 0: 2 hits, 1 miss; minute 1: nothing; minute 2 (in progress): 1 stale.
	m.Served("r", cache.SourceHit)
	m.Served("r", cache.SourceHit)
	m.Served("r", cache.SourceMiss)
	m.Fetched("docker.io", 500)
	now = start.Add(time.Minute)
	m.Sample()
	now = start.Add(2 * time.Minute)
	m.Sample()
	m.Served("r", cache.SourceStale)
	now = now.Add(30 * time.Second)
	got := m.Minutes(now)
	want := []status.Minute{
		{Start: start, Hits: 2, Misses: 1, FetchedBytes: 500},
		{Start: start.Add(time.Minute)},
		{Start: start.Add(2 * time.Minute), Stale: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("Minutes = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("minute %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// Seventy minutes on: only the last hour is kept.
	for range 70 {
		now = now.Add(time.Minute)
		m.Sample()
	}
	got = m.Minutes(now)
	if len(got) != 60 || got[0].Start.Before(now.Add(-time.Hour)) || !got[59].Start.Equal(now.Truncate(time.Minute)) {
		t.Errorf("after 70 minutes: %d minutes from %v to %v; want the 60 that started in the last hour, the one in progress last", len(got), got[0].Start, got[len(got)-1].Start)
	}
	for _, mm := range got {
		if mm.Hits+mm.Misses+mm.Stale != 0 {
			t.Errorf("an old minute came back: %+v", mm)
		}
	}
}

// scrape is what Prometheus reads from the /metrics handler of g.
func scrape(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	rec := httptest.NewRecorder()
	metrics.Handler(g).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func grep(text string, words ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

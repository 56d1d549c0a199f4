package registry_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/regcache/regcache/metrics"
	"github.com/regcache/regcache/requestid"
	"github.com/regcache/regcache/status"
)

// gathered is a scrape of a registry, by family name.
type gathered map[string]*dto.MetricFamily

func gather(t *testing.T, g prometheus.Gatherer) gathered {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := gathered{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// value is the value of the series of family name whose labels include
// labels (name=value pairs); -1 when there is none.
func (g gathered) value(name string, labels ...string) float64 {
	f := g[name]
	if f == nil {
		return -1
	}
series:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if v, ok := have[labels[i]]; !ok || v != labels[i+1] {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestMetricsCountWhatClientsDid pulls through the handler and checks the
// scraped counters against what the client did: hits, misses and stale
// serves of the rule, body bytes by where they came from, bytes and
// requests to the upstream, requests by route. No label holds a
// repository, tag or digest.
func TestMetricsCountWhatClientsDid(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	st, img := newCachedStack(t, logs, m)
	if err := m.Watch(status.Sources{Rules: st.store, Fills: st.puller, Store: st.blobs}); err != nil {
		t.Fatal(err)
	}
	manifestURL := st.url + "/v2/hub/app/manifests/v1"
	layerURL := st.url + "/v2/hub/app/blobs/" + img.layer
	n := 0
	get := func(url string, want int) {
		t.Helper()
		n++
		id := fmt.Sprintf("metrics-%d-get", n)
		if resp, body := do(t, "GET", url, map[string]string{requestid.Header: id}, nil); resp.StatusCode != want {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
		}
		// Counted just before the access log line.
		logs.waitLine(t, "msg=request", "requestId="+id)
	}
	get(manifestURL, http.StatusOK) // miss
	get(manifestURL, http.StatusOK) // hit (revalidated: tag TTL 0s)
	get(layerURL, http.StatusOK)    // miss
	logs.waitLine(t, `msg="cached blob"`)
	get(layerURL, http.StatusOK)                                  // hit
	get(layerURL, http.StatusOK)                                  // hit
	get(st.url+"/v2/hub/app/manifests/nope", http.StatusNotFound) // miss
	img.up.Close()
	get(manifestURL, http.StatusOK) // stale

	g := gather(t, reg)
	man, layer := float64(len(img.manifest)), float64(len(img.layerBody))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"regcache_cache_hits_total", []string{"rule", "hub-library"}, 3},
		{"regcache_cache_misses_total", []string{"rule", "hub-library"}, 3},
		{"regcache_cache_stale_serves_total", []string{"rule", "hub-library"}, 1},
		{"regcache_cache_coalesced_waiters_total", []string{"rule", "hub-library"}, 0},
		{"regcache_served_bytes_total", []string{"rule", "hub-library", "cache", "HIT"}, man + 2*layer},
		{"regcache_served_bytes_total", []string{"rule", "hub-library", "cache", "MISS"}, man + layer},
		{"regcache_served_bytes_total", []string{"rule", "hub-library", "cache", "STALE"}, man},
		{"regcache_upstream_fetched_bytes_total", []string{"upstream", "docker.io"}, man + layer},
		{"regcache_upstream_requests_total", []string{"upstream", "docker.io", "method", "GET", "code", "200"}, 2},
		{"regcache_upstream_requests_total", []string{"upstream", "docker.io", "method", "GET", "code", "404"}, 1},
		{"regcache_upstream_requests_total", []string{"upstream", "docker.io", "method", "HEAD", "code", "200"}, 1},
		{"regcache_upstream_requests_total", []string{"upstream", "docker.io", "method", "HEAD", "code", "error"}, 1},
		{"regcache_http_requests_total", []string{"route", "manifest", "method", "GET", "code", "2xx"}, 3},
		{"regcache_http_requests_total", []string{"route", "manifest", "method", "GET", "code", "4xx"}, 1},
		{"regcache_http_requests_total", []string{"route", "blob", "method", "GET", "code", "2xx"}, 3},
		{"regcache_http_request_duration_seconds", []string{"route", "blob", "method", "GET"}, 3},
		{"regcache_store_blobs", nil, -1}, // not counted yet: absent
		{"regcache_fills_in_progress", nil, 0},
		{"regcache_build_info", []string{"version", "test"}, 1},
	} {
		if got := g.value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for name, f := range g {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if v := l.GetValue(); strings.Contains(v, "hub/app") || strings.Contains(v, "sha256:") || v == "v1" || v == "nope" {
					t.Errorf("%s has label %s=%q: a client's repository, tag or digest", name, l.GetName(), v)
				}
			}
		}
	}

	// The status summary reads the same counts.
	counts := m.RuleCounts()["hub-library"]
	if counts.Hits != 3 || counts.Misses != 3 || counts.Stale != 1 || counts.StoreBytes != int64(2*man+2*layer) {
		t.Errorf("RuleCounts = %+v", counts)
	}
}

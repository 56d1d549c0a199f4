package e2e

import (
	"context"
	"encoding/json"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
)

// benchRuns lists every scenario and the servers it runs against: the smoke
// run must report each of them.
var benchRuns = map[string][]string{
	"cold-1":           {"direct", "floor", "regcache", "distribution", "nginx"},
	"warm-16":          {"static", "regcache", "distribution", "nginx"},
	"manifests":        {"static", "regcache", "distribution", "nginx"},
	"fanout":           {"static", "regcache", "distribution", "nginx"},
	"cold-16":          {"regcache", "distribution", "nginx"},
	"ttfb-cold-1GiB":   {"direct", "floor", "regcache", "distribution", "nginx"},
	"cold-16-1GiB":     {"regcache", "distribution", "nginx"},
	"small-blobs-cold": {"direct", "regcache", "distribution", "nginx"},
	"small-blobs-warm": {"static", "regcache", "distribution", "nginx"},
	"many-tags":        {"direct", "regcache", "distribution", "nginx"},
	"ha-cold":          {"regcache", "regcache-ha", "distribution-ha"},
	"ha-warm":          {"regcache", "regcache-ha", "distribution-ha"},
}

// benchHAServers are made of replicas behind haproxy, on SeaweedFS (and
// etcd): their processes are the replicas and haproxy, and the shared
// services are measured apart.
var benchHAServers = map[string]bool{"regcache-ha": true, "distribution-ha": true}

// benchLoads are the request-rate scenarios and their kinds of request.
var benchLoads = map[string][]string{
	"manifests": {"HEAD by tag", "GET by tag", "HEAD by digest", "GET by digest"},
	"many-tags": {"GET by stale tag", "tags/list page"},
}

// benchColumns are the JSON fields every result must carry as numbers.
var benchColumns = []string{
	"clients", "image_bytes", "bytes_served", "requests", "wall_seconds",
	"throughput_mb_per_s", "requests_per_s", "latency_p50_ms", "latency_p99_ms", "ttfb_p99_ms",
	"upstream_bytes", "upstream_requests", "upstream_blob_gets", "upstream_bytes_per_image_byte",
	"manifest_ttfb_ms", "first_layer_ttfb_ms", "server_cpu_seconds", "server_cpu_seconds_per_gb",
	"server_cpu_us_per_request", "server_peak_rss_mib", "server_peak_threads", "server_processes",
	"pre_touch_mib", "pre_touch_seconds_per_gb", "client_cpu_seconds", "errors",
	"replicas", "balancer_cpu_seconds", "backing_cpu_seconds", "backing_peak_rss_mib",
}

// benchProbeColumns are numbers for Go servers and null for nginx.
var benchProbeColumns = []string{"server_peak_goroutines", "server_allocs_per_request", "server_alloc_bytes_per_request"}

// TestBenchSmoke runs the benchmark program (go run ./e2e/bench --smoke:
// tiny sizes) and checks that it completes and reports every column for
// every scenario and server, that nginx's cache fetched each blob once and
// served warm scenarios from its cache, that regcache's replicas fetched
// each blob once between them, and that the micro-benchmarks ran. It
// asserts no timing: only that the figures exist and that counts add up.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs seven servers; skipped with -short")
	}
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	for _, p := range []struct{ bin, fallback string }{
		{"nginx", "/usr/sbin/nginx"},
		{"haproxy", "/usr/sbin/haproxy"},
		{"etcd", "/usr/bin/etcd"},
		{"weed-" + peers.SeaweedFSVersion, filepath.Join(build.Default.GOPATH, "bin", "weed-"+peers.SeaweedFSVersion)},
	} {
		if _, err := exec.LookPath(p.bin); err != nil {
			if _, serr := os.Stat(p.fallback); serr != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("%s not found (run .ci/install-peers): %v", p.bin, err)
				}
				t.Skipf("%s not found (run .ci/install-peers): %v", p.bin, err)
			}
		}
	}
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "bench.json")
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "run", "github.com/regcache/regcache/e2e/bench",
		"--smoke", "--json", jsonPath, "--work-dir", filepath.Join(dir, "work"))
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./e2e/bench --smoke: %v\n%s", err, out)
	}
	t.Logf("benchmark output (%v):\n%s", time.Since(start).Round(time.Second), out)

	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatalf("read JSON result: %v", err)
	}
	var report struct {
		Machine map[string]any   `json:"machine"`
		Config  map[string]any   `json:"config"`
		Results []map[string]any `json:"results"`
		Ratios  []map[string]any `json:"ratios"`
		Micro   []map[string]any `json:"micro"`
	}
	if err := json.Unmarshal(raw, &report); err != nil {
		t.Fatalf("parse JSON result: %v\n%s", err, raw)
	}
	for _, k := range []string{"nproc", "cpu_model", "memory_gib", "kernel", "go_version"} {
		if _, ok := report.Machine[k]; !ok {
			t.Errorf("machine description lacks %q", k)
		}
	}
	if v, _ := report.Config["nginx_version"].(string); !strings.HasPrefix(v, "nginx/") {
		t.Errorf("config.nginx_version = %q, want nginx/<version>", v)
	}
	replicas, _ := report.Config["ha_replicas"].(float64)
	peerChannel, ok := report.Config["ha_peer_channel"].(bool)
	if replicas < 2 || !ok {
		t.Errorf("config.ha_replicas = %v, ha_peer_channel = %v; want at least 2 replicas, and whether they ran with the peer channel",
			report.Config["ha_replicas"], report.Config["ha_peer_channel"])
	}

	seen := map[[2]string]map[string]any{}
	for _, r := range report.Results {
		sc, _ := r["scenario"].(string)
		srv, _ := r["server"].(string)
		if _, dup := seen[[2]string{sc, srv}]; dup {
			t.Errorf("%s / %s reported twice", sc, srv)
		}
		seen[[2]string{sc, srv}] = r
	}
	pairs := 0
	for scenario, servers := range benchRuns {
		for _, server := range servers {
			pairs++
			r, ok := seen[[2]string{scenario, server}]
			if !ok {
				t.Errorf("%s / %s: not reported", scenario, server)
				continue
			}
			checkBenchResult(t, scenario, server, r)
			if benchHAServers[server] || strings.HasPrefix(scenario, "ha-") {
				checkHAResult(t, scenario, server, r, replicas, peerChannel)
			}
		}
	}
	if len(report.Results) != pairs {
		t.Errorf("%d results, want the %d scenario/server pairs", len(report.Results), pairs)
	}
	if len(report.Ratios) < 20 {
		t.Errorf("%d ratios, want every target of BENCHMARKS.md (20 or more)", len(report.Ratios))
	}
	checkEvictionRun(t, raw)
	for _, ra := range report.Ratios {
		for _, k := range []string{"name", "target", "regcache", "distribution", "nginx", "met"} {
			if _, ok := ra[k]; !ok {
				t.Errorf("ratio %v lacks %q", ra["name"], k)
			}
		}
	}
	checkMicro(t, report.Micro)
}

// checkBenchResult checks that one result has every column, no client
// error, and figures consistent with its scenario and server.
func checkBenchResult(t *testing.T, scenario, server string, r map[string]any) {
	t.Helper()
	num := func(k string) float64 {
		v, ok := r[k].(float64)
		if !ok {
			t.Errorf("%s / %s: column %q missing or not a number (%v)", scenario, server, k, r[k])
		}
		return v
	}
	for _, k := range benchColumns {
		num(k)
	}
	if n := num("errors"); n != 0 {
		t.Errorf("%s / %s: %v errors, first: %v", scenario, server, n, r["error"])
		return
	}
	for _, k := range benchProbeColumns {
		_, isNum := r[k].(float64)
		if v, present := r[k]; !present || (server == "nginx") != (v == nil) || (v != nil && !isNum) {
			t.Errorf("%s / %s: %s = %v; want a number for a Go server, null for nginx", scenario, server, k, v)
		}
	}
	if procs := num("server_processes"); (server == "nginx" || benchHAServers[server]) != (procs > 1) {
		t.Errorf("%s / %s: %v processes summed; want master and workers for nginx, replicas and haproxy for an ha server, one process otherwise", scenario, server, procs)
	}
	for _, k := range []string{"wall_seconds", "requests", "requests_per_s", "latency_p99_ms", "ttfb_p99_ms", "server_peak_rss_mib", "server_peak_threads"} {
		if num(k) <= 0 {
			t.Errorf("%s / %s: %s = %v, want > 0", scenario, server, k, r[k])
		}
	}
	cold := strings.HasPrefix(scenario, "cold") || strings.HasSuffix(scenario, "-cold") || strings.HasPrefix(scenario, "ttfb-cold")
	if mem, _ := r["memory_state"].(string); (mem == "pre-touched") != cold || (!cold && mem != "-") {
		t.Errorf("%s / %s: memory_state %q; want pre-touched for a cold scenario, - for a warm one", scenario, server, mem)
	}
	if cold && num("pre_touch_mib") <= 0 {
		t.Errorf("%s / %s: pre_touch_mib = %v, want > 0", scenario, server, r["pre_touch_mib"])
	}
	if kinds, ok := benchLoads[scenario]; ok {
		checkLoadKinds(t, scenario, server, r, kinds)
		return
	}
	clients, image := num("clients"), num("image_bytes")
	if got, want := num("bytes_served"), clients*image; got != want || want == 0 {
		t.Errorf("%s / %s: served %v bytes, want %v clients x %v", scenario, server, got, clients, image)
	}
	for _, k := range []string{"throughput_mb_per_s", "manifest_ttfb_ms", "first_layer_ttfb_ms"} {
		if num(k) <= 0 {
			t.Errorf("%s / %s: %s = %v, want > 0", scenario, server, k, r[k])
		}
	}
	up := num("upstream_bytes")
	switch {
	case server == "static":
		if up != 0 {
			t.Errorf("%s / static: %v upstream bytes, want 0", scenario, up)
		}
	case !cold:
		// A warm cache may revalidate tags, but must not refetch layers.
		if up >= image {
			t.Errorf("%s / %s: %v upstream bytes for a warm cache, image is %v", scenario, server, up, image)
		}
	default:
		// Cold: the whole image came from the upstream at least once.
		if up < image {
			t.Errorf("%s / %s: %v upstream bytes, less than the image's %v", scenario, server, up, image)
		}
	}
	// Caches that coalesce fetch the image once, however many clients.
	if strings.HasPrefix(scenario, "cold-16") && (server == "regcache" || server == "nginx") && num("upstream_bytes_per_image_byte") > 1.01 {
		t.Errorf("%s / %s: upstream/image %v, want one fetch (<= 1.01)", scenario, server, r["upstream_bytes_per_image_byte"])
	}
}

// checkHAResult checks the figures of a replicated server (or of the one
// regcache it is compared with): replicas and haproxy summed, the shared
// services apart, and one upstream fetch per blob where the replicas share
// fills (regcache with the peer channel) or there is one replica.
func checkHAResult(t *testing.T, scenario, server string, r map[string]any, replicas float64, peerChannel bool) {
	t.Helper()
	num := func(k string) float64 { v, _ := r[k].(float64); return v }
	if !benchHAServers[server] {
		if num("replicas") != 0 || num("backing_peak_rss_mib") != 0 || num("balancer_cpu_seconds") != 0 {
			t.Errorf("%s / %s: replicas %v, backing RSS %v, balancer CPU %v; want none for one server", scenario, server,
				r["replicas"], r["backing_peak_rss_mib"], r["balancer_cpu_seconds"])
		}
		if scenario == "ha-cold" && num("upstream_bytes_per_image_byte") > 1.01 {
			t.Errorf("%s / %s: upstream/image %v, want one fetch (<= 1.01)", scenario, server, r["upstream_bytes_per_image_byte"])
		}
		return
	}
	if got := num("replicas"); got != replicas || num("server_processes") != replicas+1 {
		t.Errorf("%s / %s: %v replicas, %v processes; want %v replicas and haproxy", scenario, server, got, r["server_processes"], replicas)
	}
	if num("backing_peak_rss_mib") <= 0 {
		t.Errorf("%s / %s: backing_peak_rss_mib %v, want SeaweedFS's (and etcd's) RSS", scenario, server, r["backing_peak_rss_mib"])
	}
	if num("balancer_cpu_seconds") > num("server_cpu_seconds") {
		t.Errorf("%s / %s: haproxy's CPU %v above the server's %v, which includes it", scenario, server, r["balancer_cpu_seconds"], r["server_cpu_seconds"])
	}
	if scenario == "ha-cold" && server == "regcache-ha" && peerChannel && num("upstream_bytes_per_image_byte") > 1.05 {
		t.Errorf("%s / %s: upstream/image %v with the peer channel, want one fetch per blob between the replicas (<= 1.05)",
			scenario, server, r["upstream_bytes_per_image_byte"])
	}
}

// checkLoadKinds checks the per-kind figures of a request load.
func checkLoadKinds(t *testing.T, scenario, server string, r map[string]any, want []string) {
	t.Helper()
	kinds, _ := r["kinds"].([]any)
	got := map[string]map[string]any{}
	for _, k := range kinds {
		if m, ok := k.(map[string]any); ok {
			name, _ := m["kind"].(string)
			got[name] = m
		}
	}
	var sum float64
	for _, name := range want {
		k, ok := got[name]
		if !ok {
			t.Errorf("%s / %s: no figures for %q requests", scenario, server, name)
			continue
		}
		n, _ := k["requests"].(float64)
		p99, _ := k["latency_p99_ms"].(float64)
		if n <= 0 || p99 <= 0 {
			t.Errorf("%s / %s / %s: %v requests, p99 %v ms; want both > 0", scenario, server, name, k["requests"], k["latency_p99_ms"])
		}
		sum += n
	}
	if total, _ := r["requests"].(float64); total != sum {
		t.Errorf("%s / %s: %v requests in all, %v by kind", scenario, server, total, sum)
	}
}

// checkMicro checks that every micro-benchmark reported its allocations.
func checkMicro(t *testing.T, micro []map[string]any) {
	t.Helper()
	names := map[string]bool{}
	for _, m := range micro {
		if e, _ := m["error"].(string); e != "" {
			t.Errorf("micro-benchmarks: %s", e)
		}
		name, _ := m["name"].(string)
		names[strings.Split(name, "/")[0]] = true
		if _, ok := m["allocs_per_op"].(float64); !ok {
			t.Errorf("micro-benchmark %s: allocs_per_op missing", name)
		}
	}
	for _, want := range []string{"BenchmarkParsePath", "BenchmarkRuleMatch", "BenchmarkManifestHit"} {
		if !names[want] {
			t.Errorf("micro-benchmark %s not reported (got %v)", want, names)
		}
	}
}

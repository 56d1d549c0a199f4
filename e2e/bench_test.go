package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// benchRuns lists every scenario and the servers it runs against: the smoke
// run must report each of them.
var benchRuns = map[string][]string{
	"cold-1":         {"direct", "regcache", "distribution"},
	"cold-16":        {"regcache", "distribution"},
	"warm-16":        {"static", "regcache", "distribution"},
	"ttfb-cold-1GiB": {"direct", "regcache", "distribution"},
	"cold-16-1GiB":   {"regcache", "distribution"},
}

// benchColumns are the JSON fields every result must carry.
var benchColumns = []string{
	"scenario", "server", "clients", "image_bytes", "bytes_served", "wall_seconds",
	"throughput_mb_per_s", "upstream_bytes", "upstream_requests", "upstream_blob_gets",
	"upstream_bytes_per_image_byte", "manifest_ttfb_ms", "first_layer_ttfb_ms",
	"server_cpu_seconds", "server_cpu_seconds_per_gb", "server_peak_rss_mib",
	"client_cpu_seconds", "errors",
}

// TestBenchSmoke runs the benchmark program (go run ./e2e/bench) with tiny
// sizes and checks that it completes and reports every column for every
// scenario and server. It asserts no timing: only that the figures exist and
// that byte counts add up.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs four servers; skipped with -short")
	}
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "bench.json")
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "run", "github.com/regcache/regcache/e2e/bench",
		"--layers", "2", "--layer-size", "1MiB", "--clients", "4", "--big-blob-size", "8MiB",
		"--evict-total", "16MiB", "--evict-limit", "6MiB", "--evict-layer-size", "1MiB",
		"--timeout", "5m", "--json", jsonPath, "--work-dir", filepath.Join(dir, "work"))
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./e2e/bench: %v\n%s", err, out)
	}
	t.Logf("benchmark output:\n%s", out)

	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatalf("read JSON result: %v", err)
	}
	var report struct {
		Machine map[string]any   `json:"machine"`
		Config  map[string]any   `json:"config"`
		Results []map[string]any `json:"results"`
		Ratios  []map[string]any `json:"ratios"`
	}
	if err := json.Unmarshal(raw, &report); err != nil {
		t.Fatalf("parse JSON result: %v\n%s", err, raw)
	}
	for _, k := range []string{"nproc", "cpu_model", "memory_gib", "kernel", "go_version"} {
		if _, ok := report.Machine[k]; !ok {
			t.Errorf("machine description lacks %q", k)
		}
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
	for scenario, servers := range benchRuns {
		for _, server := range servers {
			r, ok := seen[[2]string{scenario, server}]
			if !ok {
				t.Errorf("%s / %s: not reported", scenario, server)
				continue
			}
			checkBenchResult(t, scenario, server, r)
		}
	}
	if len(report.Results) != len(seen) || len(seen) != 13 {
		t.Errorf("%d results, want the 13 scenario/server pairs", len(report.Results))
	}
	if len(report.Ratios) != 7 {
		t.Errorf("%d target ratios, want 7", len(report.Ratios))
	}
	checkEvictionRun(t, raw)
	for _, ra := range report.Ratios {
		for _, k := range []string{"name", "target", "regcache", "distribution", "met"} {
			if _, ok := ra[k]; !ok {
				t.Errorf("ratio %v lacks %q", ra["name"], k)
			}
		}
	}
}

// checkBenchResult checks that one result has every column, no client
// error, and byte counts consistent with its scenario.
func checkBenchResult(t *testing.T, scenario, server string, r map[string]any) {
	t.Helper()
	num := func(k string) float64 {
		v, ok := r[k].(float64)
		if !ok {
			t.Errorf("%s / %s: column %q missing or not a number (%v)", scenario, server, k, r[k])
		}
		return v
	}
	for _, k := range benchColumns[2:] {
		num(k)
	}
	if n := num("errors"); n != 0 {
		t.Errorf("%s / %s: %v client errors, first: %v", scenario, server, n, r["error"])
		return
	}
	clients, image := num("clients"), num("image_bytes")
	if got, want := num("bytes_served"), clients*image; got != want || want == 0 {
		t.Errorf("%s / %s: served %v bytes, want %v clients x %v", scenario, server, got, clients, image)
	}
	for _, k := range []string{"wall_seconds", "throughput_mb_per_s", "manifest_ttfb_ms", "first_layer_ttfb_ms", "server_peak_rss_mib"} {
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
	case scenario == "warm-16":
		// A warm cache may revalidate tags, but must not refetch the layers.
		if up >= image {
			t.Errorf("%s / %s: %v upstream bytes for a warm cache, image is %v", scenario, server, up, image)
		}
	default:
		// Cold: the whole image came from the upstream at least once.
		if up < image {
			t.Errorf("%s / %s: %v upstream bytes, less than the image's %v", scenario, server, up, image)
		}
	}
}

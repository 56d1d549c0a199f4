package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetricsConfig: metrics are on unless the file, REGCACHE_METRICS or
// --metrics turn them off; metrics.listen takes a host:port other than the
// registry's, and only with metrics on.
func TestMetricsConfig(t *testing.T) {
	t.Parallel()
	off := writeFile(t, "off.yaml", "metrics:\n  enabled: false\n")
	moved := writeFile(t, "moved.yaml", "metrics:\n  listen: 127.0.0.1:9091\n")
	for _, c := range []struct {
		name    string
		args    []string
		env     map[string]string
		on      bool
		listen  string
		wantErr string
	}{
		{name: "default", on: true},
		{name: "file off", args: []string{"--config", off}},
		{name: "env off", env: map[string]string{"REGCACHE_METRICS": "false"}},
		{name: "flag on over file", args: []string{"--config", off, "--metrics=true"}, on: true},
		{name: "flag off over env", args: []string{"--metrics=false"}, env: map[string]string{"REGCACHE_METRICS": "true"}},
		{name: "listen from file", args: []string{"--config", moved}, on: true, listen: "127.0.0.1:9091"},
		{name: "listen from env", env: map[string]string{"REGCACHE_METRICS_LISTEN": "127.0.0.1:9092"}, on: true, listen: "127.0.0.1:9092"},
		{name: "listen flag", args: []string{"--metrics-listen", "[::1]:9093"}, on: true, listen: "[::1]:9093"},
		{name: "env not a bool", env: map[string]string{"REGCACHE_METRICS": "yes please"}, wantErr: `REGCACHE_METRICS="yes please": want true or false`},
		{name: "listen not an address", args: []string{"--metrics-listen", "9091"}, wantErr: `metrics.listen "9091": want [host]:port`},
		{name: "listen with metrics off", args: []string{"--metrics=false", "--metrics-listen", "127.0.0.1:9091"}, wantErr: "metrics are turned off"},
		{name: "listen on the registry's address", args: []string{"--listen", "127.0.0.1:5000", "--metrics-listen", "127.0.0.1:5000"}, wantErr: "the registry listens there already"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parseServe(t, c.args, c.env)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Metrics.on() != c.on || cfg.Metrics.Listen != c.listen {
				t.Errorf("metrics on %v listen %q, want %v %q", cfg.Metrics.on(), cfg.Metrics.Listen, c.on, c.listen)
			}
		})
	}
}

// TestServeMetricsOnAndOff runs serve in process with metrics on, then off:
// /metrics answers or not, answers say where they came from either way, and
// regcache status works without metrics (without counts).
func TestServeMetricsOnAndOff(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		flag        string
		wantMetrics int
	}{{"--metrics=true", http.StatusOK}, {"--metrics=false", http.StatusNotFound}} {
		t.Run(c.flag, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			addr := freeAddr(t)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				_, _, err := runCLI(t, ctx, nil, "serve", "--listen", addr, "--data-dir", dataDir, "--log-level", "error", c.flag)
				done <- err
			}()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			})
			url := "http://" + addr
			var resp *http.Response
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				var err error
				if resp, err = http.Get(url + "/v2/"); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("serve did not answer: %v", err)
				}
			}
			resp.Body.Close()
			if resp.Header.Get("X-Cache") != "LOCAL" || len(resp.Header.Get("X-Request-Id")) != 32 {
				t.Errorf("/v2/ headers: X-Cache %q, X-Request-Id %q", resp.Header.Get("X-Cache"), resp.Header.Get("X-Request-Id"))
			}
			resp, err := http.Get(url + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.wantMetrics || (c.wantMetrics == http.StatusOK && !strings.Contains(string(body), "regcache_build_info")) {
				t.Errorf("GET /metrics: %s, want %d", resp.Status, c.wantMetrics)
			}
			env := map[string]string{"REGCACHE_DATA_DIR": dataDir, "REGCACHE_SERVER": url}
			out, _, err := runCLI(t, t.Context(), env, "status")
			if err != nil || !strings.Contains(out, ": all healthy") {
				t.Errorf("status: %v\n%s", err, out)
			}
		})
	}
}

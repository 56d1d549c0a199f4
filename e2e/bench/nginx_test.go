package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNginxConfig checks the generated configuration with nginx itself
// (nginx -t) and that it says what BENCHMARKS.md says it does.
func TestNginxConfig(t *testing.T) {
	t.Parallel()
	bin, err := nginxBinary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	args, err := writeNginxConfig(nginxConfig{
		Dir: dir, Listen: "127.0.0.1:18080", Upstream: "127.0.0.1:18081",
		TagTTL: nginxDuration(5 * time.Minute), ShortTTLRepo: "bench/tags", ShortTTL: nginxDuration(time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(t.Context(), bin, append(args, "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	conf, err := os.ReadFile(filepath.Join(dir, "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"worker_processes " + strconv.Itoa(runtime.NumCPU()) + ";",
		"listen 127.0.0.1:18080;",
		"server 127.0.0.1:18081;",
		`proxy_cache_key "$request_uri|$http_accept";`,
		"proxy_cache_lock on;",
		"proxy_cache_path " + dir + "/cache ",
		"proxy_temp_path " + dir + "/temp/proxy;",
		"access_log " + dir + "/access.log;",
		"proxy_cache_valid 200 300s;",
		"^/v2/bench/tags/(manifests/[^/]+|tags/list)$",
		"proxy_cache_valid 200 1s;",
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, conf)
		}
	}
}

package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regcache/regcache/archive"
	"github.com/regcache/regcache/registry"
)

// TestLifecycleConfig: offline, maxSize (a size or a percentage),
// evictLowWater, evictUnusedAfter and notFoundTTL come from the file, the
// environment and flags, in that rising order; bad values are refused
// naming the setting.
func TestLifecycleConfig(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "config.yaml", "offline: true\nmaxSize: 80%\nevictLowWater: 75%\nevictUnusedAfter: 720h\nnotFoundTTL: 30s\n")
	cfg, err := parseServe(t, []string{"--config", file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Offline || cfg.MaxSize != "80%" || cfg.EvictLowWater != "75%" || cfg.EvictUnusedAfter != 720*time.Hour || cfg.NotFoundTTL != 30*time.Second {
		t.Fatalf("from the file: %+v", cfg.LifecycleConfig)
	}
	b, err := cfg.bounds(t.TempDir())
	if err != nil || b.MaxSize <= 0 || b.LowWater != 0.75 || b.UnusedAfter != 720*time.Hour {
		t.Fatalf("bounds of 80%% of the filesystem: %+v, %v", b, err)
	}
	cfg, err = parseServe(t, []string{"--config", file, "--max-size", "2GiB", "--offline=false"}, map[string]string{"REGCACHE_MAX_SIZE": "1GiB", "REGCACHE_EVICT_UNUSED_AFTER": "24h"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Offline || cfg.MaxSize != "2GiB" || cfg.EvictUnusedAfter != 24*time.Hour {
		t.Fatalf("flags over the environment over the file: %+v", cfg.LifecycleConfig)
	}
	if b, _ := cfg.bounds(t.TempDir()); b.MaxSize != 2<<30 {
		t.Fatalf("--max-size 2GiB: %d bytes", b.MaxSize)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--max-size", "lots"}, nil, `maxSize "lots"`},
		{[]string{"--max-size", "150%"}, nil, `maxSize "150%"`},
		{[]string{"--evict-low-water", "0%"}, nil, `evictLowWater "0%"`},
		{[]string{"--evict-unused-after", "-1h"}, nil, "evictUnusedAfter"},
		{nil, map[string]string{"REGCACHE_OFFLINE": "maybe"}, `REGCACHE_OFFLINE="maybe"`},
	} {
		if _, err := parseServe(t, tc.args, tc.env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want an error naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}

// served is a `regcache serve` run in process.
type served struct {
	url     string
	dataDir string
	env     map[string]string
}

// startServed runs serve with args in process until the test ends.
func startServed(t *testing.T, args ...string) *served {
	t.Helper()
	s := &served{dataDir: t.TempDir()}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() {
		_, _, err := runCLI(t, ctx, nil, append([]string{"serve", "--listen", addr, "--data-dir", s.dataDir, "--log-level", "error"}, args...)...)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second): // or it ended early, and waitHealthy took its error
			t.Error("serve did not stop within 30s of its context's end")
		}
	})
	s.url = "http://" + addr
	waitHealthy(t, s.url, done)
	s.env = map[string]string{"REGCACHE_DATA_DIR": s.dataDir, "REGCACHE_SERVER": s.url}
	return s
}

// TestWarmExportImportCommands: warm shows progress and a summary and
// fails naming every reference that failed; export writes an archive
// that import loads into an offline registry; an incremental export
// against that registry's inventory carries only the new blobs; gc
// --dry-run lists what eviction would take.
func TestWarmExportImportCommands(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(ggcr.New(ggcr.Logger(stdlog.New(io.Discard, "", 0))))
	t.Cleanup(up.Close)
	push := func(repo string) {
		img, _ := random.Image(3000, 2)
		ref, _ := name.ParseReference(strings.TrimPrefix(up.URL, "http://")+"/"+repo, name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	push("library/app:1")
	push("library/app:2")
	cfg := writeFile(t, "config.yaml", "rules:\n  - name: hub-library\n    source: docker.io/library/*\n    target: hub/*\n")
	a := startServed(t, "--config", cfg, "--upstream", "docker.io="+up.URL, "--evict-unused-after", "720h")
	b := startServed(t, "--offline")
	ctx := t.Context()

	out, _, err := runCLI(t, ctx, a.env, "warm", "--progress", "plain", "hub/app:1", "docker.io/library/app:2")
	if err != nil {
		t.Fatalf("warm: %v\n%s", err, out)
	}
	for _, want := range []string{"hub/app:1: warming hub/app@sha256:", "hub/app:1: done: 3 blobs", "docker.io/library/app:2: done", "warmed 2 of 2 references"} {
		if !strings.Contains(out, want) {
			t.Errorf("warm output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCLI(t, ctx, a.env, "warm", "--progress", "bar", "hub/app:1", "hub/app:nope", "quay.io/x/y:1")
	if err == nil || !strings.Contains(err.Error(), "2 of 3 references failed: hub/app:nope, quay.io/x/y:1") {
		t.Fatalf("warm with failures: %v, want both named", err)
	}
	if !strings.Contains(out, "\x1b[") || !strings.Contains(out, "hub/app:nope") || !strings.Contains(out, "failed:") {
		t.Errorf("bar output does not redraw in place or lacks the failure:\n%q", out)
	}
	_, stderr, err := runCLI(t, ctx, b.env, "warm", "hub/app:1")
	if err == nil || !strings.Contains(err.Error(), "offline") {
		t.Fatalf("warm on an offline registry: %v %s", err, stderr)
	}

	lab := filepath.Join(t.TempDir(), "lab.tar")
	if _, stderr, err := runCLI(t, ctx, a.env, "export", "--out", lab, "--progress", "plain", "hub/app:1"); err != nil || !strings.Contains(stderr, "exported 1 references to "+lab) {
		t.Fatalf("export: %v\n%s", err, stderr)
	}
	out, _, err = runCLI(t, ctx, b.env, "import", lab, "--progress", "plain", "-o", "json")
	var rep archive.ImportReport
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Images) != 1 || rep.Images[0].Repository != "hub/app" || rep.Images[0].Tag != "1" {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if resp, err := http.Get(b.url + "/v2/hub/app/manifests/1"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the offline registry does not serve the imported image: %v %v", resp, err)
	}

	inv := filepath.Join(t.TempDir(), "inventory.txt")
	if _, _, err := runCLI(t, ctx, b.env, "export", "--inventory", "--out", inv); err != nil {
		t.Fatal(err)
	}
	delta := filepath.Join(t.TempDir(), "delta.tar")
	if _, stderr, err := runCLI(t, ctx, a.env, "export", "--out", delta, "--skip-present", inv, "hub/app:1", "hub/app:2"); err != nil || !strings.Contains(stderr, "left out") {
		t.Fatalf("incremental export: %v\n%s", err, stderr)
	}
	if n := tarBlobs(t, delta); n != 4 {
		t.Fatalf("the incremental archive carries %d blobs, want the 4 of hub/app:2 only", n)
	}
	if out, _, err := runCLI(t, ctx, b.env, "import", delta, "-o", "table"); err != nil || !hasRow(out, "hub/app", "2") || !strings.Contains(out, "4 stored, 4 already here") {
		t.Fatalf("incremental import: %v\n%s", err, out)
	}
	// A failing export leaves no file behind.
	bad := filepath.Join(t.TempDir(), "bad.tar")
	if _, _, err := runCLI(t, ctx, a.env, "export", "--out", bad, "hub/nope:1"); err == nil {
		t.Fatal("export of a missing image succeeded")
	}
	if entries, _ := os.ReadDir(filepath.Dir(bad)); len(entries) != 0 {
		t.Fatalf("a failed export left %v", entries)
	}

	out, _, err = runCLI(t, ctx, a.env, "gc", "--dry-run", "-o", "json")
	var gc registry.GCResult
	if err != nil || json.Unmarshal([]byte(out), &gc) != nil || gc.Eviction == nil || !gc.Eviction.DryRun || gc.Eviction.UnusedAfter != 720*time.Hour {
		t.Fatalf("gc --dry-run: %v\n%s", err, out)
	}
	if out, _, err := runCLI(t, ctx, a.env, "gc", "--dry-run", "-o", "table"); err != nil || !strings.Contains(out, "would evict 0 images") || !strings.Contains(out, "unused images evicted after 720h") {
		t.Fatalf("gc --dry-run -o table: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, ctx, a.env, "cache", "refresh", "-n", "hub-library", "-o", "table")
	if err != nil || !hasRow(out, "hub/app", "1", "unchanged") {
		t.Fatalf("cache refresh: %v\n%s", err, out)
	}
}

// tarBlobs counts the blobs of an archive.
func tarBlobs(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && strings.HasPrefix(h.Name, "blobs/sha256/") {
			n++
		}
	}
}

// hasRow reports whether a table has a line starting with the fields.
func hasRow(table string, fields ...string) bool {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

// TestServeHelpConfigLoads: the config file `serve --help` shows is a
// valid config file (its keys and values load).
func TestServeHelpConfigLoads(t *testing.T) {
	t.Parallel()
	stdout, _, err := runCLI(t, t.Context(), nil, "serve", "--help")
	if err != nil {
		t.Fatal(err)
	}
	_, example, ok := strings.Cut(stdout, "Config file:\n")
	if !ok {
		t.Fatalf("serve --help shows no config file:\n%s", stdout)
	}
	example, _, _ = strings.Cut(example, "\nUsage:")
	var lines []string
	for _, l := range strings.Split(example, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "  "))
	}
	path := writeFile(t, "config.yaml", strings.Join(lines, "\n"))
	cfg, err := parseServe(t, []string{"--config", path}, nil)
	if err != nil {
		t.Fatalf("the config file of serve --help does not load: %v\n%s", err, strings.Join(lines, "\n"))
	}
	if cfg.MaxSize != "50GiB" || cfg.EvictUnusedAfter != 720*time.Hour || cfg.Rules[1].MaxStale != "72h" {
		t.Fatalf("loaded %+v", cfg.LifecycleConfig)
	}
}

// waitHealthy waits until the serve at url answers /healthz with 200,
// failing the test if it exits (done) first or takes over 10s.
func waitHealthy(t *testing.T, url string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not answer /healthz: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

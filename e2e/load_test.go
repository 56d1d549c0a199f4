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

// TestLoadSmoke runs the load program (go run ./e2e/load) small: a few
// clients for a few seconds while an attacker on 127.0.0.2 holds more
// idle connections than regcache's per-address cap allows. It checks that
// the program completes (which it only does when no client saw an error
// and regcache came back to its baseline), that every request kind was
// exercised, that the attacker was refused at the cap, and that regcache
// was under load. It asserts no timing.
func TestLoadSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs regcache under load; skipped with -short")
	}
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "load.json")
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "run", "github.com/regcache/regcache/e2e/load",
		"--duration", "5s", "--clients", "8", "--idle-conns", "300", "--per-address-cap", "100",
		"--warm-images", "2", "--layer-sizes", "64KiB,1MiB", "--cold-ratio", "0.3", "--settle", "90s",
		"--timeout", "7m", "--json", jsonPath, "--work-dir", filepath.Join(dir, "work"))
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./e2e/load: %v\n%s", err, out)
	}
	t.Logf("load output:\n%s", out)

	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatalf("read JSON result: %v", err)
	}
	var rep struct {
		Requests []struct {
			Kind     string  `json:"kind"`
			Requests int     `json:"requests"`
			Errors   int     `json:"errors"`
			P99ms    float64 `json:"p99_ms"`
		} `json:"requests"`
		Regcache struct {
			Baseline, Peak, After struct {
				Goroutines int `json:"goroutines"`
				OpenFiles  int `json:"open_files"`
			}
			Settled bool `json:"settled"`
		} `json:"regcache"`
		Attacker *struct {
			Refused int `json:"closed_at_accept"`
		} `json:"attacker"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("parse JSON result: %v\n%s", err, raw)
	}
	if len(rep.Requests) != 6 {
		t.Errorf("%d request kinds reported, want 6", len(rep.Requests))
	}
	for _, k := range rep.Requests {
		if k.Requests == 0 || k.Errors != 0 || k.P99ms <= 0 {
			t.Errorf("%s: %d requests, %d errors, p99 %v ms; want some, none, a latency", k.Kind, k.Requests, k.Errors, k.P99ms)
		}
	}
	s := rep.Regcache
	if !s.Settled || s.After.Goroutines > s.Baseline.Goroutines+10 || s.After.OpenFiles > s.Baseline.OpenFiles+5 {
		t.Errorf("regcache after the load: %+v, baseline %+v (settled %v)", s.After, s.Baseline, s.Settled)
	}
	if s.Peak.OpenFiles <= s.Baseline.OpenFiles+8 || s.Peak.Goroutines <= s.Baseline.Goroutines+8 {
		t.Errorf("peak %+v barely above the baseline %+v: the clients and the attacker's connections should show", s.Peak, s.Baseline)
	}
	if rep.Attacker == nil || rep.Attacker.Refused == 0 {
		t.Errorf("attacker %+v: regcache refused none of 300 connections over a cap of 100", rep.Attacker)
	}
}

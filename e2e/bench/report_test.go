package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"512KiB", 512 << 10, true},
		{"64MiB", 64 << 20, true},
		{"1GiB", 1 << 30, true},
		{"8M", 8 << 20, true},
		{"10B", 10, true},
		{"", 0, false},
		{"-1MiB", 0, false},
		{"1.5GiB", 0, false},
		{"64MB", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestComputeRatios(t *testing.T) {
	t.Parallel()
	results := []Result{
		{Scenario: scCold1, Server: srvDirect, WallSeconds: 2},
		{Scenario: scCold1, Server: srvFloor, WallSeconds: 2.1},
		{Scenario: scCold1, Server: srvRegcache, WallSeconds: 2.2},
		{Scenario: scCold1, Server: srvDistribution, WallSeconds: 3, Errors: 1},
		{Scenario: scCold1, Server: srvNginx, WallSeconds: 4.2},
		{Scenario: scCold16, Server: srvRegcache, UpstreamRatio: 1},
		{Scenario: scWarm16, Server: srvStatic, CPUPerGB: 0}, // too little CPU to measure
		{Scenario: scWarm16, Server: srvRegcache, CPUPerGB: 0.1},
		{Scenario: scFanout, Server: srvDistribution, Errors: 3},
		{Scenario: scManyTags, Server: srvDirect, Kinds: []KindResult{{Kind: kindRevalidate, LatencyP99ms: 2}}},
		{Scenario: scManyTags, Server: srvRegcache, Kinds: []KindResult{{Kind: kindRevalidate, LatencyP99ms: 10}}},
		{Scenario: scHACold, Server: srvRegcache, UpstreamRatio: 1, WallSeconds: 2},
		{Scenario: scHACold, Server: srvRegcacheHA, UpstreamRatio: 1.02, WallSeconds: 3},
		{Scenario: scHACold, Server: srvDistributionHA, UpstreamRatio: 3, WallSeconds: 4},
		{Scenario: scHAWarm, Server: srvRegcache, ThroughputMBps: 1000},
		{Scenario: scHAWarm, Server: srvRegcacheHA, ThroughputMBps: 800},
		{Scenario: scHAWarm, Server: srvDistributionHA, ThroughputMBps: 500, Errors: 1},
	}
	byName := map[string]Ratio{}
	for _, r := range computeRatios(results) {
		byName[r.Name] = r
	}
	cold1 := byName["cold-1: wall time / direct pull's"]
	if cold1.Regcache == nil || *cold1.Regcache != 1.1 || cold1.Met == nil || !*cold1.Met {
		t.Errorf("cold-1 ratio: %+v, want regcache 1.1, met", cold1)
	}
	if cold1.Nginx == nil || *cold1.Nginx != 2.1 {
		t.Errorf("cold-1 ratio of nginx: %v, want 2.1", cold1.Nginx)
	}
	floor := byName["cold-1: wall time / floor's"]
	if floor.Regcache == nil || *floor.Regcache > 1.05 || floor.Met == nil || !*floor.Met {
		t.Errorf("cold-1 / floor ratio: %+v, want regcache 1.048, met", floor)
	}
	if fan := byName["fanout: client errors"]; fan.Distribution == nil || *fan.Distribution != 3 || fan.Regcache != nil {
		t.Errorf("fanout errors: %+v, want distribution 3 (a result with errors counts here), regcache not measured", fan)
	}
	if tags := byName["many-tags: stale tag GET p99 / direct's"]; tags.Regcache == nil || *tags.Regcache != 5 || tags.Target != "" || tags.Met != nil {
		t.Errorf("many-tags ratio: %+v, want regcache 5, reported without a target", tags)
	}
	if cold1.Distribution != nil {
		t.Errorf("cold-1 ratio of a result with errors: %v, want none", *cold1.Distribution)
	}
	if cpu := byName["warm-16: server CPU s per GB / static's"]; cpu.Regcache != nil || cpu.Met != nil {
		t.Errorf("CPU ratio against a zero baseline: %+v, want none", cpu)
	}
	// The ha figures are the replicated servers', against one regcache.
	up := byName["ha-cold (the -ha servers): upstream bytes / image bytes"]
	if up.Regcache == nil || *up.Regcache != 1.02 || up.Met == nil || !*up.Met || up.Distribution == nil || *up.Distribution != 3 || up.Nginx != nil {
		t.Errorf("ha-cold upstream ratio: %+v, want regcache-ha 1.02 (met), distribution-ha 3, no nginx", up)
	}
	if w := byName["ha-cold (the -ha servers): wall time / one regcache's (filesystem)"]; w.Regcache == nil || *w.Regcache != 1.5 || w.Distribution == nil || *w.Distribution != 2 {
		t.Errorf("ha-cold wall ratio: %+v, want regcache-ha 1.5, distribution-ha 2", w)
	}
	if w := byName["ha-warm (the -ha servers): throughput / one regcache's (filesystem)"]; w.Regcache == nil || *w.Regcache != 0.8 || w.Distribution != nil || w.Met != nil {
		t.Errorf("ha-warm throughput ratio: %+v, want regcache-ha 0.8, none for distribution-ha (errors), reported without a target", w)
	}
	if rss := byName["cold-16-1GiB: server peak RSS (MiB)"]; rss.Regcache != nil {
		t.Errorf("RSS of a scenario not run: %v, want none", *rss.Regcache)
	}
}

func TestWriteMarkdown(t *testing.T) {
	t.Parallel()
	r := &Report{Results: []Result{{Scenario: scCold1, Server: srvRegcache, Clients: 1}}}
	r.Ratios = computeRatios(r.Results)
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	before, after := "# Benchmarks\n\nhand-written intro\n\n", "\n## Notes\n\nkept\n"
	if err := os.WriteFile(path, []byte(before+mdBegin+"\nold table\n"+mdEnd+"\n"+after), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 { // replacing twice changes nothing more
		if err := writeMarkdown(path, r); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.HasPrefix(got, before+mdBegin+"\n") || !strings.HasSuffix(got, mdEnd+"\n"+after) {
		t.Errorf("hand-written parts not kept:\n%s", got)
	}
	if strings.Contains(got, "old table") || strings.Count(got, mdBegin) != 1 {
		t.Errorf("generated section not replaced exactly once:\n%s", got)
	}
	if !strings.Contains(got, "| cold-1 | regcache | 1 |") {
		t.Errorf("results table missing:\n%s", got)
	}
	for _, title := range []string{"Targets (ratios of one run):", "Transfers:", "Requests and memory:"} {
		if !strings.Contains(got, title) {
			t.Errorf("table %q missing:\n%s", title, got)
		}
	}
}

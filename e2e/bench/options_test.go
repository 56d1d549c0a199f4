package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Layers != 4 || o.LayerSize != 64<<20 || o.FanoutClients != 500 || o.Tags != 10000 || o.Duration != 30*time.Second || !o.PreTouch || !o.Micro ||
		o.HAReplicas != 3 || o.HAClients != 48 {
		t.Errorf("defaults: %+v", o)
	}
	if !slices.Equal(o.Scenarios, append(scenarioNames(), scEvict)) || !slices.Equal(o.Servers, allServers) {
		t.Errorf("default scenarios %v, servers %v; want all", o.Scenarios, o.Servers)
	}

	// --smoke sets tiny sizes; a flag given explicitly wins.
	o, err = parseFlags([]string{"--smoke", "--clients", "7"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Clients != 7 || o.Layers != 2 || o.LayerSize != 1<<20 || o.FanoutClients != 24 || o.Tags != 250 || o.Duration != time.Second ||
		o.HAClients != 6 || o.HAReplicas != 3 {
		t.Errorf("--smoke --clients 7: %+v", o)
	}

	o, err = parseFlags([]string{"--scenarios", "small-blobs,manifests", "--servers", "regcache,nginx"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{scSmallCold, scSmallWarm, scManifests}; !slices.Equal(o.Scenarios, want) {
		t.Errorf("scenarios %v, want %v", o.Scenarios, want)
	}

	o, err = parseFlags([]string{"--scenarios", "ha", "--servers", "regcache,regcache-ha,distribution-ha"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{scHACold, scHAWarm}; !slices.Equal(o.Scenarios, want) {
		t.Errorf("--scenarios ha: %v, want %v", o.Scenarios, want)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ha-replicas", "1"}, "--ha-replicas 1: must be at least 2"},
		{[]string{"--ha-clients", "0"}, "--ha-clients 0: must be at least 1"},
		{[]string{"--scenarios", "warm-17"}, `unknown scenario "warm-17"`},
		{[]string{"--servers", "varnish"}, `unknown server "varnish"`},
		{[]string{"--small-min", "64KiB", "--small-max", "16KiB"}, "--small-max 16KiB is below --small-min 64KiB"},
		{[]string{"--tag-ttl", "1500ms"}, "--tag-ttl 1.5s: must be whole seconds"},
		{[]string{"--fanout-clients", "0"}, "--fanout-clients 0: must be at least 1"},
	} {
		if _, err := parseFlags(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestUsage checks that -h documents every flag, server and scenario.
func TestUsage(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if _, err := parseFlags([]string{"-h"}, &b); err == nil {
		t.Fatal("-h: no flag.ErrHelp")
	}
	out := b.String()
	for _, name := range append(append(scenarioNames(), allServers...), "--smoke", "-pre-touch", "-micro-benchtime", "-tag-ttl", "-fanout-clients", "-ha-replicas", "-ha-clients") {
		if !strings.Contains(out, strings.TrimPrefix(name, "-")) {
			t.Errorf("-h does not mention %s", name)
		}
	}
}

func TestParseMicro(t *testing.T) {
	t.Parallel()
	out := `goos: linux
pkg: github.com/regcache/regcache/registry
BenchmarkParsePath/manifest_by_tag-2         	 5000000	       236.1 ns/op	       0 B/op	       0 allocs/op
BenchmarkManifestHit/GET_by_tag-2            	   50000	     21840 ns/op	    4030 B/op	      74 allocs/op
PASS
pkg: github.com/regcache/regcache/cache
BenchmarkRuleMatch/static-8   	10000000	       20.26 ns/op	       0 B/op	       0 allocs/op
ok  	github.com/regcache/regcache/cache	1.2s
`
	got := parseMicro([]byte(out))
	want := []MicroResult{
		{Name: "BenchmarkParsePath/manifest_by_tag", Package: "github.com/regcache/regcache/registry", NsPerOp: 236.1},
		{Name: "BenchmarkManifestHit/GET_by_tag", Package: "github.com/regcache/regcache/registry", NsPerOp: 21840, BytesPerOp: 4030, AllocsPerOp: 74},
		{Name: "BenchmarkRuleMatch/static", Package: "github.com/regcache/regcache/cache", NsPerOp: 20.26},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseMicro:\n got %+v\nwant %+v", got, want)
	}
}

func TestTouchMemory(t *testing.T) {
	t.Parallel()
	n, secPerGB, err := touchMemory(8<<20 + 123)
	if err != nil {
		t.Fatal(err)
	}
	if n != 8<<20 || secPerGB <= 0 {
		t.Errorf("touchMemory(8 MiB + 123) = %d bytes, %v s/GB; want 8 MiB (whole pages), a positive rate", n, secPerGB)
	}
}

func TestNextPage(t *testing.T) {
	t.Parallel()
	for link, want := range map[string]string{
		`</v2/bench/tags/tags/list?last=t00099&n=100>; rel="next"`: "/v2/bench/tags/tags/list?last=t00099&n=100",
		"":                                  "",
		`</v2/x/tags/list?n=1>; rel="prev"`: "",
	} {
		if got := nextPage(link); got != want {
			t.Errorf("nextPage(%q) = %q, want %q", link, got, want)
		}
	}
}

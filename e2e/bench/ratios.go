package main

// Ratio is one figure of the run, for regcache and, for comparison, the
// other caches. Target is the goal regcache is held to ("" for a figure
// only reported); values are null when not measured or when a result they
// depend on had errors.
type Ratio struct {
	Name         string   `json:"name"`
	Target       string   `json:"target"`
	Regcache     *float64 `json:"regcache"`
	Distribution *float64 `json:"distribution"`
	Nginx        *float64 `json:"nginx"`
	Met          *bool    `json:"met"` // by regcache; null without a target or a value
}

// find returns the error-free result of scenario on server.
func find(results []Result, scenario, server string) *Result {
	for i := range results {
		if r := &results[i]; r.Scenario == scenario && r.Server == server && r.Errors == 0 {
			return r
		}
	}
	return nil
}

// kindP99 returns the p99 latency of one kind of request of a result (0
// when it has none).
func kindP99(kind string) func(r *Result) float64 {
	return func(r *Result) float64 {
		for _, k := range r.Kinds {
			if k.Kind == kind {
				return k.LatencyP99ms
			}
		}
		return 0
	}
}

// ratioDef defines one Ratio: value computes it for a server (nil when it
// cannot), met says whether a value meets the target (nil: reported only).
type ratioDef struct {
	name, target string
	value        func(server string) *float64
	met          func(v float64) bool
}

// computeRatios derives the figures the benchmark's targets are set on
// from one run's results.
func computeRatios(results []Result) []Ratio {
	of := func(scenario string, f func(r *Result) float64) func(string) *float64 {
		return func(server string) *float64 {
			r := find(results, scenario, server)
			if r == nil {
				return nil
			}
			v := f(r)
			return &v
		}
	}
	vs := func(scenario, base string, f func(r *Result) float64) func(string) *float64 {
		return func(server string) *float64 {
			r, b := find(results, scenario, server), find(results, scenario, base)
			if r == nil || b == nil || f(b) == 0 {
				return nil
			}
			v := f(r) / f(b)
			return &v
		}
	}
	atMost := func(x float64) func(float64) bool { return func(v float64) bool { return v <= x } }
	atLeast := func(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }
	wall := func(r *Result) float64 { return r.WallSeconds }
	rps := func(r *Result) float64 { return r.RequestsPerSec }
	p99 := func(r *Result) float64 { return r.LatencyP99ms }
	defs := []ratioDef{
		{"cold-16: upstream bytes / image bytes", "<= 1.01",
			of(scCold16, func(r *Result) float64 { return r.UpstreamRatio }), atMost(1.01)},
		{"warm-16: server CPU s per GB / static's", "<= 1.25",
			vs(scWarm16, srvStatic, func(r *Result) float64 { return r.CPUPerGB }), atMost(1.25)},
		{"warm-16: throughput / static's", ">= 0.9",
			vs(scWarm16, srvStatic, func(r *Result) float64 { return r.ThroughputMBps }), atLeast(0.9)},
		{"warm-16: manifest TTFB (median) / static's", "<= 2",
			vs(scWarm16, srvStatic, func(r *Result) float64 { return r.ManifestTTFBms }), atMost(2)},
		{"warm-16: server CPU s per GB / nginx's", "<= 1.0",
			vs(scWarm16, srvNginx, func(r *Result) float64 { return r.CPUPerGB }), atMost(1)},
		{"cold-1: wall time / direct pull's", "<= 1.4",
			vs(scCold1, srvDirect, wall), atMost(1.4)},
		{"cold-1: wall time / floor's", "<= 1.1",
			vs(scCold1, srvFloor, wall), atMost(1.1)},
		{"ttfb-cold-1GiB: wall time / floor's", "<= 1.1",
			vs(scTTFBBig, srvFloor, wall), atMost(1.1)},
		{"ttfb-cold-1GiB: big layer TTFB - upstream's (ms)", "<= +50 ms",
			func(server string) *float64 {
				r, d := find(results, scTTFBBig, server), find(results, scTTFBBig, srvDirect)
				if r == nil || d == nil {
					return nil
				}
				v := r.LayerTTFBms - d.LayerTTFBms
				return &v
			}, atMost(50)},
		{"cold-16: p99 TTFB (every request) / nginx's", "< 1",
			vs(scCold16, srvNginx, func(r *Result) float64 { return r.TTFBP99ms }), func(v float64) bool { return v < 1 }},
		{"cold-16-1GiB: server peak RSS (MiB)", "<= 150 MiB",
			of(scBigCold16, func(r *Result) float64 { return r.PeakRSSMiB }), atMost(150)},
		{"manifests: requests/s / static's", ">= 0.8", vs(scManifests, srvStatic, rps), atLeast(0.8)},
		{"manifests: p99 latency / static's", "<= 2", vs(scManifests, srvStatic, p99), atMost(2)},
		{"manifests: requests/s / nginx's", ">= 0.9", vs(scManifests, srvNginx, rps), atLeast(0.9)},
		{"manifests: p99 latency / nginx's", "<= 1", vs(scManifests, srvNginx, p99), atMost(1)},
		{"small-blobs-cold: wall time / direct pull's", "", vs(scSmallCold, srvDirect, wall), nil},
		{"small-blobs-warm: requests/s / static's", "", vs(scSmallWarm, srvStatic, rps), nil},
		{"small-blobs-warm: p99 latency / static's", "", vs(scSmallWarm, srvStatic, p99), nil},
		{"fanout: client errors", "0", func(server string) *float64 {
			for _, r := range results {
				if r.Scenario == scFanout && r.Server == server {
					v := float64(r.Errors)
					return &v
				}
			}
			return nil
		}, atMost(0)},
		{"fanout: throughput / static's", "", vs(scFanout, srvStatic, func(r *Result) float64 { return r.ThroughputMBps }), nil},
		{"fanout: p99 TTFB / static's", "", vs(scFanout, srvStatic, func(r *Result) float64 { return r.TTFBP99ms }), nil},
		{"fanout: server peak RSS (MiB)", "", of(scFanout, func(r *Result) float64 { return r.PeakRSSMiB }), nil},
		{"many-tags: stale tag GET p99 / direct's", "", vs(scManyTags, srvDirect, kindP99(kindRevalidate)), nil},
		{"many-tags: tag list page p99 / direct's", "", vs(scManyTags, srvDirect, kindP99(kindTagPage)), nil},
	}
	// The ha figures: their regcache and distribution columns are
	// regcache-ha's and distribution-ha's, against one regcache on the
	// filesystem store where a ratio.
	haDefs := []ratioDef{
		{"ha-cold (the -ha servers): upstream bytes / image bytes", "<= 1.05",
			of(scHACold, func(r *Result) float64 { return r.UpstreamRatio }), atMost(1.05)},
		{"ha-cold (the -ha servers): wall time / one regcache's (filesystem)", "", vs(scHACold, srvRegcache, wall), nil},
		{"ha-warm (the -ha servers): throughput / one regcache's (filesystem)", "",
			vs(scHAWarm, srvRegcache, func(r *Result) float64 { return r.ThroughputMBps }), nil},
		{"ha-warm (the -ha servers): server CPU s per GB (replicas + haproxy) / one regcache's", "",
			vs(scHAWarm, srvRegcache, func(r *Result) float64 { return r.CPUPerGB }), nil},
		{"ha-warm (the -ha servers): server peak RSS (MiB, replicas + haproxy)", "", of(scHAWarm, func(r *Result) float64 { return r.PeakRSSMiB }), nil},
	}
	out := make([]Ratio, 0, len(defs)+len(haDefs))
	for i, d := range append(defs, haDefs...) {
		r := Ratio{Name: d.name, Target: d.target, Regcache: d.value(srvRegcache), Distribution: d.value(srvDistribution), Nginx: d.value(srvNginx)}
		if i >= len(defs) {
			r.Regcache, r.Distribution, r.Nginx = d.value(srvRegcacheHA), d.value(srvDistributionHA), nil
		}
		if r.Regcache != nil && d.met != nil {
			met := d.met(*r.Regcache)
			r.Met = &met
		}
		out = append(out, r)
	}
	return out
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/regcache/regcache/e2e/bench/probe"
)

// measure runs one scenario's work against server c and records a Result:
// what the clients measured, and what the server's processes spent (CPU,
// peak RSS and threads from /proc; goroutines and allocations from the
// probe of a Go server) and asked of the upstream meanwhile.
func (b *bench) measure(ctx context.Context, sc *scenario, server string, c *child) {
	if ctx.Err() != nil {
		return
	}
	res := Result{Scenario: sc.name, Server: server, Memory: memWarm}
	fail := func(err error) {
		res.Errors++
		if res.Error == "" {
			res.Error = err.Error()
		}
	}
	if err := resetUpstream(ctx, b.upstream.URL()); err != nil {
		fail(err)
	}
	if sc.cold {
		res.Memory = memAsFound
		if b.opts.PreTouch {
			n, secPerGB, err := touchMemory(2 * sc.image(b).Bytes())
			if err != nil {
				fail(err)
			} else {
				res.Memory, res.PreTouchMiB, res.PreTouchSecondsPerGB = memPreTouched, float64(n)/(1<<20), secPerGB
			}
		}
	}
	pids := c.pids()
	peakReset := resetPeak(pids) == nil
	sampler := sampleRSS(pids)
	cpu0, err := cpuSeconds(pids)
	if err != nil {
		fail(err)
	}
	// A replicated server: its balancer's share, and its backing services
	// (measured apart).
	balancer, backing := []int{c.Pid()}, c.backingPids()
	lb0, _ := cpuSeconds(balancer)
	backingReset := resetPeak(backing) == nil
	backingSampler := sampleRSS(backing)
	back0, err := cpuSeconds(backing)
	if err != nil {
		fail(err)
	}
	p0 := b.probeAll(ctx, c, "begin", fail)
	self0 := selfCPU()

	out := sc.work(ctx, b, c)

	res.ClientCPUSeconds = selfCPU() - self0
	p1 := b.probeAll(ctx, c, "end", fail)
	cpu1, err := cpuSeconds(pids)
	if err != nil {
		fail(err)
	}
	lb1, _ := cpuSeconds(balancer)
	back1, err := cpuSeconds(backing)
	if err != nil {
		fail(err)
	}
	sampled, threads := sampler.Max()
	m, err := memStatus(pids)
	if err != nil {
		fail(err)
	}
	peak := sampled
	if peakReset {
		peak = max(peak, m.hwm)
	}
	backingPeak, _ := backingSampler.Max()
	if bm, err := memStatus(backing); err == nil && backingReset {
		backingPeak = max(backingPeak, bm.hwm)
	}
	if len(c.members) > 0 {
		res.Replicas, res.BalancerCPUSeconds = len(c.members), lb1-lb0
	}
	res.BackingCPUSeconds, res.BackingPeakRSSMiB = back1-back0, float64(backingPeak)/(1<<20)
	up, err := upstreamStats(ctx, b.upstream.URL())
	if err != nil {
		fail(err)
	}

	res.Clients, res.ImageBytes, res.BytesServed, res.Requests = out.clients, out.imageBytes, out.bytes, out.requests
	res.WallSeconds = out.wall.Seconds()
	if res.WallSeconds > 0 {
		res.ThroughputMBps = float64(out.bytes) / 1e6 / res.WallSeconds
		res.RequestsPerSec = float64(out.requests) / res.WallSeconds
	}
	res.LatencyP50ms, res.LatencyP99ms = percentile(out.latencies, 50), percentile(out.latencies, 99)
	res.TTFBP99ms = percentile(out.ttfbs, 99)
	res.ManifestTTFBms, res.LayerTTFBms = median(out.manifestTTFB), median(out.layerTTFB)
	res.UpstreamBytes, res.UpstreamRequests, res.UpstreamBlobGETs = up.totals()
	if out.imageBytes > 0 {
		res.UpstreamRatio = float64(res.UpstreamBytes) / float64(out.imageBytes)
	}
	res.CPUSeconds = cpu1 - cpu0
	if out.bytes > 0 {
		res.CPUPerGB = res.CPUSeconds / (float64(out.bytes) / 1e9)
	}
	if out.requests > 0 {
		res.CPUPerRequestUs = res.CPUSeconds / float64(out.requests) * 1e6
	}
	res.PeakRSSMiB, res.PeakFromHWM = float64(peak)/(1<<20), peakReset
	res.PeakThreads, res.Processes = threads, len(pids)
	if p0 != nil && p1 != nil {
		g := p1.PeakGoroutines
		res.PeakGoroutines = &g
		if out.requests > 0 {
			allocs := float64(p1.Mallocs-p0.Mallocs) / float64(out.requests)
			bytes := float64(p1.TotalAlloc-p0.TotalAlloc) / float64(out.requests)
			res.AllocsPerRequest, res.AllocBytesPerRequest = &allocs, &bytes
		}
	}
	for _, t := range out.kinds {
		k := KindResult{Kind: t.name, Requests: int64(len(t.latencies) + t.errors), Errors: t.errors,
			LatencyP50ms: percentile(t.latencies, 50), LatencyP99ms: percentile(t.latencies, 99), TTFBP99ms: percentile(t.ttfbs, 99)}
		if res.WallSeconds > 0 {
			k.RequestsPerSec = float64(k.Requests) / res.WallSeconds
		}
		res.Kinds = append(res.Kinds, k)
	}
	if out.errors > 0 {
		res.Errors += out.errors
		if res.Error == "" {
			res.Error = out.firstErr.Error()
		}
	}
	b.results = append(b.results, res)
	upstream := fmt.Sprintf("upstream %.2fx", res.UpstreamRatio)
	if out.imageBytes == 0 {
		upstream = fmt.Sprintf("%d upstream requests", res.UpstreamRequests)
	}
	b.logf("%-16s %-12s %3d client(s): %d requests, %s in %.2fs (%.0f MB/s, %.0f req/s, p99 %.2f ms), %s, CPU %.2fs, peak RSS %.0f MiB, memory %s, %d error(s)",
		sc.name, server, res.Clients, res.Requests, humanSize(res.BytesServed), res.WallSeconds, res.ThroughputMBps, res.RequestsPerSec,
		res.LatencyP99ms, upstream, res.CPUSeconds, res.PeakRSSMiB, memoryCell(res), res.Errors)
	if res.Error != "" {
		b.logf("  first error: %s", res.Error)
	}
}

// probeAll posts to the probe of c or, for a load balancer, to those of
// its replicas, and sums what they say: allocations add up, and so do
// peak goroutines (the most the replicas could have held at once). Nil
// when a process has no probe or one failed (reported through fail).
func (b *bench) probeAll(ctx context.Context, c *child, what string, fail func(error)) *probe.Stats {
	if len(c.members) == 0 {
		return b.probeCall(ctx, c, what, fail)
	}
	var sum probe.Stats
	for _, m := range c.members {
		s := b.probeCall(ctx, m, what, fail)
		if s == nil {
			return nil
		}
		sum.Goroutines += s.Goroutines
		sum.PeakGoroutines += s.PeakGoroutines
		sum.Mallocs += s.Mallocs
		sum.TotalAlloc += s.TotalAlloc
		sum.HeapInuse += s.HeapInuse
	}
	return &sum
}

// probeCall posts to the probe of c ("begin" or "end"); nil when c has no
// probe or it failed (reported through fail).
func (b *bench) probeCall(ctx context.Context, c *child, what string, fail func(error)) *probe.Stats {
	if c.probe == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.probe+"/"+what, nil)
	if err != nil {
		fail(err)
		return nil
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		fail(fmt.Errorf("probe of %s: %w", c.name, err))
		return nil
	}
	defer resp.Body.Close()
	var s probe.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		fail(fmt.Errorf("probe of %s: %w", c.name, err))
		return nil
	}
	return &s
}

// probeClient talks to probes and to the upstream's counters: loopback,
// never through a proxy from the environment.
var probeClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}

// percentile returns the p-th percentile (nearest rank) of ds in
// milliseconds (0 for none).
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return float64(s[max(0, min(i, len(s)-1))]) / float64(time.Millisecond)
}

// median returns the median of ds in milliseconds (0 for none).
func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return float64(m) / float64(time.Millisecond)
}

// selfCPU returns this process's user+system CPU seconds: the clients' cost.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// pathStats mirrors the upstream's /_bench/stats: per "METHOD /path".
type pathStats map[string]struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

// totals sums body bytes and requests under /v2/, and counts blob GETs.
func (p pathStats) totals() (bytes, requests, blobGETs int64) {
	for k, s := range p {
		method, path, _ := strings.Cut(k, " ")
		if !strings.HasPrefix(path, "/v2/") || path == "/v2/" {
			continue
		}
		bytes += s.Bytes
		requests += s.Requests
		if method == http.MethodGet && strings.Contains(path, "/blobs/") {
			blobGETs += s.Requests
		}
	}
	return bytes, requests, blobGETs
}

func resetUpstream(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/_bench/reset", nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return fmt.Errorf("reset upstream counters: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("reset upstream counters: %s", resp.Status)
	}
	return nil
}

func upstreamStats(ctx context.Context, base string) (pathStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_bench/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read upstream counters: %w", err)
	}
	defer resp.Body.Close()
	var s pathStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("read upstream counters: %w", err)
	}
	return s, nil
}

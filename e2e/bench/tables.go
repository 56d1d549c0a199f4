package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// column is one column of a results table: header and cell formatter.
type column[T any] struct {
	head string
	cell func(r T) string
}

// transferColumns are the figures of the pull scenarios.
var transferColumns = []column[Result]{
	{"scenario", func(r Result) string { return r.Scenario }},
	{"server", func(r Result) string { return r.Server }},
	{"clients", func(r Result) string { return strconv.Itoa(r.Clients) }},
	{"MB/s", func(r Result) string { return fmt.Sprintf("%.0f", r.ThroughputMBps) }},
	{"wall s", func(r Result) string { return fmt.Sprintf("%.2f", r.WallSeconds) }},
	{"upstream/image", func(r Result) string { return fmt.Sprintf("%.2f", r.UpstreamRatio) }},
	{"upstream blob GETs", func(r Result) string { return strconv.FormatInt(r.UpstreamBlobGETs, 10) }},
	{"manifest TTFB ms", func(r Result) string { return fmt.Sprintf("%.2f", r.ManifestTTFBms) }},
	{"layer TTFB ms", func(r Result) string { return fmt.Sprintf("%.1f", r.LayerTTFBms) }},
	{"CPU s/GB", func(r Result) string { return fmt.Sprintf("%.3f", r.CPUPerGB) }},
	{"peak RSS MiB", func(r Result) string { return fmt.Sprintf("%.0f", r.PeakRSSMiB) }},
	{"memory", memoryCell},
	{"errors", func(r Result) string { return strconv.Itoa(r.Errors) }},
}

// haColumns are the figures of the ha scenarios: each server as a whole
// (replicas and haproxy; "1" replica: the filesystem reference, pulled
// directly), the balancer's share of its CPU, and the shared S3 and etcd
// services apart.
var haColumns = []column[Result]{
	{"scenario", func(r Result) string { return r.Scenario }},
	{"server", func(r Result) string { return r.Server }},
	{"replicas", func(r Result) string { return strconv.Itoa(max(1, r.Replicas)) }},
	{"clients", func(r Result) string { return strconv.Itoa(r.Clients) }},
	{"MB/s", func(r Result) string { return fmt.Sprintf("%.0f", r.ThroughputMBps) }},
	{"wall s", func(r Result) string { return fmt.Sprintf("%.2f", r.WallSeconds) }},
	{"upstream/image", func(r Result) string { return fmt.Sprintf("%.2f", r.UpstreamRatio) }},
	{"upstream blob GETs", func(r Result) string { return strconv.FormatInt(r.UpstreamBlobGETs, 10) }},
	{"CPU s", func(r Result) string { return fmt.Sprintf("%.2f", r.CPUSeconds) }},
	{"of which haproxy", func(r Result) string { return fmt.Sprintf("%.2f", r.BalancerCPUSeconds) }},
	{"CPU s/GB", func(r Result) string { return fmt.Sprintf("%.3f", r.CPUPerGB) }},
	{"peak RSS MiB", func(r Result) string { return fmt.Sprintf("%.0f", r.PeakRSSMiB) }},
	{"S3+etcd CPU s", func(r Result) string { return fmt.Sprintf("%.2f", r.BackingCPUSeconds) }},
	{"S3+etcd peak RSS MiB", func(r Result) string { return fmt.Sprintf("%.0f", r.BackingPeakRSSMiB) }},
	{"errors", func(r Result) string { return strconv.Itoa(r.Errors) }},
}

// requestColumns are the per-request figures and the memory profile of
// every scenario.
var requestColumns = []column[Result]{
	{"scenario", func(r Result) string { return r.Scenario }},
	{"server", func(r Result) string { return r.Server }},
	{"clients", func(r Result) string { return strconv.Itoa(r.Clients) }},
	{"requests", func(r Result) string { return strconv.FormatInt(r.Requests, 10) }},
	{"req/s", func(r Result) string { return fmt.Sprintf("%.0f", r.RequestsPerSec) }},
	{"p50 ms", func(r Result) string { return fmt.Sprintf("%.2f", r.LatencyP50ms) }},
	{"p99 ms", func(r Result) string { return fmt.Sprintf("%.2f", r.LatencyP99ms) }},
	{"p99 TTFB ms", func(r Result) string { return fmt.Sprintf("%.2f", r.TTFBP99ms) }},
	{"upstream requests", func(r Result) string { return strconv.FormatInt(r.UpstreamRequests, 10) }},
	{"CPU us/req", func(r Result) string { return fmt.Sprintf("%.0f", r.CPUPerRequestUs) }},
	{"peak RSS MiB", func(r Result) string { return fmt.Sprintf("%.0f", r.PeakRSSMiB) }},
	{"threads", func(r Result) string { return strconv.Itoa(r.PeakThreads) }},
	{"goroutines", func(r Result) string { return fmtInt(r.PeakGoroutines) }},
	{"allocs/req", func(r Result) string { return fmtFloat(r.AllocsPerRequest, 1, 0) }},
	{"KiB alloc/req", func(r Result) string { return fmtFloat(r.AllocBytesPerRequest, 1.0/1024, 1) }},
	{"errors", func(r Result) string { return strconv.Itoa(r.Errors) }},
}

// kindRow is one kind of request of one result.
type kindRow struct {
	res  Result
	kind KindResult
}

var kindColumns = []column[kindRow]{
	{"scenario", func(r kindRow) string { return r.res.Scenario }},
	{"server", func(r kindRow) string { return r.res.Server }},
	{"request", func(r kindRow) string { return r.kind.Kind }},
	{"requests", func(r kindRow) string { return strconv.FormatInt(r.kind.Requests, 10) }},
	{"req/s", func(r kindRow) string { return fmt.Sprintf("%.0f", r.kind.RequestsPerSec) }},
	{"p50 ms", func(r kindRow) string { return fmt.Sprintf("%.2f", r.kind.LatencyP50ms) }},
	{"p99 ms", func(r kindRow) string { return fmt.Sprintf("%.2f", r.kind.LatencyP99ms) }},
	{"p99 TTFB ms", func(r kindRow) string { return fmt.Sprintf("%.2f", r.kind.TTFBP99ms) }},
	{"errors", func(r kindRow) string { return strconv.Itoa(r.kind.Errors) }},
}

var ratioColumns = []column[Ratio]{
	{"target", func(r Ratio) string { return r.Name }},
	{"goal", func(r Ratio) string { return goalCell(r) }},
	{"regcache", func(r Ratio) string { return fmtValue(r.Regcache) }},
	{"distribution", func(r Ratio) string { return fmtValue(r.Distribution) }},
	{"nginx", func(r Ratio) string { return fmtValue(r.Nginx) }},
	{"regcache meets it", func(r Ratio) string { return fmtMet(r.Met) }},
}

var microColumns = []column[MicroResult]{
	{"micro-benchmark", func(m MicroResult) string { return m.Name }},
	{"ns/op", func(m MicroResult) string { return fmt.Sprintf("%.0f", m.NsPerOp) }},
	{"B/op", func(m MicroResult) string { return fmt.Sprintf("%.0f", m.BytesPerOp) }},
	{"allocs/op", func(m MicroResult) string { return fmt.Sprintf("%.0f", m.AllocsPerOp) }},
}

// memoryCell says which memory state a cold figure was taken in.
func memoryCell(r Result) string {
	if r.Memory == memPreTouched {
		return fmt.Sprintf("touched %.2f s/GB", r.PreTouchSecondsPerGB)
	}
	return r.Memory
}

func goalCell(r Ratio) string {
	if r.Target == "" {
		return "(reported)"
	}
	return r.Target
}

func fmtValue(v *float64) string { return fmtFloat(v, 1, 2) }

// fmtFloat writes *v times k with decimals digits, "-" for nil.
func fmtFloat(v *float64, k float64, decimals int) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v*k, 'f', decimals, 64)
}

func fmtInt(v *int) string {
	if v == nil {
		return "-"
	}
	return strconv.Itoa(*v)
}

func fmtMet(m *bool) string {
	switch {
	case m == nil:
		return "-"
	case *m:
		return "yes"
	}
	return "NO"
}

// table is one titled table of the report: a header row, then cells; the
// first left columns are names (aligned left), the others numbers.
type table struct {
	title string
	left  int
	rows  [][]string
}

func makeTable[T any](title string, left int, cols []column[T], items []T) table {
	t := table{title: title, left: left, rows: [][]string{nil}}
	for _, c := range cols {
		t.rows[0] = append(t.rows[0], c.head)
	}
	for _, it := range items {
		var cells []string
		for _, c := range cols {
			cells = append(cells, c.cell(it))
		}
		t.rows = append(t.rows, cells)
	}
	return t
}

// tables returns the report's tables: targets, transfers (pull
// scenarios), requests and memory (every scenario), kinds of request
// (request loads), replicas (ha scenarios) and micro-benchmarks; empty
// ones are left out.
func tables(r *Report) []table {
	var pulls, ha []Result
	var kinds []kindRow
	for _, res := range r.Results {
		if len(res.Kinds) == 0 {
			pulls = append(pulls, res)
		}
		if res.Scenario == scHACold || res.Scenario == scHAWarm {
			ha = append(ha, res)
		}
		for _, k := range res.Kinds {
			kinds = append(kinds, kindRow{res, k})
		}
	}
	all := []table{
		makeTable("Targets (ratios of one run)", 2, ratioColumns, r.Ratios),
		makeTable("Transfers", 2, transferColumns, pulls),
		makeTable("Requests and memory", 2, requestColumns, r.Results),
		makeTable("Requests by kind", 3, kindColumns, kinds),
		makeTable("Replicas behind haproxy (ha; CPU and RSS: replicas + haproxy; S3+etcd: SeaweedFS and etcd, not included)", 2, haColumns, ha),
		makeTable("Micro-benchmarks (go test -bench, in process)", 1, microColumns, r.Micro),
	}
	var out []table
	for _, t := range all {
		if len(t.rows) > 1 {
			out = append(out, t)
		}
	}
	return out
}

// printTable writes every table as aligned text, then the first error of
// each result that had errors.
func printTable(w io.Writer, r *Report) {
	for i, t := range tables(r) {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, t.title+":")
		writeAligned(w, t.rows, t.left)
	}
	for _, res := range r.Results {
		if res.Error != "" {
			fmt.Fprintf(w, "\n%s / %s: %d error(s), first: %s\n", res.Scenario, res.Server, res.Errors, res.Error)
		}
	}
	for _, m := range r.Micro {
		if m.Error != "" {
			fmt.Fprintf(w, "\nmicro-benchmarks: %s\n", m.Error)
		}
	}
	printEviction(w, r.Eviction)
}

// markdown renders the machine, the configuration and the tables.
func markdown(r *Report) string {
	var b strings.Builder
	m, c := r.Machine, r.Config
	fmt.Fprintf(&b, "Measured %s on regcache `%s` (%.0f s run).\n\n", c.Started, c.Revision, c.DurationSeconds)
	fmt.Fprintf(&b, "- Machine: %d CPUs, %s, %.1f GiB memory, Linux %s, %s, %s; 1-minute load average %.2f when the run started (%.2f at its end, its own load included)\n",
		m.CPUs, m.Model, m.MemoryGiB, m.Kernel, m.Go, m.OSArch, m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&b, "- Workload: image of %d x %s random layers (%s with manifest and config), %d concurrent clients, big blob %s; "+
		"small-blobs image of %d layers (%s); fanout: %d clients of a %s image; manifests: %d clients for %.0f s per server; "+
		"many-tags: %d tags, tag TTL %.0f s, pages of %d; clients verify digests: %v\n",
		c.Layers, formatSize(c.LayerSize), humanSize(c.ImageBytes), c.Clients, formatSize(c.BigBlobSize),
		c.SmallLayers, humanSize(c.SmallImageBytes), c.FanoutClients, humanSize(c.FanoutImageBytes),
		c.ManifestClients, c.DurationPerServer, c.Tags, c.TagTTLSeconds, c.PageSize, c.Verify)
	memory := "free memory as found (--pre-touch=false)"
	if c.PreTouch {
		memory = "before each cold scenario, memory of twice its bytes touched and freed (the memory column gives the touch's seconds per GB)"
	}
	fmt.Fprintf(&b, "- Memory: %s; nginx: %s\n", memory, c.NginxVersion)
	if c.HAPeerChannel != nil {
		peer := "on"
		if !*c.HAPeerChannel {
			peer = "off (this build has no --peer-listen)"
		}
		fmt.Fprintf(&b, "- Replicas (ha-cold, ha-warm): %d per server behind haproxy %s (round-robin per request), %d clients through it; "+
			"S3: SeaweedFS %s, one bucket, a prefix per server; regcache's metadata in etcd, its peer channel %s; "+
			"server CPU and RSS are the replicas' and haproxy's, SeaweedFS's and etcd's are the S3+etcd columns\n",
			c.HAReplicas, c.HAProxyVersion, c.HAClients, c.SeaweedFSVersion, peer)
	}
	for _, t := range tables(r) {
		fmt.Fprintf(&b, "\n%s:\n\n", t.title)
		for i, row := range t.rows {
			b.WriteString("|")
			for _, cell := range row {
				b.WriteString(" " + strings.ReplaceAll(cell, "|", `\|`) + " |")
			}
			b.WriteString("\n")
			if i == 0 {
				b.WriteString("|")
				for j := range row {
					if j < t.left {
						b.WriteString("---|")
					} else {
						b.WriteString("---:|")
					}
				}
				b.WriteString("\n")
			}
		}
	}
	for _, res := range r.Results {
		if res.Error != "" {
			fmt.Fprintf(&b, "\n`%s` / `%s`: %d error(s), first: `%s`\n", res.Scenario, res.Server, res.Errors, strings.ReplaceAll(res.Error, "`", "'"))
		}
	}
	b.WriteString(evictionMarkdown(r.Eviction))
	return b.String()
}

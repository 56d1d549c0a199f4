package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// Report is the whole result of a run, as written to the JSON file.
type Report struct {
	Machine Machine   `json:"machine"`
	Config  RunConfig `json:"config"`
	Results []Result  `json:"results"`
	Ratios  []Ratio   `json:"ratios"`
	// Eviction is the eviction run (evict.go), when it ran.
	Eviction *EvictionResult `json:"eviction,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int     `json:"nproc"`
	Model     string  `json:"cpu_model"`
	MemoryGiB float64 `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go_version"`
	OSArch    string  `json:"os_arch"`
	// LoadStart and LoadEnd are /proc/loadavg's 1-minute figure when the
	// run started and ended: other work on the machine skews every figure.
	LoadStart float64 `json:"loadavg_1m_start"`
	LoadEnd   float64 `json:"loadavg_1m_end"`
}

// loadAverage returns the 1-minute load average (0 when unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// RunConfig is what was measured.
type RunConfig struct {
	Layers          int     `json:"layers"`
	LayerSize       int64   `json:"layer_size"`
	Clients         int     `json:"clients"`
	BigBlobSize     int64   `json:"big_blob_size"`
	Verify          bool    `json:"verify"`
	ImageBytes      int64   `json:"image_bytes"`
	BigImageBytes   int64   `json:"big_image_bytes"`
	Revision        string  `json:"regcache_revision"`
	Started         string  `json:"started"`
	DurationSeconds float64 `json:"duration_seconds"`
}

// Result is one scenario against one server. Every field is always present
// in the JSON; MB and GB are 10^6 and 10^9 bytes, MiB 2^20.
type Result struct {
	Scenario         string  `json:"scenario"`
	Server           string  `json:"server"`
	Clients          int     `json:"clients"`
	ImageBytes       int64   `json:"image_bytes"`
	BytesServed      int64   `json:"bytes_served"`
	WallSeconds      float64 `json:"wall_seconds"`
	ThroughputMBps   float64 `json:"throughput_mb_per_s"`
	UpstreamBytes    int64   `json:"upstream_bytes"`
	UpstreamRequests int64   `json:"upstream_requests"`
	UpstreamBlobGETs int64   `json:"upstream_blob_gets"`
	UpstreamRatio    float64 `json:"upstream_bytes_per_image_byte"`
	ManifestTTFBms   float64 `json:"manifest_ttfb_ms"`
	LayerTTFBms      float64 `json:"first_layer_ttfb_ms"`
	CPUSeconds       float64 `json:"server_cpu_seconds"`
	CPUPerGB         float64 `json:"server_cpu_seconds_per_gb"`
	PeakRSSMiB       float64 `json:"server_peak_rss_mib"`
	PeakFromHWM      bool    `json:"peak_rss_from_vmhwm"`
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	Errors           int     `json:"errors"`
	Error            string  `json:"error"`
}

// Ratio is one figure the benchmark's issue sets a target for, for regcache
// and (for comparison) distribution. Values are null when not measured or
// when a result they depend on had errors.
type Ratio struct {
	Name         string   `json:"name"`
	Target       string   `json:"target"`
	Regcache     *float64 `json:"regcache"`
	Distribution *float64 `json:"distribution"`
	Met          *bool    `json:"met"` // by regcache
}

func (r *Report) errorCount() int {
	n := 0
	for _, res := range r.Results {
		n += res.Errors
	}
	return n + r.Eviction.errors()
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

// computeRatios derives the target figures from one run's results.
func computeRatios(results []Result) []Ratio {
	type def struct {
		name, target string
		value        func(server string) *float64
		met          func(v float64) bool
	}
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
	defs := []def{
		{"cold-16: upstream bytes / image bytes", "<= 1.01",
			of(scCold16, func(r *Result) float64 { return r.UpstreamRatio }), func(v float64) bool { return v <= 1.01 }},
		{"warm-16: server CPU s per GB / static's", "<= 1.25",
			vs(scWarm16, srvStatic, func(r *Result) float64 { return r.CPUPerGB }), func(v float64) bool { return v <= 1.25 }},
		{"warm-16: throughput / static's", ">= 0.9",
			vs(scWarm16, srvStatic, func(r *Result) float64 { return r.ThroughputMBps }), func(v float64) bool { return v >= 0.9 }},
		{"warm-16: manifest TTFB (median) / static's", "<= 2",
			vs(scWarm16, srvStatic, func(r *Result) float64 { return r.ManifestTTFBms }), func(v float64) bool { return v <= 2 }},
		{"cold-1: wall time / direct pull's", "<= 1.15",
			vs(scCold1, srvDirect, func(r *Result) float64 { return r.WallSeconds }), func(v float64) bool { return v <= 1.15 }},
		{"ttfb-cold-1GiB: big layer TTFB - upstream's (ms)", "<= +50 ms",
			func(server string) *float64 {
				r, d := find(results, scTTFBBig, server), find(results, scTTFBBig, srvDirect)
				if r == nil || d == nil {
					return nil
				}
				v := r.LayerTTFBms - d.LayerTTFBms
				return &v
			}, func(v float64) bool { return v <= 50 }},
		{"cold-16-1GiB: server peak RSS (MiB)", "<= 150 MiB",
			of(scBigCold16, func(r *Result) float64 { return r.PeakRSSMiB }), func(v float64) bool { return v <= 150 }},
	}
	out := make([]Ratio, 0, len(defs))
	for _, d := range defs {
		r := Ratio{Name: d.name, Target: d.target, Regcache: d.value(srvRegcache), Distribution: d.value(srvDistribution)}
		if r.Regcache != nil {
			met := d.met(*r.Regcache)
			r.Met = &met
		}
		out = append(out, r)
	}
	return out
}

// describeMachine reads the CPU model, memory and kernel from /proc.
func describeMachine(ctx context.Context) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OSArch: runtime.GOOS + "/" + runtime.GOARCH, Model: "unknown", Kernel: "unknown"}
	if out, err := exec.CommandContext(ctx, goCommand(), "env", "GOVERSION").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out)) // the toolchain that built the servers
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				m.MemoryGiB = float64(kb) / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// columns of the results table: header and cell formatter.
var columns = []struct {
	head string
	cell func(r Result) string
}{
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
	{"errors", func(r Result) string { return strconv.Itoa(r.Errors) }},
}

func fmtValue(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *v)
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

// printTable writes the results and the ratios as aligned text: names left,
// numbers right.
func printTable(w io.Writer, r *Report) {
	rows := [][]string{nil}
	for _, c := range columns {
		rows[0] = append(rows[0], c.head)
	}
	for _, res := range r.Results {
		var cells []string
		for _, c := range columns {
			cells = append(cells, c.cell(res))
		}
		rows = append(rows, cells)
	}
	writeAligned(w, rows, 2)
	fmt.Fprintln(w)
	rows = [][]string{{"target", "goal", "regcache", "distribution", "met"}}
	for _, ra := range r.Ratios {
		rows = append(rows, []string{ra.Name, ra.Target, fmtValue(ra.Regcache), fmtValue(ra.Distribution), fmtMet(ra.Met)})
	}
	writeAligned(w, rows, 2)
	for _, res := range r.Results {
		if res.Error != "" {
			fmt.Fprintf(w, "\n%s / %s: %d error(s), first: %s\n", res.Scenario, res.Server, res.Errors, res.Error)
		}
	}
	printEviction(w, r.Eviction)
}

// writeAligned writes rows as columns two spaces apart, the first left
// columns aligned left and the others right.
func writeAligned(w io.Writer, rows [][]string, left int) {
	var width []int
	for _, row := range rows {
		for i, cell := range row {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(cell))
		}
	}
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-len(cell))
			if i < left {
				line.WriteString(cell + pad)
			} else {
				line.WriteString(pad + cell)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(line.String(), " "))
	}
}

func writeJSON(path string, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// The generated part of BENCHMARKS.md lies between these markers; the rest of
// the file is left as written.
const (
	mdBegin = "<!-- bench:begin (generated by go run ./e2e/bench --write-md; do not edit by hand) -->"
	mdEnd   = "<!-- bench:end -->"
)

// humanSize writes n in MiB (or KiB below 1 MiB) with one decimal.
func humanSize(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// markdown renders the machine, the configuration, the ratios and the table.
func markdown(r *Report) string {
	var b strings.Builder
	m, c := r.Machine, r.Config
	fmt.Fprintf(&b, "Measured %s on regcache `%s` (%.0f s run).\n\n", c.Started, c.Revision, c.DurationSeconds)
	fmt.Fprintf(&b, "- Machine: %d CPUs, %s, %.1f GiB memory, Linux %s, %s, %s; 1-minute load average %.2f when the run started (%.2f at its end, its own load included)\n",
		m.CPUs, m.Model, m.MemoryGiB, m.Kernel, m.Go, m.OSArch, m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&b, "- Workload: image of %d x %s random layers (%s with manifest and config), %d concurrent clients, big blob %s; clients verify digests: %v\n\n",
		c.Layers, formatSize(c.LayerSize), humanSize(c.ImageBytes), c.Clients, formatSize(c.BigBlobSize), c.Verify)
	b.WriteString("| target | goal | regcache | distribution proxy | regcache meets it |\n|---|---|---:|---:|---|\n")
	for _, ra := range r.Ratios {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", ra.Name, ra.Target, fmtValue(ra.Regcache), fmtValue(ra.Distribution), fmtMet(ra.Met))
	}
	b.WriteString("\n|")
	for _, col := range columns {
		b.WriteString(" " + col.head + " |")
	}
	b.WriteString("\n|")
	for i := range columns {
		if i < 2 {
			b.WriteString("---|")
		} else {
			b.WriteString("---:|")
		}
	}
	b.WriteString("\n")
	for _, res := range r.Results {
		b.WriteString("|")
		for _, col := range columns {
			b.WriteString(" " + col.cell(res) + " |")
		}
		b.WriteString("\n")
	}
	for _, res := range r.Results {
		if res.Error != "" {
			fmt.Fprintf(&b, "\n`%s` / `%s`: %d error(s), first: `%s`\n", res.Scenario, res.Server, res.Errors, strings.ReplaceAll(res.Error, "`", "'"))
		}
	}
	b.WriteString(evictionMarkdown(r.Eviction))
	return b.String()
}

// writeMarkdown replaces the generated section of path (creating the file,
// or appending the section, when there is none).
func writeMarkdown(path string, r *Report) error {
	section := mdBegin + "\n" + markdown(r) + mdEnd + "\n"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	var out []byte
	i, j := bytes.Index(old, []byte(mdBegin)), bytes.Index(old, []byte(mdEnd))
	switch {
	case i >= 0 && j > i:
		rest := old[j+len(mdEnd):]
		rest = bytes.TrimPrefix(rest, []byte("\n"))
		out = append(append(append([]byte{}, old[:i]...), section...), rest...)
	case len(old) == 0:
		out = []byte("# Benchmarks\n\n" + section)
	default:
		out = append(append(bytes.TrimRight(old, "\n"), "\n\n"...), section...)
	}
	return os.WriteFile(path, out, 0o644)
}

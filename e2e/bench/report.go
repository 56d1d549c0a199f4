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
	// Micro are the go test -bench micro-benchmarks (--micro).
	Micro []MicroResult `json:"micro"`
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

// meminfo returns a /proc/meminfo field in bytes (0 when unknown).
func meminfo(field string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
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
	Layers            int      `json:"layers"`
	LayerSize         int64    `json:"layer_size"`
	Clients           int      `json:"clients"`
	BigBlobSize       int64    `json:"big_blob_size"`
	Verify            bool     `json:"verify"`
	RegcacheMetrics   bool     `json:"regcache_metrics"`
	ImageBytes        int64    `json:"image_bytes"`
	BigImageBytes     int64    `json:"big_image_bytes"`
	SmallLayers       int      `json:"small_layers"`
	SmallImageBytes   int64    `json:"small_image_bytes"`
	FanoutClients     int      `json:"fanout_clients"`
	FanoutImageBytes  int64    `json:"fanout_image_bytes"`
	ManifestClients   int      `json:"manifest_clients"`
	DurationPerServer float64  `json:"manifests_seconds_per_server"`
	Tags              int      `json:"tags"`
	TagTTLSeconds     float64  `json:"many_tags_tag_ttl_seconds"`
	PageSize          int      `json:"tag_page_size"`
	PreTouch          bool     `json:"pre_touch"`
	Servers           []string `json:"servers"`
	NginxVersion      string   `json:"nginx_version"`
	// The ha scenarios: replicas per server, clients, whether regcache's
	// replicas ran with the peer channel (null when no ha server ran),
	// and the versions of haproxy and SeaweedFS.
	HAReplicas       int     `json:"ha_replicas"`
	HAClients        int     `json:"ha_clients"`
	HAPeerChannel    *bool   `json:"ha_peer_channel"`
	HAProxyVersion   string  `json:"haproxy_version"`
	SeaweedFSVersion string  `json:"seaweedfs_version"`
	Revision         string  `json:"regcache_revision"`
	Started          string  `json:"started"`
	DurationSeconds  float64 `json:"duration_seconds"`
}

// Result is one scenario against one server. Every field is always present
// in the JSON (null where a server cannot say: goroutines and allocations
// of nginx); MB and GB are 10^6 and 10^9 bytes, MiB 2^20.
type Result struct {
	Scenario         string  `json:"scenario"`
	Server           string  `json:"server"`
	Clients          int     `json:"clients"`
	ImageBytes       int64   `json:"image_bytes"` // of one pull; 0 for a request load
	BytesServed      int64   `json:"bytes_served"`
	Requests         int64   `json:"requests"`
	WallSeconds      float64 `json:"wall_seconds"`
	ThroughputMBps   float64 `json:"throughput_mb_per_s"`
	RequestsPerSec   float64 `json:"requests_per_s"`
	LatencyP50ms     float64 `json:"latency_p50_ms"` // of every request, to the end of its body
	LatencyP99ms     float64 `json:"latency_p99_ms"`
	TTFBP99ms        float64 `json:"ttfb_p99_ms"`
	UpstreamBytes    int64   `json:"upstream_bytes"`
	UpstreamRequests int64   `json:"upstream_requests"`
	UpstreamBlobGETs int64   `json:"upstream_blob_gets"`
	UpstreamRatio    float64 `json:"upstream_bytes_per_image_byte"`
	ManifestTTFBms   float64 `json:"manifest_ttfb_ms"`    // median over clients (pulls)
	LayerTTFBms      float64 `json:"first_layer_ttfb_ms"` // median over clients (pulls)
	CPUSeconds       float64 `json:"server_cpu_seconds"`  // summed over the server's processes
	CPUPerGB         float64 `json:"server_cpu_seconds_per_gb"`
	CPUPerRequestUs  float64 `json:"server_cpu_us_per_request"`
	PeakRSSMiB       float64 `json:"server_peak_rss_mib"` // summed over the server's processes
	PeakFromHWM      bool    `json:"peak_rss_from_vmhwm"`
	PeakThreads      int     `json:"server_peak_threads"`
	Processes        int     `json:"server_processes"`
	// A replicated server (ha): its replicas behind the load balancer
	// (0 otherwise), the balancer's share of CPUSeconds, and what the
	// shared services it keeps its state in (SeaweedFS, etcd) spent,
	// not included in the server's figures.
	Replicas           int     `json:"replicas"`
	BalancerCPUSeconds float64 `json:"balancer_cpu_seconds"`
	BackingCPUSeconds  float64 `json:"backing_cpu_seconds"`
	BackingPeakRSSMiB  float64 `json:"backing_peak_rss_mib"`
	// From the probe of a Go server; null for nginx.
	PeakGoroutines       *int     `json:"server_peak_goroutines"`
	AllocsPerRequest     *float64 `json:"server_allocs_per_request"`
	AllocBytesPerRequest *float64 `json:"server_alloc_bytes_per_request"`
	// Memory is the state of free memory a cold scenario ran on:
	// "pre-touched" (see memtemp.go), "as found" (--pre-touch=false), or
	// "-" for a warm scenario.
	Memory               string       `json:"memory_state"`
	PreTouchMiB          float64      `json:"pre_touch_mib"`
	PreTouchSecondsPerGB float64      `json:"pre_touch_seconds_per_gb"`
	Kinds                []KindResult `json:"kinds"` // request loads: per kind of request
	ClientCPUSeconds     float64      `json:"client_cpu_seconds"`
	Errors               int          `json:"errors"`
	Error                string       `json:"error"`
}

// KindResult is one kind of request of a request load (manifests,
// many-tags).
type KindResult struct {
	Kind           string  `json:"kind"`
	Requests       int64   `json:"requests"`
	RequestsPerSec float64 `json:"requests_per_s"`
	LatencyP50ms   float64 `json:"latency_p50_ms"`
	LatencyP99ms   float64 `json:"latency_p99_ms"`
	TTFBP99ms      float64 `json:"ttfb_p99_ms"`
	Errors         int     `json:"errors"`
}

func (r *Report) errorCount() int {
	n := 0
	for _, res := range r.Results {
		n += res.Errors
	}
	for _, m := range r.Micro {
		if m.Error != "" {
			n++
		}
	}
	return n + r.Eviction.errors()
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
	m.MemoryGiB = float64(meminfo("MemTotal")) / (1 << 30)
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
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

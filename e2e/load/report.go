package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// report is everything one run measured.
type report struct {
	Machine machine     `json:"machine"`
	Config  config      `json:"config"`
	Seconds float64     `json:"load_seconds"`
	Kinds   []kindStats `json:"requests"`
	Server  struct {
		Baseline     sample  `json:"baseline"`
		Peak         sample  `json:"peak"`
		After        sample  `json:"after"`
		SettledAfter float64 `json:"settled_after_seconds"` // -1: not back within --settle
		Settled      bool    `json:"settled"`
	} `json:"regcache"`
	Attacker *attackerStats `json:"attacker,omitempty"`
	Log      struct {
		Warn        int      `json:"warn_lines"`
		Error       int      `json:"error_lines"`
		FirstErrors []string `json:"first_error_lines,omitempty"`
	} `json:"regcache_log"`
	ClientErrors []string       `json:"client_errors,omitempty"`
	Events       map[string]int `json:"events,omitempty"`
	Failures     []string       `json:"failures,omitempty"`
}

// machine describes where the run happened.
type machine struct {
	CPUs      int     `json:"nproc"`
	CPUModel  string  `json:"cpu_model"`
	MemoryGiB float64 `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go_version"`
	LoadStart float64 `json:"load_average_start"`
	LoadEnd   float64 `json:"load_average_end"`
}

// config records the flags of the run.
type config struct {
	Duration      string  `json:"duration"`
	Clients       int     `json:"clients"`
	IdleConns     int     `json:"idle_conns"`
	PerAddressCap int     `json:"per_address_cap"`
	WarmImages    int     `json:"warm_images"`
	LayerSizes    []int64 `json:"layer_sizes"`
	ColdRatio     float64 `json:"cold_ratio"`
	ColdFanout    int     `json:"cold_fanout"`
	ColdLayerSize int64   `json:"cold_layer_size"`
	RangeRatio    float64 `json:"range_ratio"`
}

func configOf(o options) config {
	return config{Duration: o.duration.String(), Clients: o.clients, IdleConns: o.idleConns, PerAddressCap: o.perAddressCap,
		WarmImages: o.warmImages, LayerSizes: o.layerSizes, ColdRatio: o.coldRatio, ColdFanout: o.coldFanout,
		ColdLayerSize: o.coldLayerSize, RangeRatio: o.rangeRatio}
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAverage()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				m.MemoryGiB = kb / (1 << 20)
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		m.Kernel = b.String()
	}
	return m
}

// loadAverage is the 1-minute load average.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// print writes the report as markdown tables.
func (r *report) print(w io.Writer) {
	c, m := r.Config, r.Machine
	fmt.Fprintf(w, "\n%d clients for %s (%d warm images of %s layers, %.0f%% of pulls a new image of %s handed to %d clients, %.0f%% of warm blob reads a Range), ",
		c.Clients, c.Duration, c.WarmImages, sizes(c.LayerSizes), 100*c.ColdRatio, size(c.ColdLayerSize), c.ColdFanout, 100*c.RangeRatio)
	fmt.Fprintf(w, "%d idle connections from the attacker; %d CPUs (%s), %.1f GiB, Linux %s, %s; load average %.2f at the start, %.2f at the end\n\n",
		c.IdleConns, m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.Go, m.LoadStart, m.LoadEnd)
	fmt.Fprintln(w, "| request | count | errors | p50 ms | p99 ms | max ms | MB |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	var reqs, errs int
	var mb float64
	for _, k := range r.Kinds {
		fmt.Fprintf(w, "| %s | %d | %d | %.1f | %.1f | %.1f | %.1f |\n", k.Kind, k.Requests, k.Errors, k.P50ms, k.P99ms, k.Maxms, k.MB)
		reqs, errs, mb = reqs+k.Requests, errs+k.Errors, mb+k.MB
	}
	if r.Seconds > 0 {
		fmt.Fprintf(w, "| **all** | %d | %d | | | | %.1f |\n\nThroughput: %.0f requests/s, %.1f MB/s over %.1f s.\n\n", reqs, errs, mb, float64(reqs)/r.Seconds, mb/r.Seconds, r.Seconds)
	}
	s := r.Server
	after := "not back within --settle"
	if s.Settled {
		after = fmt.Sprintf("after (back %.0f s after the load)", s.SettledAfter)
	}
	fmt.Fprintf(w, "| regcache | baseline | peak | %s |\n|---|---:|---:|---:|\n", after)
	fmt.Fprintf(w, "| goroutines | %d | %d | %d |\n", s.Baseline.Goroutines, s.Peak.Goroutines, s.After.Goroutines)
	fmt.Fprintf(w, "| open files | %d | %d | %d |\n", s.Baseline.OpenFiles, s.Peak.OpenFiles, s.After.OpenFiles)
	fmt.Fprintf(w, "| threads | %d | %d | %d |\n", s.Baseline.Threads, s.Peak.Threads, s.After.Threads)
	fmt.Fprintf(w, "| RSS MiB | %.0f | %.0f | %.0f |\n\n", mib(s.Baseline.RSSBytes), mib(s.Peak.RSSBytes), mib(s.After.RSSBytes))
	if a := r.Attacker; a != nil {
		fmt.Fprintf(w, "Attacker (%d connections wanted, %d processes): %d dials, at most %d open on its side at once, %d closed by regcache at accept (over its cap), %d closed after its header timeout, %d dial errors; redials limited to %d/s.\n\n",
			a.Slots, a.Processes, a.Dials, a.PeakOpen, a.Refused, a.Expired, a.DialErrors, a.DialsPerSecL)
	}
	fmt.Fprintf(w, "regcache log: %d WARN lines, %d ERROR lines.\n", r.Log.Warn, r.Log.Error)
	for _, l := range r.Log.FirstErrors {
		fmt.Fprintf(w, "  %s\n", l)
	}
	for e, n := range r.Events {
		fmt.Fprintf(w, "%s: %d\n", e, n)
	}
	for _, e := range r.ClientErrors {
		fmt.Fprintf(w, "client error: %s\n", e)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "failure: %s\n", f)
	}
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// size writes n in the largest binary unit that divides it.
func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func sizes(ns []int64) string {
	var out []string
	for _, n := range ns {
		out = append(out, size(n))
	}
	return strings.Join(out, "+")
}

// Package probe lets the benchmark read, from outside, what only a Go
// process knows about itself: how many goroutines it runs (and the most it
// ran during a scenario) and how many heap allocations it made. The
// benchmark's Go servers start it on a loopback address the benchmark
// chooses; regcache gets it through a file the benchmark adds to its build
// (go build -overlay), so that regcache's own source carries no
// benchmark code.
//
//	POST /begin  starts sampling the goroutine count (every 5 ms)
//	             and returns the counters
//	POST /end    stops sampling and returns the counters, with the
//	             largest goroutine count seen since /begin
//
// The counters come from runtime.ReadMemStats, which is exact (it stops
// the world for a few microseconds): two reads per scenario do not disturb
// what is measured. Goroutine counts include the probe's own (two or
// three), and its two requests add a few dozen allocations per scenario.
package probe

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// EnvAddr names the environment variable holding the probe's listen
// address; the benchmark sets it for every Go server it starts.
const EnvAddr = "BENCH_PROBE_ADDR"

// Stats is what /begin and /end answer.
type Stats struct {
	Goroutines int `json:"goroutines"`
	// PeakGoroutines is the largest count seen since /begin (at /begin,
	// the current count).
	PeakGoroutines int    `json:"peak_goroutines"`
	Mallocs        uint64 `json:"mallocs"` // heap objects allocated since the start
	TotalAlloc     uint64 `json:"total_alloc_bytes"`
	HeapInuse      uint64 `json:"heap_inuse_bytes"`
}

// sampleEvery is the goroutine sampling period between /begin and /end.
const sampleEvery = 5 * time.Millisecond

type probe struct {
	peak atomic.Int64

	mu   sync.Mutex    // guards stop and done
	stop chan struct{} // closed to end the running sampler; nil when none
	done chan struct{} // closed by the sampler when it returned
}

// Start serves the probe on addr in the background; an empty addr starts
// nothing. The address must be a loopback one.
func Start(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("probe address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("probe address %q: must be a loopback address such as 127.0.0.1:0", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	srv := &http.Server{Handler: handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "probe:", err)
		}
	}()
	return nil
}

// handler serves /begin and /end.
func handler() http.Handler {
	p := &probe{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /begin", p.begin)
	mux.HandleFunc("POST /end", p.end)
	return mux
}

func (p *probe) begin(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	p.stopSampler()
	n := runtime.NumGoroutine() // before the sampler starts
	p.peak.Store(int64(n))
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go p.sample(p.stop, p.done)
	p.mu.Unlock()
	p.write(w, n)
}

func (p *probe) end(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	p.stopSampler()
	p.mu.Unlock()
	p.write(w, runtime.NumGoroutine())
}

// stopSampler ends the running sampler, if any, and waits for it; the
// caller holds p.mu (the sampler never takes it).
func (p *probe) stopSampler() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.stop, p.done = nil, nil
}

func (p *probe) sample(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			n := int64(runtime.NumGoroutine())
			for {
				old := p.peak.Load()
				if n <= old || p.peak.CompareAndSwap(old, n) {
					break
				}
			}
		}
	}
}

// write answers with the counters; n is the goroutine count to report.
func (p *probe) write(w http.ResponseWriter, n int) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := Stats{Goroutines: n, PeakGoroutines: max(int(p.peak.Load()), n), Mallocs: ms.Mallocs, TotalAlloc: ms.TotalAlloc, HeapInuse: ms.HeapInuse}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s)
}

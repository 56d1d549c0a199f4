// Package heapfloor keeps the Go garbage collector from running more often
// than a server's memory needs.
//
// The collector starts a cycle when the heap has grown by GOGC percent (100)
// over what the last cycle found live. regcache keeps little live (a few
// MiB: rules, records, buffers in flight) and allocates a few KiB per
// request, so on a busy manifest path the collector would run tens of times
// a second, each cycle taking a share of the CPU from the requests and
// adding to their tail latency. A heap floor sets, after every cycle, the
// GOGC percent that lets the heap grow to at least the floor before the
// next cycle, and never less than 100: once the live heap is above half the
// floor, the collector runs exactly as by default. The memory this costs is
// bounded by the floor.
//
// An explicit GOGC in the environment is the operator's choice and wins:
// the floor then does nothing. GOMEMLIMIT still applies on top of the
// floor (the collector runs when the limit is near, whatever the percent).
package heapfloor

import (
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Default is the floor regcache serves with unless told otherwise.
const Default = 32 << 20

// basePercent is Go's default GOGC, the least the floor ever sets.
const basePercent = 100

// minHeap is the runtime's smallest heap goal at GOGC=100; it scales with
// the percent (at GOGC=p it is minHeap*p/100).
const minHeap = 4 << 20

// liveMetric is the heap the last cycle marked live.
const liveMetric = "/gc/heap/live:bytes"

// Percent is the GOGC percent under which a heap with live bytes live grows
// to at least floor bytes before the next collection: never less than 100,
// and at most the percent whose smallest heap goal is the floor (the
// runtime scales that with the percent), which a live heap under 4 MiB
// gets.
func Percent(live, floor int64) int {
	if floor <= 0 {
		return basePercent
	}
	most := max(100*floor/minHeap, basePercent)
	if live <= 0 {
		return int(most)
	}
	// The heap goal is about live * (1 + p/100); round p up.
	p := (100*(floor-live) + live - 1) / live
	return int(min(max(p, basePercent), most))
}

// Floor adjusts the collector after each of its cycles until Stop.
type Floor struct {
	floor int64

	mu      sync.Mutex // guards stopped and percent
	stopped bool
	percent int
	sample  []metrics.Sample
}

// Start sets a heap floor of floor bytes (0 or less: none) and returns it.
// It does nothing, and says so in log, when GOGC is set in the environment.
func Start(floor int64, log *slog.Logger) *Floor {
	f := &Floor{floor: floor, percent: basePercent, sample: []metrics.Sample{{Name: liveMetric}}}
	if floor <= 0 {
		f.stopped = true
		return f
	}
	if v := os.Getenv("GOGC"); v != "" {
		log.Info("GOGC is set: no heap floor", "GOGC", v)
		f.stopped = true
		return f
	}
	f.adjust()
	f.arm()
	return f
}

// Stop ends the adjustments and gives the collector back Go's default
// percent. It is safe to call more than once.
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	debug.SetGCPercent(basePercent)
}

// sentinel is allocated for each cycle; the cycle that finds it unreachable
// runs the cleanup that adjusts the percent and allocates the next one. It
// holds a pointer so that it is not batched with other tiny allocations
// (which could keep it alive).
type sentinel struct {
	_ *int
	_ [16]byte
}

// arm registers the adjustment to run after the next collection.
func (f *Floor) arm() {
	runtime.AddCleanup(new(sentinel), func(f *Floor) { f.cycle() }, f)
}

// cycle runs after a collection: adjust, and arm for the next one.
func (f *Floor) cycle() {
	if f.adjust() {
		f.arm()
	}
}

// adjust sets the percent for the live heap the last cycle found; it
// reports false once the floor is stopped.
func (f *Floor) adjust() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.sample)
	live := int64(math.MaxInt64)
	if s := f.sample[0]; s.Value.Kind() == metrics.KindUint64 {
		live = int64(min(s.Value.Uint64(), math.MaxInt64))
	}
	if p := Percent(live, f.floor); p != f.percent {
		f.percent = p
		debug.SetGCPercent(p)
	}
	return true
}

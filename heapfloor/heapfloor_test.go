package heapfloor

import (
	"io"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor int64
		want        int
	}{
		{live: 0, floor: 0, want: 100},
		{live: 10 * mib, floor: 0, want: 100},
		{live: 0, floor: 64 * mib, want: 1600},       // the runtime's 4 MiB minimum, scaled: 64 MiB
		{live: 1 * mib, floor: 64 * mib, want: 1600}, // capped: the minimum is the floor
		{live: 4 * mib, floor: 64 * mib, want: 1500},
		{live: 16 * mib, floor: 64 * mib, want: 300},
		{live: 20 * mib, floor: 64 * mib, want: 220},
		{live: 32 * mib, floor: 64 * mib, want: 100},
		{live: 500 * mib, floor: 64 * mib, want: 100},
		{live: 3*mib + 1, floor: 2 * mib, want: 100},
		{live: 1 * mib, floor: 2 * mib, want: 100},
		{live: 100, floor: 6 * mib, want: 150}, // floor 6 MiB: goal 6 MiB at 150
	} {
		if got := Percent(c.live, c.floor); got != c.want {
			t.Errorf("Percent(live %d, floor %d) = %d, want %d", c.live, c.floor, got, c.want)
		}
	}
}

func readUint(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// gogc is the percent the collector runs with now.
func gogc() uint64 { return readUint("/gc/gogc:percent") }

// cyclesWhileAllocating counts the collections while n bytes of garbage are
// allocated in small pieces.
func cyclesWhileAllocating(n int) uint64 {
	before := readUint("/gc/cycles/total:gc-cycles")
	var keep []byte
	for i := 0; i < n/4096; i++ {
		keep = make([]byte, 4096)
		keep[0] = byte(i)
	}
	runtime.KeepAlive(keep)
	return readUint("/gc/cycles/total:gc-cycles") - before
}

// waitFor collects until cond holds (the adjustment runs after a cycle, on
// the runtime's cleanup goroutine).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10 s of collections (GOGC now %d)", what, gogc())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

// The floor follows the live heap: over a small one the collector waits
// for the heap to reach the floor (a few cycles for 256 MiB of garbage,
// where Go's default runs dozens); with half the floor live it runs as by
// default; Stop gives back the default.
func TestFloorFollowsTheLiveHeap(t *testing.T) {
	t.Setenv("GOGC", "")
	const floor = 64 << 20
	runtime.GC()
	without := cyclesWhileAllocating(256 << 20)

	f := Start(floor, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer f.Stop()
	waitFor(t, "a percent above 100 over a small live heap", func() bool { return gogc() > 100 })
	with := cyclesWhileAllocating(256 << 20)
	t.Logf("collections while allocating 256 MiB of garbage: %d by default, %d with a 64 MiB floor (GOGC %d)", without, with, gogc())
	if with > 6 || without < 3*with {
		t.Errorf("collections while allocating 256 MiB: %d with a 64 MiB floor, %d without; want at most 6 with, and a third of those without", with, without)
	}

	live := make([][]byte, 0, 40<<10)
	for range cap(live) { // 40 MiB live: more than half the floor
		live = append(live, make([]byte, 1024))
	}
	waitFor(t, "the default percent with 40 MiB live", func() bool { return gogc() == 100 })
	runtime.KeepAlive(live)
	live = nil
	waitFor(t, "a percent above 100 once the 40 MiB are garbage", func() bool { return gogc() > 100 })

	f.Stop()
	f.Stop()
	if got := gogc(); got != 100 {
		t.Errorf("GOGC after Stop: %d, want 100", got)
	}
	runtime.GC()
	runtime.GC()
	if got := gogc(); got != 100 {
		t.Errorf("GOGC after Stop and two collections: %d, want 100", got)
	}
}

// An operator's GOGC wins: the floor changes nothing.
func TestGOGCWins(t *testing.T) {
	t.Setenv("GOGC", "150")
	runtime.GC()
	before := gogc()
	f := Start(64<<20, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer f.Stop()
	runtime.GC()
	runtime.GC()
	if got := gogc(); got != before {
		t.Errorf("GOGC with GOGC=150 in the environment: %d, was %d", got, before)
	}
}

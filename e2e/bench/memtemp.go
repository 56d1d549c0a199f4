package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// Memory temperature. A cold fill writes the blob into the page cache, in
// pages the kernel takes from its free lists. On a virtual machine whose
// hypervisor backs guest memory lazily (and takes freed pages back, as a
// balloon's free page reporting does), a page the guest never touched, or
// touched long ago, costs a host fault on first write: measured at 3+ CPU
// seconds per GB on the machine this benchmark was written on, enough to
// swing a cold result between 1.5x and 4x a direct pull. So before each
// cold scenario the benchmark touches and frees memory of twice what the
// scenario will write (--pre-touch, the default), and records how long the
// touch took: seconds per GB near the kernel's own page-zeroing cost
// (about 0.1-0.3 here) say the pages were already backed; several seconds
// per GB say they were fresh and the touch absorbed that cost, not the
// scenario. With --pre-touch=false the figures are taken on memory as
// found, and say so.

// Memory states recorded with each result.
const (
	memPreTouched = "pre-touched"
	memAsFound    = "as found"
	memWarm       = "-" // a warm scenario writes nothing new to the page cache
)

// pageSize is the unit the touch writes one byte into.
var pageSize = os.Getpagesize()

// touchMemory maps n bytes of anonymous memory, writes a byte into every
// page, and unmaps it, so that the kernel's free lists hold pages the
// hypervisor has backed; it returns the seconds per GB (10^9 bytes) the
// touch took. n is capped at half the memory available.
func touchMemory(n int64) (touched int64, secondsPerGB float64, err error) {
	if avail := meminfo("MemAvailable"); avail > 0 {
		n = min(n, avail/2)
	}
	n -= n % int64(pageSize)
	if n <= 0 {
		return 0, 0, nil
	}
	start := time.Now()
	mem, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return 0, 0, fmt.Errorf("map %d bytes to touch: %w", n, err)
	}
	for i := 0; i < len(mem); i += pageSize {
		mem[i] = 1
	}
	if err := syscall.Munmap(mem); err != nil {
		return 0, 0, fmt.Errorf("unmap touched memory: %w", err)
	}
	return n, time.Since(start).Seconds() / (float64(n) / 1e9), nil
}

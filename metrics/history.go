package metrics

import (
	"sync"
	"time"

	"github.com/regcache/regcache/status"
)

// historyLen is how many samples are kept: an hour of minutes, and the
// sample the first of them starts from.
const historyLen = 61

// history holds the running totals sampled at minute boundaries: the
// difference of two samples is one minute. A few kilobytes, whatever the
// traffic.
type history struct {
	mu      sync.Mutex
	samples [historyLen]sample
	n       int // samples held
	next    int // where the next sample goes
}

type sample struct {
	at time.Time
	t  status.Minute // totals at that time (Start unused)
}

// add records the totals t at time at.
func (h *history) add(at time.Time, t status.Minute) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples[h.next] = sample{at: at, t: t}
	h.next = (h.next + 1) % historyLen
	h.n = min(h.n+1, historyLen)
}

// minutes returns the minutes that started within the hour before now,
// oldest first; the last is the minute in progress, up to the totals now.
func (h *history) minutes(now time.Time, current status.Minute) []status.Minute {
	h.mu.Lock()
	ordered := make([]sample, 0, h.n+1)
	for i := 0; i < h.n; i++ {
		ordered = append(ordered, h.samples[(h.next-h.n+i+historyLen)%historyLen])
	}
	h.mu.Unlock()
	ordered = append(ordered, sample{at: now, t: current})
	out := make([]status.Minute, 0, len(ordered)-1)
	for i := 0; i+1 < len(ordered); i++ {
		from, to := ordered[i], ordered[i+1]
		if from.at.Before(now.Add(-time.Hour)) {
			continue
		}
		out = append(out, status.Minute{Start: from.at.UTC(), Hits: to.t.Hits - from.t.Hits, Misses: to.t.Misses - from.t.Misses,
			Stale: to.t.Stale - from.t.Stale, StoreBytes: to.t.StoreBytes - from.t.StoreBytes, FetchedBytes: to.t.FetchedBytes - from.t.FetchedBytes})
	}
	return out
}

package auth

import (
	"net/netip"
	"sync"
	"time"
)

// maxTrackedAddrs bounds the addresses the limiter remembers: past it,
// expired windows are dropped, then the oldest.
const maxTrackedAddrs = 1 << 16

// limiter counts failed logins per source address (IPv6 addresses per
// /64, which one host usually holds whole). max failures within window of
// the first one block the address until the window ends: further logins,
// right or wrong, are refused unchecked (no password is compared, so a
// blocked address costs no bcrypt time and learns nothing). A successful
// login does not reset the count, so one known account cannot be used to
// keep guessing another's password.
type limiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu     sync.Mutex
	byAddr map[netip.Addr]*failures
}

type failures struct {
	n     int
	since time.Time // the first failure of the window
}

func newLimiter(max int, window time.Duration, now func() time.Time) *limiter {
	return &limiter{max: max, window: window, now: now, byAddr: map[netip.Addr]*failures{}}
}

// key is the bucket of an address.
func key(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// check returns a *RetryError while a is blocked.
func (l *limiter) check(a netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.byAddr[key(a)]
	if f == nil || f.n < l.max {
		return nil
	}
	left := f.since.Add(l.window).Sub(l.now())
	if left <= 0 {
		delete(l.byAddr, key(a))
		return nil
	}
	return &RetryError{RetryAfter: left}
}

// fail counts a failure from a; it reports whether a just got blocked.
func (l *limiter) fail(a netip.Addr) (blocked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now, k := l.now(), key(a)
	f := l.byAddr[k]
	if f == nil || !now.Before(f.since.Add(l.window)) {
		if f == nil && len(l.byAddr) >= maxTrackedAddrs {
			l.pruneLocked(now)
		}
		f = &failures{since: now}
		l.byAddr[k] = f
	}
	f.n++
	return f.n == l.max
}

// pruneLocked drops expired windows, then, if none were, the oldest.
func (l *limiter) pruneLocked(now time.Time) {
	var oldest netip.Addr
	var oldestSince time.Time
	for a, f := range l.byAddr {
		if !now.Before(f.since.Add(l.window)) {
			delete(l.byAddr, a)
		} else if oldestSince.IsZero() || f.since.Before(oldestSince) {
			oldest, oldestSince = a, f.since
		}
	}
	if len(l.byAddr) >= maxTrackedAddrs {
		delete(l.byAddr, oldest)
	}
}

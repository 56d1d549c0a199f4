package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (linux/in.h):
// binding the attacker's source address defers choosing the port to
// connect, so that 20,000 sockets bound to 127.0.0.2 do not use up the
// ports connect() would give the real clients.
const ipBindAddressNoPort = 24

// refusedWithin is how soon a connection closed by regcache counts as
// refused at accept (over a cap) rather than timed out.
const refusedWithin = time.Second

// attacker holds idle connections to regcache from one loopback address
// and sends nothing on them, dialing again whenever regcache closes one.
type attacker struct {
	target  string
	from    net.IP
	slots   int
	perSec  int
	dialer  *net.Dialer
	open    atomic.Int64
	peak    atomic.Int64
	dials   atomic.Int64
	refused atomic.Int64 // closed by regcache within refusedWithin
	expired atomic.Int64 // closed by regcache later (its header timeout)
	dialErr atomic.Int64
	burst   chan struct{} // closed once every slot dialed once
}

// attackerStats are the attacker's figures.
type attackerStats struct {
	Slots        int   `json:"slots"`
	Dials        int64 `json:"dials"`
	PeakOpen     int64 `json:"peak_open"`
	Refused      int64 `json:"closed_at_accept"`
	Expired      int64 `json:"closed_after_header_timeout"`
	DialErrors   int64 `json:"dial_errors"`
	DialsPerSecL int   `json:"redial_rate_limit"`
}

func newAttacker(target, from string, slots, perSec int) *attacker {
	a := &attacker{target: target, from: net.ParseIP(from), slots: slots, perSec: perSec, burst: make(chan struct{})}
	a.dialer = &net.Dialer{
		Timeout:   10 * time.Second,
		LocalAddr: &net.TCPAddr{IP: a.from},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			}); err != nil {
				return err
			}
			return serr
		},
	}
	return a
}

// run holds the connections until ctx ends, then closes them all and
// returns once every slot is done.
func (a *attacker) run(ctx context.Context) {
	tokens := make(chan struct{})
	go func() { // the redial rate limit
		t := time.NewTicker(time.Second / time.Duration(a.perSec))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				select {
				case tokens <- struct{}{}:
				default:
				}
			}
		}
	}()
	var wg sync.WaitGroup
	var first sync.WaitGroup
	first.Add(a.slots)
	for range a.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.slot(ctx, tokens, first.Done)
		}()
	}
	go func() { first.Wait(); close(a.burst) }()
	wg.Wait()
}

// slot keeps one connection open, dialing again after regcache closes it.
func (a *attacker) slot(ctx context.Context, tokens <-chan struct{}, dialed func()) {
	for i := 0; ctx.Err() == nil; i++ {
		if i > 0 {
			select {
			case <-tokens:
			case <-ctx.Done():
				return
			}
		}
		a.dials.Add(1)
		c, err := a.dialer.DialContext(ctx, "tcp", a.target)
		if i == 0 {
			dialed()
		}
		if err != nil {
			if ctx.Err() == nil {
				a.dialErr.Add(1)
			}
			continue
		}
		a.hold(ctx, c)
	}
}

// hold keeps c open, idle, until regcache closes it or ctx ends.
func (a *attacker) hold(ctx context.Context, c net.Conn) {
	n := a.open.Add(1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	defer a.open.Add(-1)
	opened := time.Now()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_, err := c.Read(make([]byte, 1))
	c.Close()
	if ctx.Err() != nil || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		return
	}
	if time.Since(opened) < refusedWithin {
		a.refused.Add(1)
	} else {
		a.expired.Add(1)
	}
}

func (a *attacker) stats() attackerStats {
	return attackerStats{Slots: a.slots, Dials: a.dials.Load(), PeakOpen: a.peak.Load(), Refused: a.refused.Load(),
		Expired: a.expired.Load(), DialErrors: a.dialErr.Load(), DialsPerSecL: a.perSec}
}

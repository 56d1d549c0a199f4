package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
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

// attackerStats are the attacker's figures (of one process, or added up;
// PeakOpen is then the sum of the processes' peaks).
type attackerStats struct {
	Processes    int   `json:"processes"`
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

// The attacker runs in child processes of the load program (the same
// binary, with --attacker-child): one process may hold only as many
// connections as its open-files limit allows, and the hard limit may be
// below --idle-conns (20,000 here). Each child holds its share, says
// "burst" on its stdout once every slot dialed once, and at SIGTERM closes
// everything and writes its attackerStats as one JSON line.

// attackerReserve is the descriptors an attacker process keeps for
// itself (standard streams, the poller, the binary).
const attackerReserve = 64

// runAttackerChild is the body of an attacker child process.
func runAttackerChild(ctx context.Context, o options, stdout io.Writer) error {
	if _, err := raiseOpenFiles(uint64(o.idleConns + attackerReserve)); err != nil {
		return err
	}
	a := newAttacker(o.attackerTarget, o.attackerAddr, o.idleConns, o.attackerRate)
	done := make(chan struct{})
	go func() { a.run(ctx); close(done) }()
	select {
	case <-a.burst:
		fmt.Fprintln(stdout, "burst")
	case <-ctx.Done():
	}
	<-done
	return json.NewEncoder(stdout).Encode(a.stats())
}

// attackerGroup is the attacker's child processes.
type attackerGroup struct {
	procs []*exec.Cmd
	outs  []*bufio.Scanner
}

// startAttackers starts enough attacker processes to hold o.idleConns
// connections to target between them, and waits (at most burstWait)
// until each has dialed all of its share once.
func startAttackers(ctx context.Context, target string, o options, burstWait time.Duration) (*attackerGroup, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, err
	}
	per := max(int(lim.Max)-attackerReserve, 1)
	n := (o.idleConns + per - 1) / per
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	g := &attackerGroup{}
	for i := range n {
		share := o.idleConns/n + boolInt(i < o.idleConns%n)
		cmd := exec.Command(self, "--attacker-child", "--attacker-target", target, "--attacker-addr", o.attackerAddr,
			"--idle-conns", strconv.Itoa(share), "--attacker-rate", strconv.Itoa(max(o.attackerRate/n, 1)))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return g, err
		}
		if err := cmd.Start(); err != nil {
			return g, fmt.Errorf("start an attacker process: %w", err)
		}
		g.procs = append(g.procs, cmd)
		g.outs = append(g.outs, bufio.NewScanner(out))
	}
	bursts := make(chan bool, n)
	for _, sc := range g.outs {
		go func() { bursts <- sc.Scan() && sc.Text() == "burst" }()
	}
	timeout := time.After(burstWait)
	for range n {
		select {
		case ok := <-bursts:
			if !ok {
				return g, errors.New("an attacker process ended before its first burst")
			}
		case <-timeout:
			return g, nil // still dialing: the load starts anyway
		case <-ctx.Done():
			return g, ctx.Err()
		}
	}
	return g, nil
}

// stop ends every attacker process and adds up their figures.
func (g *attackerGroup) stop() (attackerStats, error) {
	var total attackerStats
	var errs []error
	for i, cmd := range g.procs {
		cmd.Process.Signal(syscall.SIGTERM)
		var s attackerStats
		for g.outs[i].Scan() {
			if line := g.outs[i].Bytes(); len(line) > 0 && line[0] == '{' {
				if err := json.Unmarshal(line, &s); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("attacker process: %w", err))
		}
		total.Slots += s.Slots
		total.Dials += s.Dials
		total.PeakOpen += s.PeakOpen
		total.Refused += s.Refused
		total.Expired += s.Expired
		total.DialErrors += s.DialErrors
		total.DialsPerSecL += s.DialsPerSecL
	}
	total.Processes = len(g.procs)
	return total, errors.Join(errs...)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

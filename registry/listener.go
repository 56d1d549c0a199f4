package registry

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener caps open connections per source address and in total.
// A connection over a cap is closed as soon as it is accepted, so that the
// kernel's accept queue never fills and the process keeps file descriptors
// for blob files and upstream connections: one client cannot exhaust them
// by holding idle connections open.
type limitListener struct {
	net.Listener
	perAddr, total int // 0: unlimited
	log            *slog.Logger

	mu     sync.Mutex
	open   int
	byAddr map[netip.Addr]int

	rejected   atomic.Int64 // since the last report
	reportedAt atomic.Int64 // unix nanoseconds of the last report
}

// rejectReportEvery bounds how often refused connections are logged: an
// attacker opening thousands must not flood the log.
const rejectReportEvery = 10 * time.Second

func newLimitListener(ln net.Listener, perAddr, total int, log *slog.Logger) *limitListener {
	return &limitListener{Listener: ln, perAddr: perAddr, total: total, log: log, byAddr: map[netip.Addr]int{}}
}

// Accept returns the next connection within the caps, closing those over.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := remoteAddr(c)
		if l.admit(addr) {
			return &limitedConn{Conn: c, l: l, addr: addr}, nil
		}
		c.Close()
		l.reject(addr)
	}
}

func (l *limitListener) admit(addr netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.total > 0 && l.open >= l.total) || (l.perAddr > 0 && l.byAddr[addr] >= l.perAddr) {
		return false
	}
	l.open++
	l.byAddr[addr]++
	return true
}

func (l *limitListener) release(addr netip.Addr) {
	l.mu.Lock()
	l.open--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
	l.mu.Unlock()
}

// reject counts a refused connection and logs a summary at most every
// rejectReportEvery.
func (l *limitListener) reject(addr netip.Addr) {
	n := l.rejected.Add(1)
	now := time.Now().UnixNano()
	last := l.reportedAt.Load()
	if now-last < int64(rejectReportEvery) || !l.reportedAt.CompareAndSwap(last, now) {
		return
	}
	n = l.rejected.Swap(0)
	l.mu.Lock()
	open, fromAddr := l.open, l.byAddr[addr]
	l.mu.Unlock()
	l.log.Warn("connections refused: over the connection limit", "refused", n, "lastFrom", addr.String(),
		"openFromIt", fromAddr, "maxPerAddress", l.perAddr, "open", open, "max", l.total)
}

// remoteAddr is the IP address a connection comes from (IPv4-mapped IPv6
// addresses as IPv4).
func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// limitedConn gives its slot back when closed (once).
type limitedConn struct {
	net.Conn
	l    *limitListener
	addr netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}

// ReadFrom keeps the sendfile path of the TCP connection: net/http's
// response writer hands a file to the connection's ReadFrom.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Owner returns the owner of digest among members by rendezvous (highest
// random weight) hashing: each member's weight is a hash of the member and
// the digest, and the heaviest wins. Every replica seeing the same members
// names the same owner, and a member leaving moves only the digests it
// owned. Empty when members is empty.
func Owner(digest string, members []string) string {
	var best string
	var bestW uint64
	for _, m := range members {
		w := weight(m, digest)
		if best == "" || w > bestW || (w == bestW && m < best) {
			best, bestW = m, w
		}
	}
	return best
}

func weight(member, digest string) uint64 {
	h := sha256.Sum256([]byte(member + "\n" + digest))
	return binary.BigEndian.Uint64(h[:8])
}

// membership is the set of replicas and which of them answer. Members come
// from a static list or from a DNS name resolved again every
// resolveInterval; each is pinged every probeInterval and is live from
// its first answer until a ping or a stream fails.
type membership struct {
	self     string
	static   []string
	dns      string // name:port, or empty
	resolver *net.Resolver
	log      *slog.Logger

	mu    sync.Mutex
	live  map[string]bool // every known member but self: answering?
	fails map[string]int  // pings that failed in a row, by member
}

// pingStrikes is how many pings in a row a live member may fail (time
// out, say, on a replica busy streaming) before it leaves the hash:
// replicas that drop a member at different moments disagree on owners,
// which costs upstream fetches. A refused connection, or a stream that
// broke, takes it out at once (set).
const pingStrikes = 3

// live returns self and the members that answer, sorted.
func (m *membership) liveMembers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []string{m.self}
	for a, up := range m.live {
		if up {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// pinged records the answer to a ping of addr: a member that answers is
// live; one that failed is out after pingStrikes failures in a row, or at
// once when nothing listens at its address.
func (m *membership) pinged(addr string, why error) {
	if why == nil || errors.Is(why, syscall.ECONNREFUSED) {
		m.set(addr, why == nil, why)
		return
	}
	m.mu.Lock()
	if m.fails == nil {
		m.fails = map[string]int{}
	}
	m.fails[addr]++
	out := m.fails[addr] >= pingStrikes
	m.mu.Unlock()
	if out {
		m.set(addr, false, why)
	}
}

// set records whether addr answers, logging changes.
func (m *membership) set(addr string, up bool, why error) {
	m.mu.Lock()
	was, known := m.live[addr]
	if known {
		m.live[addr] = up
	}
	if up {
		delete(m.fails, addr)
	}
	m.mu.Unlock()
	switch {
	case !known || was == up:
	case up:
		m.log.Info("cluster member up", "peer", addr)
	default:
		m.log.Warn("cluster member down", "peer", addr, "err", why)
	}
}

// update replaces the known members with addrs (self excluded); members
// staying keep their state, new ones are down until they answer.
func (m *membership) update(addrs []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		if a != m.self {
			next[a] = m.live[a]
		}
	}
	for a := range m.live {
		if _, ok := next[a]; !ok {
			m.log.Info("cluster member removed", "peer", a)
		}
	}
	m.live = next
}

func (m *membership) known() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.live))
	for a := range m.live {
		out = append(out, a)
	}
	return out
}

// resolve returns the members the DNS name lists now (A and AAAA
// records, each with the port), or the static list.
func (m *membership) resolve(ctx context.Context) ([]string, error) {
	if m.dns == "" {
		return m.static, nil
	}
	host, port, err := net.SplitHostPort(m.dns)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := m.resolver.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip, port))
	}
	return out, nil
}

package registry

import (
	"net/http"
	"net/netip"
	"strings"
)

// forwardedFor returns the X-Forwarded-For addresses of a request that
// came through a trusted proxy, reformatted (what does not parse as an
// address is dropped), or "".
func forwardedFor(r *http.Request, trusted []netip.Prefix) string {
	if !isTrusted(peerAddr(r), trusted) {
		return ""
	}
	var addrs []string
	for _, a := range forwardedAddrs(r) {
		addrs = append(addrs, a.String())
	}
	return strings.Join(addrs, ", ")
}

// clientAddr is the address a request comes from: the connection's peer,
// or, when the peer is a trusted proxy, the last address of
// X-Forwarded-For that is not itself a trusted proxy.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	addr := peerAddr(r)
	if !isTrusted(addr, trusted) {
		return addr
	}
	fwd := forwardedAddrs(r)
	for i := len(fwd) - 1; i >= 0; i-- {
		addr = fwd[i]
		if !isTrusted(addr, trusted) {
			break
		}
	}
	return addr
}

// peerAddr is the address of the connection's peer.
func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// forwardedAddrs parses every X-Forwarded-For header, in order. An entry
// that is not an address (or address:port) drops itself and every entry
// before it: the hop that wrote it cannot be believed about earlier ones.
func forwardedAddrs(r *http.Request) []netip.Addr {
	var out []netip.Addr
	for _, h := range r.Header.Values("X-Forwarded-For") {
		for _, f := range strings.Split(h, ",") {
			f = strings.TrimSpace(f)
			a, err := netip.ParseAddr(f)
			if err != nil {
				ap, perr := netip.ParseAddrPort(f)
				if perr != nil {
					out = out[:0]
					continue
				}
				a = ap.Addr()
			}
			out = append(out, a.Unmap())
		}
	}
	return out
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

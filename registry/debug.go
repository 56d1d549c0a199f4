package registry

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	runtimepprof "runtime/pprof"
)

// Debug endpoints: the Go runtime's profiles, served by net/http/pprof's
// handlers on regcache's own mux behind the admin token (the package also
// registers them on http.DefaultServeMux, which regcache never serves):
//
//	GET /admin/v1/debug/pprof/                      index of the profiles
//	GET /admin/v1/debug/pprof/goroutine?debug=1     goroutine count and stacks (also heap, allocs, block, mutex, threadcreate)
//	GET /admin/v1/debug/pprof/profile?seconds=30    CPU profile
//	GET /admin/v1/debug/pprof/trace?seconds=5       execution trace
//	GET /admin/v1/debug/pprof/symbol                symbol lookup
//
// The command line (pprof's cmdline) is not served: an argument may one
// day carry something an operator would not hand out with a profile.
func (s *server) debugRoutes(mux *http.ServeMux) {
	mux.Handle("GET /admin/v1/debug/pprof/{$}", s.admin(func(w http.ResponseWriter, r *http.Request) error {
		pprof.Index(w, r)
		return nil
	}))
	mux.Handle("GET /admin/v1/debug/pprof/{profile}", s.admin(serveProfile))
}

// serveProfile answers one profile by name.
func serveProfile(w http.ResponseWriter, r *http.Request) error {
	switch name := r.PathValue("profile"); name {
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	default:
		if runtimepprof.Lookup(name) == nil {
			return fmt.Errorf("%w: no profile %q: see GET /admin/v1/debug/pprof/ for the list", errNotFound, name)
		}
		pprof.Handler(name).ServeHTTP(w, r)
	}
	return nil
}

package registry

import (
	"net/http"
	"strings"
	"time"

	"github.com/regcache/regcache/accesslog"
	"github.com/regcache/regcache/cache"
)

// Observer is told about every request once it has been answered, for
// metrics. Request must be cheap and safe for concurrent use.
type Observer interface {
	Request(RequestInfo)
}

// RequestInfo describes one answered request. Its strings come from small
// fixed sets (route, method) or from the configuration (rule): they may be
// metric labels.
type RequestInfo struct {
	// Route names what was asked for: one of the Route* constants.
	Route string
	// Method is the HTTP method, or "other" for one regcache does not use.
	Method string
	Status int
	// Duration runs from the request's arrival to the end of its answer.
	Duration time.Duration
	// Cache is where a distribution API answer came from ("" for other
	// routes); Rule is the cache rule covering the repository, if any.
	Cache cache.Source
	Rule  string
	// Bytes is the size of the body sent.
	Bytes int64
}

// Route names of RequestInfo.
const (
	RouteBase      = "base"      // GET /v2/
	RouteCatalog   = "catalog"   // /v2/_catalog
	RouteManifest  = "manifest"  // /v2/<name>/manifests/<ref>
	RouteBlob      = "blob"      // /v2/<name>/blobs/<digest>
	RouteUpload    = "upload"    // /v2/<name>/blobs/uploads/...
	RouteTags      = "tags"      // /v2/<name>/tags/list
	RouteReferrers = "referrers" // /v2/<name>/referrers/<digest>
	RouteV2        = "v2"        // any other /v2/ path (refused)
	RouteAdmin     = "admin"     // /admin/v1/...
	RouteHealth    = "health"    // /healthz, /readyz
	RouteMetrics   = "metrics"   // /metrics
	RouteUI        = "ui"        // /ui/...
	RouteOther     = "other"
)

// routeOfKind names the route of a parsed distribution API path.
func routeOfKind(k kind) string {
	switch k {
	case kindBase:
		return RouteBase
	case kindCatalog:
		return RouteCatalog
	case kindManifest:
		return RouteManifest
	case kindBlob:
		return RouteBlob
	case kindUpload:
		return RouteUpload
	case kindTags:
		return RouteTags
	case kindReferrer:
		return RouteReferrers
	}
	return RouteV2
}

// routeOfPath names the route of a request the distribution API handler
// did not name (see setRoute).
func routeOfPath(p string) string {
	switch {
	case isRegistryPath(p):
		return RouteV2
	case strings.HasPrefix(p, "/admin/"):
		return RouteAdmin
	case p == "/healthz" || p == "/readyz":
		return RouteHealth
	case p == "/metrics":
		return RouteMetrics
	case p == "/ui" || strings.HasPrefix(p, "/ui/"):
		return RouteUI
	}
	return RouteOther
}

// isRegistryPath reports whether p belongs to the distribution API, whose
// answers carry X-Cache.
func isRegistryPath(p string) bool { return p == "/v2" || strings.HasPrefix(p, "/v2/") }

// methodLabel bounds the method of a request to those regcache serves.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// X-Cache values, shared and never modified: setting them allocates nothing.
var (
	xCacheHit   = []string{string(cache.SourceHit)}
	xCacheMiss  = []string{string(cache.SourceMiss)}
	xCacheStale = []string{string(cache.SourceStale)}
	xCacheLocal = []string{string(cache.SourceLocal)}
)

// xCacheValue is the X-Cache value of src (a switch: no map lookup).
func xCacheValue(src cache.Source) []string {
	switch src {
	case cache.SourceHit:
		return xCacheHit
	case cache.SourceMiss:
		return xCacheMiss
	case cache.SourceStale:
		return xCacheStale
	case cache.SourceLocal:
		return xCacheLocal
	}
	return nil
}

// source is where the answer came from: what the cache recorded, else
// LOCAL (local repositories record nothing).
func (w *statusWriter) source() cache.Source {
	if w.outcome.Source == "" {
		return cache.SourceLocal
	}
	return w.outcome.Source
}

// headerOnce adds X-Cache to a distribution API answer just before its
// headers are sent: every handler and error path has recorded its outcome
// by then.
func (w *statusWriter) headerOnce() {
	if w.registry {
		w.ResponseWriter.Header()["X-Cache"] = xCacheValue(w.source())
	}
}

// setRoute names the route of the request w answers, for metrics.
func setRoute(w http.ResponseWriter, route string) {
	for {
		switch x := w.(type) {
		case *statusWriter:
			x.route = route
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}

// logRequest writes the access log line of a request answered at end,
// after d, and tells the observer.
func (s *server) logRequest(r *http.Request, sw *statusWriter, d time.Duration, end time.Time) {
	route := sw.route
	if route == "" {
		route = routeOfPath(r.URL.Path)
	}
	var src cache.Source
	if sw.registry {
		src = sw.source()
	}
	// The observer first: a test that saw the log line sees the counts.
	if s.Observer != nil {
		s.Observer.Request(RequestInfo{Route: route, Method: methodLabel(r.Method), Status: sw.status, Duration: d,
			Cache: src, Rule: sw.outcome.Rule, Bytes: sw.bytes})
	}
	// Cache is set for distribution API requests only: where the answer
	// came from.
	accesslog.Log(r.Context(), s.Log, &accesslog.Entry{Time: end, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Status: sw.status, Bytes: sw.bytes, Duration: d, Remote: r.RemoteAddr, UserAgent: userAgent(r),
		Cache: string(src), Rule: sw.outcome.Rule, User: sw.user})
}

// userAgent is r.UserAgent() without canonicalising a canonical key.
func userAgent(r *http.Request) string {
	if v := r.Header["User-Agent"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

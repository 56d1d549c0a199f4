package registry

import (
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/regcache/regcache/cache"
)

// The manifest hit path: the request clients send most (a HEAD or GET of a
// manifest by tag for every pod start). It is answered without
// http.ServeContent and with header values built once per manifest, when
// the manifest is in memory and the request asks for nothing conditional
// or partial (ServeContent handles those).

// Header values that never change, shared and never modified: assigning
// them allocates nothing.
var (
	apiVersionValue   = []string{"registry/2.0"}
	cacheControlValue = []string{"max-age=31536000"}
)

// manifestHeaders are the header values of one stored manifest.
type manifestHeaders struct {
	contentType, digest, etag, length []string
}

// headerCache holds manifestHeaders by digest and media type (a manifest
// is served with the type it is stored with).
type headerCache struct {
	mu sync.RWMutex
	m  map[headerKey]*manifestHeaders
}

type headerKey struct{ digest, mediaType string }

// maxHeaderCache bounds the cache; when full it starts over.
const maxHeaderCache = 10_000

func (hc *headerCache) get(c cache.Content) *manifestHeaders {
	k := headerKey{c.Digest, c.MediaType}
	hc.mu.RLock()
	h := hc.m[k]
	hc.mu.RUnlock()
	if h != nil { // a digest names its bytes, hence their length
		return h
	}
	h = &manifestHeaders{contentType: []string{c.MediaType}, digest: []string{c.Digest},
		etag: []string{`"` + c.Digest + `"`}, length: []string{strconv.FormatInt(c.Size, 10)}}
	k = headerKey{strings.Clone(c.Digest), strings.Clone(c.MediaType)}
	hc.mu.Lock()
	if hc.m == nil || len(hc.m) >= maxHeaderCache {
		hc.m = map[headerKey]*manifestHeaders{}
	}
	hc.m[k] = h
	hc.mu.Unlock()
	return h
}

// plainRead reports whether r is a GET or HEAD that asks for the whole
// body unconditionally. A request has a few headers: one pass over them
// costs less than a lookup of each conditional one.
func plainRead(r *http.Request) bool {
	for k := range r.Header {
		switch k {
		case "Range", "If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range":
			return false
		}
	}
	return true
}

// serveHot writes a manifest held in memory with the headers
// http.ServeContent would send but Accept-Ranges; it reports false, having
// written nothing, when the request needs ServeContent. No client fetches
// a manifest in parts (a Range request is still answered, by
// ServeContent), and without that header every answer has at most eight:
// net/http copies the handler's headers once more when it writes them,
// and a ninth header makes both maps (and the copy) several times dearer.
func (s *server) serveHot(w http.ResponseWriter, r *http.Request, c cache.Content, immutable bool) bool {
	if c.Bytes == nil || !plainRead(r) {
		return false
	}
	mh := s.headers.get(c)
	h := w.Header()
	h["Content-Type"] = mh.contentType
	h["Docker-Content-Digest"] = mh.digest
	h["Etag"] = mh.etag
	if immutable {
		h["Cache-Control"] = cacheControlValue
	}
	h["Content-Length"] = mh.length
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(c.Bytes)
	}
	return true
}

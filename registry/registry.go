// Package registry holds every HTTP surface of regcache: the OCI
// distribution API (/v2/), the admin API (/admin/v1/), health endpoints,
// /metrics and the status page (/ui/). It parses, maps errors and streams;
// cache policy lives in package cache.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/requestid"
	"github.com/regcache/regcache/storage"
)

// Backend answers reads of repositories (cache.Puller).
type Backend interface {
	// Route maps a requested name (and containerd's ns parameter) to the
	// local repository that serves it.
	Route(ctx context.Context, name, ns string) (string, error)
	Manifest(ctx context.Context, repo, ref string) (cache.Content, error)
	Blob(ctx context.Context, repo, digest string) (cache.Content, error)
	StatBlob(ctx context.Context, repo, digest string) (int64, error)
	// Tags lists a page of repo's tags: those after after, at most n (all
	// with n < 0).
	Tags(ctx context.Context, repo, after string, n int) (cache.TagPage, error)
	// Negotiate picks what to serve for a manifest request's Accept header.
	Negotiate(ctx context.Context, repo, ref string, c cache.Content, accept []string) (cache.Content, error)
	// Referrers lists the manifests whose subject is digest (unfiltered).
	Referrers(ctx context.Context, repo, digest string) ([]storage.Descriptor, error)
}

// Rules manages cache rules (cache.Store).
type Rules interface {
	List() []cache.Rule
	Get(name string) (cache.Rule, error)
	Create(ctx context.Context, r cache.Rule) (cache.Rule, error)
	Update(ctx context.Context, name string, change cache.RuleChange) (cache.Rule, error)
	Delete(ctx context.Context, name string) error
	// Endpoint is the URL the upstream of a rule is reached at.
	Endpoint(r cache.Rule) string
}

// Config wires a registry handler.
type Config struct {
	Backend Backend
	Rules   Rules
	// AdminToken guards /admin/v1; it must not be empty.
	AdminToken string
	Log        *slog.Logger
	// CredentialSets serves /admin/v1/credential-sets (optional; see credsets.go).
	CredentialSets CredentialSets
	// Fsck serves /admin/v1/fsck (optional; see fsck.go).
	Fsck Fsck
	// Limits: the handler applies WriteIdleTimeout and ReadIdleTimeout
	// (zero: the defaults); NewServer and Listen apply the others.
	Limits Limits
	// Local accepts pushes and deletes into local repositories and lists
	// the catalog (optional; see push.go): without it, pushes answer
	// UNSUPPORTED.
	Local LocalRepos
	// Forward sends requests for upload sessions held by another replica
	// to it (optional; see forward.go).
	Forward UploadForwarder
	// GC serves POST /admin/v1/gc (optional).
	GC GarbageCollector
	// ClientAuth, when set, requires clients of /v2/ to log in and hold
	// tokens (see auth.go); nil serves the distribution API to anyone.
	ClientAuth ClientAuth
	// AuthRealm is the token endpoint's URL in challenges; empty:
	// <scheme>://<host the client used>/v2/token.
	AuthRealm string
	// TrustedProxies are the addresses whose X-Forwarded-For is believed
	// for login rate limits and audit records.
	TrustedProxies []netip.Prefix
	// Observer is told about every answered request (optional; metrics).
	Observer Observer
	// Metrics serves GET /metrics (optional; see observability.go).
	Metrics http.Handler
	// Status serves GET /admin/v1/status and the status page under /ui/
	// (optional; see observability.go and ui.go).
	Status StatusSource
	// Lifecycle serves warm, export, import, refresh and status, runs
	// eviction with garbage collection, and says when regcache is offline
	// (see lifecycle.go).
	Lifecycle Lifecycle
}

type server struct {
	Config
	headers    headerCache  // hot.go
	ociHandler http.Handler // the distribution API, as ociRoutes registered it
}

// New returns the HTTP handler of regcache.
func New(cfg Config) (http.Handler, error) {
	if cfg.AdminToken == "" {
		return nil, fmt.Errorf("registry: an admin token is required")
	}
	if cfg.Backend == nil || cfg.Rules == nil || cfg.Log == nil {
		return nil, fmt.Errorf("registry: backend, rules and logger are required")
	}
	s := &server{Config: cfg}
	s.Limits = s.Limits.WithDefaults(0)
	mux := http.NewServeMux()
	s.ociRoutes(mux)
	mux.HandleFunc("GET /healthz", s.health)
	mux.HandleFunc("GET /readyz", s.health)
	s.adminRoutes(mux)
	s.credentialSetRoutes(mux)
	s.gcRoutes(mux)
	s.fsckRoutes(mux)
	s.debugRoutes(mux)
	s.observabilityRoutes(mux)
	s.lifecycleRoutes(mux)
	return s.accessLog(s.dispatch(mux)), nil
}

// dispatch sends distribution API requests straight to their handler, as
// the mux would, and everything else to the mux: the mux's pattern
// matching costs more than the rest of a manifest hit. Paths the mux would
// redirect to their clean form, and /v2/token, go to the mux.
func (s *server) dispatch(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; (p == "/v2" || strings.HasPrefix(p, "/v2/")) && p != "/v2/token" && isCleanPath(p) {
			s.ociHandler.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// isCleanPath reports whether p is its own path.Clean form (a trailing
// slash aside), which the mux serves without redirecting.
func isCleanPath(p string) bool {
	return !strings.Contains(p, "//") && !strings.Contains(p, "/./") && !strings.Contains(p, "/../") &&
		!strings.HasSuffix(p, "/.") && !strings.HasSuffix(p, "/..")
}

// oci serves the distribution API.
func (s *server) oci(w http.ResponseWriter, r *http.Request) {
	w.Header()["Docker-Distribution-Api-Version"] = apiVersionValue
	if err := s.serveOCI(w, r); err != nil {
		writeOCIError(w, r, s.Log, err)
	}
}

func (s *server) serveOCI(w http.ResponseWriter, r *http.Request) error {
	p, err := parsePath(r.URL.Path)
	setRoute(w, routeOfKind(p.kind))
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if err != nil {
		if read && p.kind == kindManifest && errors.Is(err, errTagInvalid) {
			// No manifest can have an invalid tag: for a read that is
			// "unknown", as distribution answers.
			return fmt.Errorf("%w: %v", cache.ErrManifestUnknown, err)
		}
		return err
	}
	switch {
	case p.kind == kindBase:
		return s.base(w, r)
	case p.kind == kindCatalog && read:
		return s.catalog(w, r)
	case p.kind == kindCatalog:
		return fmt.Errorf("%w: %s %s", errUnsupported, r.Method, r.URL.Path)
	}
	requested := p.name
	var ns string
	if r.URL.RawQuery != "" {
		ns = r.URL.Query().Get("ns")
	}
	if p.name, err = s.Backend.Route(r.Context(), p.name, ns); err != nil {
		return err
	}
	switch {
	case p.kind == kindUpload || !read:
		return s.write(w, r, p, requested)
	case p.kind == kindManifest:
		return s.manifest(w, r, p)
	case p.kind == kindBlob:
		return s.blob(w, r, p)
	case p.kind == kindTags:
		return s.tags(w, r, p, requested)
	case p.kind == kindReferrer:
		return s.referrers(w, r, p)
	}
	return fmt.Errorf("%w: %s %s", errUnsupported, r.Method, r.URL.Path)
}

// base answers the API version check.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#determining-support
func (s *server) base(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("{}"))
	return nil
}

// manifest serves GET and HEAD of a manifest by tag or digest, byte for byte.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func (s *server) manifest(w http.ResponseWriter, r *http.Request, p ociPath) error {
	c, err := s.Backend.Manifest(r.Context(), p.name, p.ref)
	if err != nil {
		return err
	}
	if c, err = s.Backend.Negotiate(r.Context(), p.name, p.ref, c, r.Header.Values("Accept")); err != nil {
		return err
	}
	defer c.Body.Close()
	// A digest names bytes that never change; a tag may move, so its
	// answer must not be kept by HTTP caches in between.
	immutable := strings.HasPrefix(p.ref, "sha256:")
	if !s.serveHot(w, r, c, immutable) {
		serve(w, r, c, c.MediaType, immutable)
	}
	return nil
}

// blob serves GET and HEAD of a blob, with Range.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs
//
// A HEAD (with or without Range) asks only for the size: it never starts a
// download. A Range request is answered from verified bytes only: on a
// blob still filling it waits for the digest to verify. A GET of a blob
// stored in an object store with redirects on answers 307 to a
// short-lived presigned URL of the object.
func (s *server) blob(w http.ResponseWriter, r *http.Request, p ociPath) error {
	if r.Method == http.MethodHead {
		size, err := s.Backend.StatBlob(r.Context(), p.name, p.ref)
		if err != nil {
			return err
		}
		serve(w, r, cache.Content{Body: &sizeOnly{size: size}, Size: size, Digest: p.ref}, "application/octet-stream", true)
		return nil
	}
	c, err := s.Backend.Blob(r.Context(), p.name, p.ref)
	if err != nil {
		return err
	}
	defer c.Body.Close()
	if rd, ok := c.Body.(redirector); ok {
		u, ok, err := rd.Redirect(r.Context())
		if err != nil {
			return err
		}
		if ok {
			// The URL's query is a signature: it goes to the client only,
			// never to the log.
			w.Header().Set("Docker-Content-Digest", c.Digest)
			w.Header().Set("Location", u)
			w.WriteHeader(http.StatusTemporaryRedirect)
			return nil
		}
	}
	if r.Header.Get("Range") != "" {
		if err := c.Verified(r.Context()); err != nil {
			return err
		}
	}
	serve(w, r, c, "application/octet-stream", true)
	return nil
}

// redirector is a stored blob's body that can name a URL the client
// fetches the bytes from itself (a presigned URL of an object store);
// ok is false when redirects are off.
type redirector interface {
	Redirect(ctx context.Context) (url string, ok bool, err error)
}

// sizeOnly is the body of a HEAD answer: http.ServeContent learns the size
// by seeking (for Content-Length, Range and 416) and never reads it.
type sizeOnly struct {
	size int64
	off  int64
}

func (b *sizeOnly) Read([]byte) (int, error) { return 0, errors.New("HEAD answers have no body") }
func (b *sizeOnly) Close() error             { return nil }

func (b *sizeOnly) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += b.off
	case io.SeekEnd:
		offset += b.size
	}
	b.off = offset
	return offset, nil
}

// serve writes content with http.ServeContent, which handles HEAD, Range
// (206, Content-Range) and If-None-Match; on a stored blob the body is the
// *os.File, so the kernel's sendfile path is used on plain TCP. Content
// asked for by digest (immutable) may be kept by HTTP caches for a year;
// a manifest asked for by tag carries no Cache-Control (its ETag lets a
// cache revalidate it).
func serve(w http.ResponseWriter, r *http.Request, c cache.Content, contentType string, immutable bool) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Docker-Content-Digest", c.Digest)
	h.Set("ETag", `"`+c.Digest+`"`)
	if immutable {
		h["Cache-Control"] = cacheControlValue
	}
	http.ServeContent(w, r, "", time.Time{}, c.Body)
}

// tags serves the tag list with n/last pagination.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-tags
func (s *server) tags(w http.ResponseWriter, r *http.Request, p ociPath, requested string) error {
	q := r.URL.Query()
	n := -1
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			return fmt.Errorf("%w: n=%q must be a non-negative integer", errPageInvalid, v)
		}
	}
	pg, err := s.Backend.Tags(r.Context(), p.name, q.Get("last"), n)
	if err != nil {
		return err
	}
	tags := pg.Tags
	if pg.More && n > 0 {
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {tags[n-1]}}
		if ns := q.Get("ns"); ns != "" {
			next.Set("ns", ns)
		}
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, requested, next.Encode()))
	}
	if tags == nil {
		tags = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodHead {
		return nil
	}
	return json.NewEncoder(w).Encode(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{requested, tags})
}

// statusWriter records the status and byte count for the access log, and
// before every write makes sure the connection's write deadline is at
// least the write idle timeout away: a response is cut only when the
// client stops reading it for that long (and at most idleSlack of it
// more), never because it is long.
type statusWriter struct {
	http.ResponseWriter
	status   int
	bytes    int64
	conn     deadlines // nil when the writer has no deadlines
	idle     time.Duration
	deadline time.Time // the write deadline last set

	// registry is set for distribution API requests, whose answers say
	// where they came from (X-Cache); the cache records it in outcome
	// through the request's context. route names the request for metrics.
	registry bool
	outcome  cache.Outcome
	route    string
	// user is the client the request was authenticated as ("" when
	// anonymous or without client authentication), for the access log.
	user string
}

// touch pushes the write deadline back, to the idle timeout and its
// slack from now, when it is less than the idle timeout away. Writes in
// quick succession (a manifest's body, then net/http's flush of it) thus
// set it once: setting a deadline costs a lock and a timer change.
func (w *statusWriter) touch() {
	if w.conn != nil {
		w.touchAt(time.Now())
	}
}

// touchAt is touch with the time read by the caller.
func (w *statusWriter) touchAt(now time.Time) {
	if w.conn == nil {
		return
	}
	if w.deadline.Sub(now) >= w.idle {
		return
	}
	w.deadline = now.Add(w.idle + w.idle/idleSlack)
	w.conn.SetWriteDeadline(w.deadline)
}

// idleSlack: a deadline is set to the idle timeout and 1/idleSlack of it
// more, so that it need not move again for that long.
const idleSlack = 16

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.headerOnce()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.headerOnce()
	}
	w.touch()
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// touchWriter is the underlying writer with the deadline pushed back
// before each write; its ReadFrom keeps net/http's sendfile path.
type touchWriter struct{ w *statusWriter }

func (t touchWriter) Write(b []byte) (int, error) {
	t.w.touch()
	return t.w.ResponseWriter.Write(b)
}

func (t touchWriter) ReadFrom(r io.Reader) (int64, error) {
	t.w.touch()
	if rf, ok := t.w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{t}, r)
}

// sectionSender is a body that can send its next n bytes itself, as
// sections of a file, so that they take the sendfile path too (a blob
// streamed while it is being filled).
type sectionSender interface {
	SendTo(w io.Writer, n int64) (int64, error)
}

// ReadFrom keeps the sendfile path of the underlying writer: http.ServeContent
// copies a body as an io.LimitedReader, which net/http sends with sendfile
// when it wraps an *os.File, and which a sectionSender sends in sections.
// It sends sendSection bytes at a time, pushing the write deadline back
// between them.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.headerOnce()
	}
	tw := touchWriter{w}
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		n, err := io.Copy(struct{ io.Writer }{tw}, r)
		w.bytes += n
		return n, err
	}
	var total int64
	for lr.N > 0 {
		k := min(lr.N, sendSection)
		var n int64
		var err error
		if s, ok := lr.R.(sectionSender); ok {
			n, err = s.SendTo(tw, k)
		} else {
			n, err = tw.ReadFrom(&io.LimitedReader{R: lr.R, N: k})
		}
		lr.N -= n
		total += n
		w.bytes += n
		if err != nil || n < k {
			return total, err
		}
	}
	return total, nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog wraps every request: it gives it an ID (X-Request-Id, the
// client's when it sent a usable one) carried by its context into every
// log line it causes, applies the progress deadlines, and once the answer
// is sent logs it and tells the observer.
func (s *server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		x := &exchange{sw: statusWriter{ResponseWriter: w, idle: s.Limits.WriteIdleTimeout, registry: isRegistryPath(r.URL.Path)}}
		sw := &x.sw
		var sent string
		if v := r.Header[requestid.Header]; len(v) > 0 { // Header.Get, without canonicalising a canonical key
			sent = v[0]
		}
		x.idValue[0] = x.ctx.Init(r.Context(), sent)
		w.Header()[requestid.Header] = x.idValue[:]
		var ctx context.Context = &x.ctx
		if sw.registry {
			x.outcome.Init(ctx, &sw.outcome)
			ctx = &x.outcome
		}
		r = r.WithContext(ctx)
		if conn, ok := w.(deadlines); ok {
			sw.conn = conn
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = &progressBody{ReadCloser: r.Body, conn: conn, idle: s.Limits.ReadIdleTimeout}
			}
		}
		if len(r.RequestURI) > s.Limits.MaxURLBytes {
			writeOCIError(sw, r, s.Log, fmt.Errorf("%w: the request URL is %d bytes; regcache accepts at most %d (limits.maxURLBytes)", errURLTooLong, len(r.RequestURI), s.Limits.MaxURLBytes))
		} else {
			next.ServeHTTP(sw, r)
		}
		// net/http flushes what the handler left buffered after it returns.
		end := time.Now()
		sw.touchAt(end)
		if sw.status == 0 {
			// Nothing written: net/http sends 200 with the headers as they are.
			sw.status = http.StatusOK
			sw.headerOnce()
		}
		s.logRequest(r, sw, end.Sub(start), end)
	})
}

// exchange is what accessLog keeps of one request, in one allocation:
// the response writer, the contexts carrying the request ID and the
// outcome, and the X-Request-Id header's value.
type exchange struct {
	sw      statusWriter
	ctx     requestid.Context
	outcome cache.OutcomeContext
	idValue [1]string
}

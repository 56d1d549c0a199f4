package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regcache/regcache/storage"
)

// DefaultMaxFills is how many blobs are fetched from upstreams at once.
const DefaultMaxFills = 64

// DefaultTagTTL is how long a cached tag is served without revalidation.
const DefaultTagTTL = 5 * time.Minute

// MaxManifestSize caps a manifest fetched from an upstream (the
// distribution spec asks registries to accept at least 4 MiB).
const MaxManifestSize = 4 << 20

// BlobStore is the content-addressed store the puller fills.
type BlobStore interface {
	Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64, error)
	Stat(ctx context.Context, digest string) (int64, error)
	Create(ctx context.Context, digest string, size int64) (*storage.Writer, error)
}

// MetaStore holds per-repository links and tag pointers.
type MetaStore interface {
	Link(ctx context.Context, repo string, l storage.Link, tag *storage.Tag) error
	Linked(ctx context.Context, repo, digest string) (storage.Link, error)
	Tag(ctx context.Context, repo, tag string) (storage.Tag, error)
	Tags(ctx context.Context, repo string) ([]string, error)
	TagPage(ctx context.Context, repo, after string, limit int) ([]string, error)
	HasRepo(ctx context.Context, repo string) (bool, error)
}

// Content is a manifest or blob open for serving. The caller closes Body.
// Body is the *os.File of a stored blob (served with sendfile), or a reader
// following a fill in progress.
type Content struct {
	Body      io.ReadSeekCloser
	Size      int64
	Digest    string
	MediaType string
	// Fetched: the bytes came from the upstream for this request (or a
	// fill it joined), not from the store.
	Fetched bool
	// Bytes is the whole body when it is held in memory (a stored
	// manifest, verified): a handler may write it instead of reading Body.
	Bytes []byte
}

// Verified waits until every byte of c verified against its digest: at
// once for stored content, at the end of the fill for a blob being filled
// (it returns the fill's error if the bytes turn out wrong). A whole-body
// read needs no wait, as the last byte is held back until the digest
// verified; a partial read (a Range request) must wait, or it could hand
// out bytes that fail verification.
func (c Content) Verified(ctx context.Context) error {
	if r, ok := c.Body.(*fillReader); ok {
		return r.f.verifiedBytes(ctx)
	}
	return nil
}

// Stored waits until c is stored and linked to its repository: at once
// for stored content, at the end of the fill (its commit and links) for a
// blob being filled, whose error it returns. A pre-loader waits for it
// before it says a blob is cached.
func (c Content) Stored(ctx context.Context) error {
	if r, ok := c.Body.(*fillReader); ok {
		return r.f.result(ctx)
	}
	return nil
}

// Options tune the puller; zero values take the defaults.
type Options struct {
	// ManifestTimeout bounds one upstream manifest or HEAD request (default 30s).
	ManifestTimeout time.Duration
	// TagTTL is how long a cached tag is served without asking the upstream
	// (default 5m; a rule's tagTTL overrides it; negative: always ask).
	TagTTL time.Duration
	// RevalidateTimeout bounds the HEAD that revalidates a cached tag; on
	// expiry the cached pointer is served (default 5s).
	RevalidateTimeout time.Duration
	// BlobTimeout bounds one blob fill, which outlives the client that
	// started it (default 1h).
	BlobTimeout time.Duration
	// IdleTimeout aborts a blob fill that received no byte for this long
	// (default 2m).
	IdleTimeout time.Duration
	// MaxFills caps the blobs fetched from upstreams at once (default 64;
	// negative: no cap). More fills wait for a slot, and their clients with
	// them, instead of opening more upstream connections.
	MaxFills int
	// Transport is the base transport for upstream requests.
	Transport http.RoundTripper
	// Now returns the current time (tests).
	Now func() time.Time
	// DefaultRegistry is the login server that repository names matching no
	// rule belong to (Docker's registry-mirrors send Docker Hub paths
	// without a registry: /v2/library/nginx/...). Empty: none.
	DefaultRegistry string
	// Observer is told about hits, misses, joined fills and upstream
	// requests (metrics); nil: nobody.
	Observer Observer
	// Upstreams is the state shared by every upstream request: offline
	// mode, waits after 429s, announced rate limits (default: online,
	// nothing recorded yet).
	Upstreams *Upstreams
	// Guard protects the digests a fill or a relink is about to link from
	// a collection running meanwhile (local.Repos; nil: nothing deletes
	// blobs).
	Guard Guard
	// NotFoundTTL is how long an upstream's "no such manifest" is
	// remembered, so that a client retrying a typo does not reach the
	// upstream each time (default 1m; negative: not remembered).
	NotFoundTTL time.Duration
	// Peers is the cluster of replicas sharing the blob store: a cold blob
	// a client asks for is streamed from the replica that owns its digest,
	// which alone fetches it from the upstream (nil: no cluster, every
	// fill fetches from the upstream).
	Peers Peers
}

// Guard is the protocol with whatever deletes blobs (local.Repos): a
// digest protected from before it is checked until its link is committed
// is not deleted meanwhile.
type Guard interface {
	Protect(digests ...string) (release func())
}

// Puller answers reads of local repositories: from the store when it holds
// the content, else from the upstream a rule names, storing what it fetches.
type Puller struct {
	rules     *Store
	endpoints *Endpoints
	blobs     BlobStore
	meta      MetaStore
	clients   *clients
	log       *slog.Logger
	obs       Observer
	opts      Options
	fillsMu   sync.Mutex
	fills     map[string]*fill // by digest, while running
	access    *accessTimes
	// fullEvents counts storage-full refusals (see storageFull).
	fullEvents atomic.Int64
	// fillSlots holds a token per running fill (nil: no cap); fillsQueued
	// counts the fills waiting for one.
	fillSlots   chan struct{}
	fillsQueued atomic.Int64

	// Fills outlive their clients but not the puller: life ends them at
	// Close, which waits for them.
	life     context.Context
	stop     context.CancelCauseFunc
	fillsRun sync.WaitGroup

	fresh freshness     // freshness.go
	hot   *hotManifests // hot.go
	lists tagLists      // taglist.go
}

// NewPuller wires a puller.
func NewPuller(rules *Store, endpoints *Endpoints, creds Credentials, blobs BlobStore, meta MetaStore, log *slog.Logger, opts Options) *Puller {
	if opts.ManifestTimeout == 0 {
		opts.ManifestTimeout = 30 * time.Second
	}
	if opts.TagTTL == 0 {
		opts.TagTTL = DefaultTagTTL
	}
	if opts.RevalidateTimeout == 0 {
		opts.RevalidateTimeout = 5 * time.Second
	}
	if opts.BlobTimeout == 0 {
		opts.BlobTimeout = time.Hour
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.Transport == nil {
		opts.Transport = DefaultTransport()
	}
	if opts.MaxFills == 0 {
		opts.MaxFills = DefaultMaxFills
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.Upstreams == nil {
		opts.Upstreams = NewUpstreams(UpstreamsOptions{Now: opts.Now})
	}
	if opts.NotFoundTTL == 0 {
		opts.NotFoundTTL = DefaultNotFoundTTL
	}
	p := &Puller{
		rules: rules, endpoints: endpoints, blobs: blobs, meta: meta, log: log, obs: opts.Observer, opts: opts,
		clients: &clients{base: opts.Upstreams.Transport(opts.Transport), creds: creds, ttl: 10 * time.Minute, ups: opts.Upstreams,
			m: map[string]cachedClient{}, obs: opts.Observer, log: log},
		fills:  map[string]*fill{},
		access: newAccessTimes(),
		fresh:  freshness{notFound: map[string]time.Time{}},
		hot:    newHotManifests(),
	}
	if opts.MaxFills > 0 {
		p.fillSlots = make(chan struct{}, opts.MaxFills)
	}
	p.life, p.stop = context.WithCancelCause(context.Background())
	return p
}

// Close cancels the fills still running, waits for them to end and closes
// idle upstream connections.
func (p *Puller) Close() {
	p.stop(errors.New("regcache is stopping"))
	p.fillsRun.Wait()
	if t, ok := p.opts.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// DefaultTransport is the base transport for upstream requests: proxy from
// the environment, bounded dial, TLS and header waits, no overall deadline
// (blob streams can be long).
func DefaultTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
	}
}

func (p *Puller) match(repo string) (upstreamRepo, bool) {
	m, ok := p.rules.Match(repo)
	if !ok {
		return upstreamRepo{}, false
	}
	up := upstreamRepo{endpoint: p.endpoints.Resolve(m.Host), path: m.Upstream, credSet: m.Rule.CredentialSet, host: m.Host, tagTTL: p.opts.TagTTL,
		rule: m.Rule.Name, pinned: m.Rule.TagTTL == TagTTLNever, forgetDeleted: m.Rule.DeletedTags == DeletedTagsForget}
	if m.Rule.TagTTL != "" {
		if d, err := time.ParseDuration(m.Rule.TagTTL); err == nil {
			up.tagTTL = d
		}
	}
	if m.Rule.MaxStale != "" {
		if d, err := time.ParseDuration(m.Rule.MaxStale); err == nil {
			up.maxStale = d
		}
	}
	return up, true
}

// Route maps a requested repository name (and the ns query parameter that
// containerd adds for mirrors, e.g. ns=docker.io) to the local repository
// that serves it:
//   - with ns: the rule whose source covers <ns>/<name>, whatever its target
//     repository is called; none is ErrNameUnknown, at once, so the runtime
//     falls back to the upstream by itself;
//   - else a rule whose target covers name;
//   - else, when name starts with a registry host (a path-prefixed mirror,
//     /v2/docker.io/library/alpine), the rule whose source covers it;
//   - else, with a default registry, the rule whose source covers
//     <default>/<name> (Docker's registry-mirrors);
//   - else name itself: a local repository.
//
// ns is a registry host and nothing else (containerd sends ns=docker.io);
// a path, a port-less IPv6 literal without brackets or anything else is
// refused, and so is a routed name outside the repository grammar. A name
// in a local namespace (and given without ns) is always itself.
func (p *Puller) Route(ctx context.Context, name, ns string) (string, error) {
	if !ValidRepository(name) {
		return "", fmt.Errorf("%w: %q", ErrNameInvalid, name)
	}
	rs := p.rules.Snapshot()
	if ns == "" && p.rules.IsLocal(name) {
		return name, nil
	}
	if ns != "" {
		if !ValidHost(ns) {
			return "", fmt.Errorf("%w: ns=%q must be a registry host such as docker.io or registry.example.com:5000", ErrNameInvalid, ns)
		}
		if _, local, ok := rs.MatchSource(ns + "/" + name); ok {
			return local, nil
		}
		return "", fmt.Errorf("%w: %s/%s (no cache rule covers it)", ErrNameUnknown, ns, name)
	}
	if _, ok := rs.Match(name); ok {
		return name, nil
	}
	if first, _, ok := strings.Cut(name, "/"); ok && isHost(first) {
		if _, local, ok := rs.MatchSource(name); ok {
			return local, nil
		}
	}
	if p.opts.DefaultRegistry != "" {
		if _, local, ok := rs.MatchSource(p.opts.DefaultRegistry + "/" + name); ok {
			return local, nil
		}
	}
	return name, nil
}

// IsDigest reports whether a manifest reference is a digest rather than a tag.
func IsDigest(ref string) bool { return strings.Contains(ref, ":") }

// Manifest returns the manifest ref (a tag or a digest) of repo, and
// records where it came from (see Outcome).
func (p *Puller) Manifest(ctx context.Context, repo, ref string) (Content, error) {
	up, ruled := p.match(repo)
	if !ruled {
		return p.localManifest(ctx, repo, ref)
	}
	c, src, err := p.cachedManifest(ctx, repo, up, ref)
	p.answered(ctx, up.rule, src, true)
	return c, err
}

// cachedManifest returns the manifest ref of repo, covered by a rule, and
// where it came from: a failure is a miss.
func (p *Puller) cachedManifest(ctx context.Context, repo string, up upstreamRepo, ref string) (Content, Source, error) {
	if IsDigest(ref) {
		if c, err := p.openLinked(ctx, repo, ref); err == nil {
			p.access.touch(ref)
			return c, SourceHit, nil
		}
		c, err := p.fetchManifest(ctx, repo, up, ref, "")
		return c, SourceMiss, err
	}
	tag, err := p.meta.Tag(ctx, repo, ref)
	var local Content
	if err == nil {
		local, err = p.openLinked(ctx, repo, tag.Digest)
	}
	if err != nil {
		// Never fetched, or evicted since (or its bytes vanished): fetch.
		c, err := p.fetchManifest(ctx, repo, up, ref, ref)
		return c, SourceMiss, err
	}
	p.access.touch(local.Digest)
	return p.freshTag(ctx, repo, ref, up, tag, local)
}

// storageFull logs, and counts, err when it is the store's filesystem
// having no room: an operator must act (raise the volume, lower the cache
// size), which an upstream error would hide.
func (p *Puller) storageFull(ctx context.Context, err error) {
	if errors.Is(err, storage.ErrStorageFull) {
		n := p.fullEvents.Add(1)
		p.log.ErrorContext(ctx, "cache storage full", "err", err, "events", n)
	}
}

// StorageFullEvents counts the fills and stores refused for lack of room
// since the puller started.
func (p *Puller) StorageFullEvents() int64 { return p.fullEvents.Load() }

// localManifest serves a manifest from the store only.
func (p *Puller) localManifest(ctx context.Context, repo, ref string) (Content, error) {
	digest := ref
	if !IsDigest(ref) {
		t, err := p.meta.Tag(ctx, repo, ref)
		if err != nil {
			return Content{}, p.unknown(ctx, repo, fmt.Errorf("%w: %s:%s", ErrManifestUnknown, repo, ref))
		}
		digest = t.Digest
	}
	c, err := p.openLinked(ctx, repo, digest)
	if err != nil {
		return Content{}, p.unknown(ctx, repo, fmt.Errorf("%w: %s@%s", ErrManifestUnknown, repo, digest))
	}
	return c, nil
}

// unknown returns ErrNameUnknown when nothing at all is stored for repo,
// else err.
func (p *Puller) unknown(ctx context.Context, repo string, err error) error {
	if _, ruled := p.match(repo); ruled {
		return err
	}
	if ok, herr := p.meta.HasRepo(ctx, repo); herr == nil && !ok {
		return fmt.Errorf("%w: %s (no cache rule covers it and nothing is stored)", ErrNameUnknown, repo)
	}
	return err
}

// fetchManifest GETs ref from the upstream, verifies it, stores it byte for
// byte and links it to repo (pointing tag at it when tag is not ""). One
// GET serves every concurrent miss of the same manifest, and it survives
// the client that started it (bounded by ManifestTimeout). An upstream's
// "no such manifest" is remembered for NotFoundTTL.
func (p *Puller) fetchManifest(ctx context.Context, repo string, up upstreamRepo, ref, tag string) (Content, error) {
	if left, ok := p.knownMissing(up, ref); ok {
		return Content{}, fmt.Errorf("%w: %s:%s (upstream %s/%s has no such manifest; asked %v ago)", ErrManifestUnknown, repo, ref, up.host, up.path, p.opts.NotFoundTTL-left)
	}
	v, err := joinFlight(ctx, &p.fresh.fetches, repo+"\x00"+ref+"\x00"+tag, func() (any, error) {
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.ManifestTimeout)
		defer cancel()
		return p.storeManifest(mctx, repo, up, ref, tag)
	})
	if err != nil {
		return Content{}, err
	}
	return p.openLinked(ctx, repo, v.(string))
}

// storeManifest is the one GET of fetchManifest; it returns the digest
// linked.
func (p *Puller) storeManifest(ctx context.Context, repo string, up upstreamRepo, ref, tag string) (string, error) {
	resp, err := p.clients.do(ctx, up, http.MethodGet, up.url("manifests", ref), http.Header{"Accept": {manifestAccept}})
	if err != nil {
		switch {
		case errors.Is(err, errNotFound):
			p.rememberNotFound(up, ref)
			return "", fmt.Errorf("%w: %s:%s (upstream %s/%s has no such manifest)", ErrManifestUnknown, repo, ref, up.host, up.path)
		case errors.Is(err, ErrOffline):
			return "", fmt.Errorf("manifest %s:%s is not cached: %w", repo, ref, err)
		}
		return "", fmt.Errorf("fetch manifest %s:%s from %s/%s: %w", repo, ref, up.host, up.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	p.obs.Fetched(up.host, int64(len(body)))
	if err != nil {
		return "", fmt.Errorf("%w: read manifest %s:%s: %v", ErrUnavailable, repo, ref, err)
	}
	if len(body) > MaxManifestSize {
		return "", fmt.Errorf("%w: manifest %s:%s is larger than %d bytes", ErrUnavailable, repo, ref, MaxManifestSize)
	}
	sum := sha256.Sum256(body)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if IsDigest(ref) && digest != ref {
		return "", fmt.Errorf("%w: upstream sent a manifest hashing to %s for %s", ErrUnavailable, digest, ref)
	}
	if hd := resp.Header.Get("Docker-Content-Digest"); hd != "" && hd != digest {
		return "", fmt.Errorf("%w: upstream sent a manifest hashing to %s, its header says %s", ErrUnavailable, digest, hd)
	}
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mediaType == "" {
		mediaType = sniffMediaType(body)
	}
	// Protected from the check until the link: a collection running
	// meanwhile does not delete the bytes this links.
	defer p.protect(digest)()
	if _, err := p.blobs.Stat(ctx, digest); err != nil {
		if err := p.putBytes(ctx, digest, body); err != nil {
			p.storageFull(ctx, err)
			return "", fmt.Errorf("store manifest %s:%s: %w", repo, ref, err)
		}
	}
	now := p.opts.Now()
	var t *storage.Tag
	if tag != "" {
		t = &storage.Tag{Name: tag, Digest: digest, FetchedAt: now}
	}
	if err := p.meta.Link(ctx, repo, storage.Link{Digest: digest, MediaType: mediaType, Size: int64(len(body)), LinkedAt: now}, t); err != nil {
		return "", err
	}
	p.log.InfoContext(ctx, "cached manifest", "repo", repo, "ref", ref, "digest", digest, "mediaType", mediaType, "upstream", up.host+"/"+up.path)
	return digest, nil
}

func (p *Puller) putBytes(ctx context.Context, digest string, b []byte) error {
	w, err := p.blobs.Create(ctx, digest, int64(len(b)))
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		w.Cancel()
		return err
	}
	return w.Commit()
}

// sniffMediaType gives the media type of a manifest whose upstream sent no
// Content-Type: its own top-level mediaType when that is a media type, else
// the type its shape says (an index lists "manifests"), else an OCI image
// manifest. Only the top level counts: the config and the descriptors
// inside carry mediaType fields of their own, and the value is served back
// as Content-Type.
func sniffMediaType(b []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(b, &top) != nil {
		return ociManifestType
	}
	var own string
	if raw, ok := top["mediaType"]; ok && json.Unmarshal(raw, &own) == nil && mediaTypeRE.MatchString(own) {
		return own
	}
	if _, ok := top["manifests"]; ok {
		return ociIndexType
	}
	return ociManifestType
}

// Media types of manifests that do not say theirs.
const (
	ociManifestType = "application/vnd.oci.image.manifest.v1+json"
	ociIndexType    = "application/vnd.oci.image.index.v1+json"
)

// mediaTypeRE is a media type without parameters (RFC 6838 section 4.2).
var mediaTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)

// StatBlob returns the size of blob digest in repo without fetching it: from
// the store when linked to repo, else from a HEAD to the rule's upstream
// (a HEAD by a client must not start a download of a large layer).
func (p *Puller) StatBlob(ctx context.Context, repo, digest string) (int64, error) {
	if _, err := p.meta.Linked(ctx, repo, digest); err == nil {
		if size, err := p.blobs.Stat(ctx, digest); err == nil {
			p.answered(ctx, p.ruleOf(repo), SourceHit, true)
			return size, nil
		}
	}
	up, ruled := p.match(repo)
	if !ruled {
		return 0, p.unknown(ctx, repo, fmt.Errorf("%w: %s@%s", ErrBlobUnknown, repo, digest))
	}
	p.answered(ctx, up.rule, SourceMiss, true)
	size, err := p.headBlob(ctx, up, digest)
	if err != nil {
		return 0, p.blobError(repo, digest, up, err)
	}
	if size < 0 {
		return 0, fmt.Errorf("%w: upstream %s/%s gave no size for %s", ErrUnavailable, up.host, up.path, digest)
	}
	return size, nil
}

// decodeJSON decodes at most 16 MiB of JSON from r.
func decodeJSON(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, 16<<20)).Decode(v)
}

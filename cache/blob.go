package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/regcache/regcache/requestid"
	"github.com/regcache/regcache/storage"
)

// Peers is the cluster of replicas, as a fill sees it. Owner names the
// live replica owning digest, empty when this replica owns it or no other
// replica is live (the fill then fetches from the upstream itself). Open
// streams the blob digest of repo (ruled there too) from byte offset on
// from that replica; size is the whole blob's size.
type Peers interface {
	Owner(digest string) (peer string)
	Open(ctx context.Context, peer, repo, digest string, offset int64) (body io.ReadCloser, size int64, err error)
}

// ErrNotOwner: a replica asked this one for a blob whose fill here
// streams from another replica (the two disagree on who owns it). Serving
// it could make two replicas wait on each other; the asking replica
// fetches from the upstream instead.
var ErrNotOwner = errors.New("this replica streams the blob from another replica")

// peerRequestKey marks the context of a request from another replica.
type peerRequestKey struct{}

// PeerRequest marks ctx as a request of another replica: a fill it starts
// fetches from the upstream itself, never from a replica again, so that
// replicas disagreeing on the owner of a digest never forward in a loop.
func PeerRequest(ctx context.Context) context.Context {
	return context.WithValue(ctx, peerRequestKey{}, true)
}

// IsPeerRequest reports whether ctx is marked by PeerRequest.
func IsPeerRequest(ctx context.Context) bool {
	v, _ := ctx.Value(peerRequestKey{}).(bool)
	return v
}

// peerState is where a fill's bytes come from in a cluster. A fill
// streaming from a replica (remote) accepts no replica as a follower, and
// a fill a replica follows never streams from a replica: no two replicas
// ever wait on each other, whatever each believes about ownership.
type peerState struct {
	repo     string // the repository the fill started for, asked of the owner
	fromPeer bool   // started by another replica's request: upstream only

	mu       sync.Mutex
	remote   bool     // streaming (or about to) from a replica
	followed bool     // a replica follows this fill
	sources  []string // where the bytes came from, in order, for the log
}

// tryRemote reports whether the fill may stream from a replica (no
// replica follows it), and if so marks it remote. The caller checked
// that no replica's request started it (fromPeer).
func (s *peerState) tryRemote() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.followed {
		return false
	}
	s.remote = true
	return true
}

// local marks the fill as fetching from the upstream.
func (s *peerState) local() {
	s.mu.Lock()
	s.remote = false
	s.mu.Unlock()
}

// follow registers a replica following the fill; false when the fill
// streams from a replica.
func (s *peerState) follow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.remote {
		return false
	}
	s.followed = true
	return true
}

// record notes that n bytes came from peer ("" for the upstream).
func (s *peerState) record(peer string, n int64) {
	from := "upstream"
	if peer != "" {
		from = "peer " + peer
	}
	s.mu.Lock()
	s.sources = append(s.sources, fmt.Sprintf("%s (%d bytes)", from, n))
	s.mu.Unlock()
}

func (s *peerState) from() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sources)
}

// fillHold bounds how long received bytes of a fill wait for the
// store's aligned write (storage.Writer.Follow) before they are written
// anyway: an upstream of 5 MB/s or more fills whole aligned writes, and
// readers following a slower one still get its bytes this soon.
const fillHold = 50 * time.Millisecond

// Blob returns the blob digest of repo: from the store when linked to repo;
// else, for a ruled repository, from the one fill of that digest, started
// or joined here, streaming as bytes land. It records where the blob came
// from (see Outcome): a read that waited for a fill is a miss.
func (p *Puller) Blob(ctx context.Context, repo, digest string) (Content, error) {
	src := SourceHit
	// A few rounds at most: each either serves, or ends with the blob linked
	// to repo (a fill committed, or stored bytes were confirmed).
	for range 3 {
		if c, err := p.openLinked(ctx, repo, digest); err == nil {
			p.access.touch(digest)
			c.Fetched = src == SourceMiss
			p.answered(ctx, p.ruleOf(repo), src, true)
			return c, nil
		}
		up, ruled := p.match(repo)
		if !ruled {
			return Content{}, p.unknown(ctx, repo, fmt.Errorf("%w: %s@%s", ErrBlobUnknown, repo, digest))
		}
		if p.opts.Upstreams.Offline() {
			// Not linked here, or its bytes are gone: nothing can fetch
			// it, nor confirm bytes stored for another repository.
			return Content{}, fmt.Errorf("blob %s@%s is not cached: %w", repo, digest, errOffline)
		}
		c, done, err := p.blobFromFill(ctx, repo, up, digest)
		if done || err != nil {
			p.answered(ctx, up.rule, SourceMiss, true)
			return c, err
		}
		src = SourceMiss
	}
	return Content{}, fmt.Errorf("%w: %s@%s: stored and linked, but it cannot be opened", ErrUnavailable, repo, digest)
}

// blobFromFill starts or joins the fill of digest for repo and returns a
// reader following it (done). Not done, with no error, means the blob is
// now linked to repo: the caller reads the store.
func (p *Puller) blobFromFill(ctx context.Context, repo string, up upstreamRepo, digest string) (c Content, done bool, err error) {
	f, err := p.fillFor(ctx, repo, up, digest)
	if err != nil {
		return Content{}, true, p.blobError(repo, digest, up, err)
	}
	if f == nil {
		return Content{}, false, nil // linked meanwhile, or the bytes were already stored
	}
	r, ok, err := f.reader(ctx)
	if err != nil {
		return Content{}, true, p.blobError(repo, digest, up, err)
	}
	if ok {
		return Content{Body: r, Size: r.size, Digest: digest, Fetched: true}, true, nil
	}
	// Size unknown until the end: wait for the commit, then read the store.
	if err := f.result(ctx); err != nil {
		return Content{}, true, p.blobError(repo, digest, up, err)
	}
	return Content{}, false, nil
}

func (p *Puller) blobError(repo, digest string, up upstreamRepo, err error) error {
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("%w: %s@%s (upstream %s/%s has no such blob)", ErrBlobUnknown, repo, digest, up.host, up.path)
	}
	return fmt.Errorf("fetch blob %s@%s from %s/%s: %w", repo, digest, up.host, up.path, err)
}

// fillFor returns the running fill that repo may read digest from, starting
// one when none runs. It returns nil when the blob became readable under
// repo without a fill (linked meanwhile, or stored for another repository
// and confirmed by repo's upstream).
//
// Joining a fill started through another upstream repository or credential
// set requires this repository's upstream to confirm, with its own
// credentials, that it has the digest: private content never leaks across
// rules by joining blindly.
func (p *Puller) fillFor(ctx context.Context, repo string, up upstreamRepo, digest string) (*fill, error) {
	p.fillsMu.Lock()
	f := p.fills[digest]
	if f == nil {
		if _, err := p.blobs.Stat(ctx, digest); errors.Is(err, storage.ErrNotFound) {
			f = newFill(digest, up.key(), repo)
			f.requestID = requestid.From(ctx)
			f.peer.repo, f.peer.fromPeer = repo, IsPeerRequest(ctx)
			p.fills[digest] = f
			p.fillsMu.Unlock()
			p.fillsRun.Add(1)
			// The fill outlives the request, and keeps its ID in its logs.
			fctx := requestid.With(p.life, f.requestID)
			go func() {
				defer p.fillsRun.Done()
				p.runFill(fctx, f, up)
			}()
			return f, nil
		}
	}
	p.fillsMu.Unlock()

	// The bytes are stored, or being fetched through another upstream
	// repository or credential set: this repository's upstream must
	// confirm it has them. A fill from this same upstream repository
	// needs no confirmation.
	if f == nil || f.upKey != up.key() {
		if _, err := p.headBlob(ctx, up, digest); err != nil {
			return nil, err
		}
	}
	if f != nil && IsPeerRequest(ctx) && !f.peer.follow() {
		return nil, fmt.Errorf("%w: %s", ErrNotOwner, digest)
	}
	if f != nil {
		if f.join(repo) {
			p.joined(ctx, up.rule)
			p.log.DebugContext(ctx, "joined a running fill", "repo", repo, "digest", digest, "fillRequestId", f.requestID)
			return f, nil
		}
		// The fill is linking already: wait for it, then link repo too.
		if err := f.result(ctx); err != nil {
			return nil, err
		}
	}
	// Protected from the check until the link: a collection running
	// meanwhile does not delete the bytes this links.
	defer p.protect(digest)()
	size, err := p.blobs.Stat(ctx, digest)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil // deleted meanwhile: the next round fetches it again
	}
	if err != nil {
		return nil, fmt.Errorf("%w: blob %s: %w", ErrUnavailable, digest, err)
	}
	return nil, p.meta.Link(ctx, repo, storage.Link{Digest: digest, Size: size, LinkedAt: p.opts.Now()}, nil)
}

// headBlob asks the upstream repository, with its rule's credentials,
// whether it has digest, and returns the size it reports (-1 when none).
func (p *Puller) headBlob(ctx context.Context, up upstreamRepo, digest string) (int64, error) {
	hctx, cancel := context.WithTimeout(ctx, p.opts.ManifestTimeout)
	defer cancel()
	resp, err := p.clients.do(hctx, up, http.MethodHead, up.url("blobs", digest), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}

// runFill fetches the blob, verifies it, commits it and links it to every
// repository that joined. It runs detached from the client that started
// it (ctx is the puller's life), bounded by BlobTimeout overall and
// IdleTimeout between bytes.
func (p *Puller) runFill(ctx context.Context, f *fill, up upstreamRepo) {
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, p.opts.BlobTimeout, fmt.Errorf("the fill took longer than %v", p.opts.BlobTimeout))
	defer cancelTimeout()
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	cancel := func() { cancelCause(fmt.Errorf("no data from the upstream for %v", p.opts.IdleTimeout)) }
	// What the fill commits is protected until every repository that
	// joined is linked: a collection never deletes it in between.
	defer p.protect(f.digest)()
	start := time.Now()
	var n int64
	release, err := p.fillSlot(ctx)
	if err == nil {
		n, err = p.fetchBlob(ctx, cancel, f, up)
		release()
	}
	var repos []string
	if err == nil {
		now := p.opts.Now()
		repos = f.commitRepos()
		for _, repo := range repos {
			if lerr := p.meta.Link(ctx, repo, storage.Link{Digest: f.digest, Size: n, LinkedAt: now}, nil); lerr != nil {
				err = lerr
			}
		}
	}
	p.fillsMu.Lock()
	delete(p.fills, f.digest)
	p.fillsMu.Unlock()
	f.finish(err)
	if err != nil {
		p.storageFull(ctx, err)
		p.log.WarnContext(ctx, "blob fill failed", "digest", f.digest, "upstream", up.host+"/"+up.path, "err", err)
		return
	}
	p.log.InfoContext(ctx, "cached blob", "digest", f.digest, "bytes", n, "duration", time.Since(start).Round(time.Millisecond),
		"upstream", up.host+"/"+up.path, "from", f.peer.from(), "repos", repos)
}

// fillSlot waits for one of the MaxFills slots of running fills (at once
// without a cap) and returns its release; an error when ctx ends first.
func (p *Puller) fillSlot(ctx context.Context) (release func(), err error) {
	if p.fillSlots == nil {
		return func() {}, nil
	}
	select {
	case p.fillSlots <- struct{}{}:
		return func() { <-p.fillSlots }, nil
	default:
	}
	p.fillsQueued.Add(1)
	defer p.fillsQueued.Add(-1)
	select {
	case p.fillSlots <- struct{}{}:
		return func() { <-p.fillSlots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for one of %d upstream fetch slots: %w", ErrUnavailable, cap(p.fillSlots), context.Cause(ctx))
	}
}

// FillsRunning is how many blob fills are running (or waiting for a
// slot): once none is, everything fetched is committed and linked.
func (p *Puller) FillsRunning() int {
	p.fillsMu.Lock()
	defer p.fillsMu.Unlock()
	return len(p.fills)
}

// FillsQueued is how many fills wait for a slot (Options.MaxFills).
func (p *Puller) FillsQueued() int64 { return p.fillsQueued.Load() }

// fetchBlob streams the blob into the store and returns its size once
// committed: from the replica owning the digest when a cluster is
// configured and the fill serves a client of this replica, else from the
// upstream. When a replica's stream breaks mid-blob, the fill continues
// from the bytes already written (resume). Whatever the sources, the
// digest covers the whole file before any reader gets the last byte.
func (p *Puller) fetchBlob(ctx context.Context, cancel func(), f *fill, up upstreamRepo) (int64, error) {
	src, err := p.openSource(ctx, f, up)
	if err != nil {
		return 0, err
	}
	w, err := p.blobs.Create(ctx, f.digest, src.size)
	if err != nil {
		src.body.Close()
		return 0, err
	}
	f.start(src.size, w.TempPath())
	idle := time.AfterFunc(p.opts.IdleTimeout, cancel)
	defer idle.Stop()
	var n int64
	for resumes := 0; ; resumes++ {
		body := &sourceReader{r: idleReader{r: src.body, timer: idle, d: p.opts.IdleTimeout}}
		k, cerr := w.Follow(body, fillHold, f.progress)
		src.body.Close()
		n += k
		f.peer.record(src.from, k)
		if src.from == "" {
			p.obs.Fetched(up.host, k)
		}
		err = cerr
		if err == nil && src.size >= 0 && w.Written() < src.size {
			err = io.ErrUnexpectedEOF
		}
		// Only a replica's stream that broke is resumed: the upstream's
		// failures end the fill as they always did (clients retry).
		if err == nil || ctx.Err() != nil || src.from == "" || body.err == nil || resumes >= maxResumes {
			break
		}
		off := w.Written()
		p.log.WarnContext(ctx, "blob stream from a peer broke: resuming", "digest", f.digest, "peer", src.from, "offset", off, "err", err)
		if src, err = p.resumeSource(ctx, f, up, off, src.size); err != nil {
			err = fmt.Errorf("after %d bytes: %w", off, err)
			break
		}
	}
	if ctx.Err() != nil {
		// Stalled (idle timeout), too long, or regcache stopping: say which.
		err = context.Cause(ctx)
	}
	if errors.Is(err, storage.ErrStorageFull) {
		w.Cancel()
		return 0, fmt.Errorf("after %d bytes: %w", n, err)
	}
	if err != nil {
		w.Cancel()
		return 0, fmt.Errorf("%w: after %d bytes: %w", ErrUnavailable, n, err)
	}
	if err := w.Verify(); err != nil {
		w.Cancel()
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// Waiters may deliver the last byte now; making the blob durable
	// (fsync, rename) is the store's business, not theirs.
	f.verify()
	if err := w.Commit(); err != nil {
		if errors.Is(err, storage.ErrStorageFull) {
			return 0, err
		}
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return n, nil
}

// maxResumes bounds how often one fill continues after a replica's
// stream broke (each time from another replica, or the upstream).
const maxResumes = 4

// blobSource is one stream of a blob's bytes: from the upstream (from
// empty) or from the replica from. size is the whole blob's size (-1:
// unknown, only from the upstream).
type blobSource struct {
	body io.ReadCloser
	size int64
	from string
}

// openSource opens the first stream of a fill: from the owner of the
// digest when it is another live replica and answers; from the upstream
// otherwise (no cluster, this replica owns it, the fill serves a peer, a
// peer follows this fill, or the owner failed before its first byte).
func (p *Puller) openSource(ctx context.Context, f *fill, up upstreamRepo) (blobSource, error) {
	if p.opts.Peers != nil && !f.peer.fromPeer {
		if peer := p.opts.Peers.Owner(f.digest); peer != "" && f.peer.tryRemote() {
			body, size, err := p.opts.Peers.Open(ctx, peer, f.peer.repo, f.digest, 0)
			if err == nil {
				return blobSource{body: body, size: size, from: peer}, nil
			}
			p.log.WarnContext(ctx, "blob owner unreachable: fetching from the upstream", "digest", f.digest, "peer", peer, "err", err)
			f.peer.local()
		}
	}
	resp, err := p.clients.do(ctx, up, http.MethodGet, up.url("blobs", f.digest), nil)
	if err != nil {
		return blobSource{}, err
	}
	size := int64(-1)
	if cl := resp.Header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			size = n
		}
	}
	return blobSource{body: resp.Body, size: size}, nil
}

// resumeSource opens the rest of the blob from byte off on, after a
// replica's stream broke: from the next owner among the replicas still
// live, else from the upstream with a Range request, which must be
// answered with exactly those bytes (206); an upstream that ignores the
// range fails the fill, as a broken upstream stream does.
func (p *Puller) resumeSource(ctx context.Context, f *fill, up upstreamRepo, off, size int64) (blobSource, error) {
	if peer := p.opts.Peers.Owner(f.digest); peer != "" {
		body, got, err := p.opts.Peers.Open(ctx, peer, f.peer.repo, f.digest, off)
		switch {
		case err != nil:
			p.log.WarnContext(ctx, "next blob owner unreachable: resuming from the upstream", "digest", f.digest, "peer", peer, "err", err)
		case got != size:
			body.Close()
			p.log.WarnContext(ctx, "next blob owner reports another size: resuming from the upstream", "digest", f.digest, "peer", peer, "size", got, "want", size)
		default:
			return blobSource{body: body, size: size, from: peer}, nil
		}
	}
	f.peer.local()
	rng := fmt.Sprintf("bytes=%d-%d", off, size-1)
	resp, err := p.clients.do(ctx, up, http.MethodGet, up.url("blobs", f.digest), http.Header{"Range": {rng}})
	if err != nil {
		return blobSource{}, fmt.Errorf("resume from the upstream (%s): %w", rng, err)
	}
	want := fmt.Sprintf("bytes %d-%d/%d", off, size-1, size)
	if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want {
		resp.Body.Close()
		return blobSource{}, fmt.Errorf("resume from the upstream: asked for %s, got status %d, Content-Range %q (want 206, %q)",
			rng, resp.StatusCode, resp.Header.Get("Content-Range"), want)
	}
	return blobSource{body: resp.Body, size: size}, nil
}

// sourceReader remembers the error of its source, to tell a broken
// stream (resumable) from a failed write to the store (not).
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
	}
	return n, err
}

// idleReader pushes the idle deadline back on every read.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (r idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.timer.Reset(r.d)
	return n, err
}

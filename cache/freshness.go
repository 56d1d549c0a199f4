package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/regcache/regcache/storage"
)

// DefaultNotFoundTTL is how long an upstream's "no such manifest" is
// remembered.
const DefaultNotFoundTTL = time.Minute

// maxNotFound bounds the remembered misses: names come from clients.
const maxNotFound = 10000

// freshness is the puller's state for keeping tags fresh without
// hammering upstreams:
//
//   - a tag is fresh for its rule's TTL (or forever with tagTTL never);
//     after that one HEAD revalidates it, shared by every pull of the tag
//     that arrives meanwhile (revalidations), and a pull that read the tag
//     before that HEAD ended does not send another;
//   - when the upstream cannot answer, the cached tag is served for at
//     most the rule's maxStale since the upstream last confirmed it;
//   - a tag deleted upstream is served until evicted, or removed
//     (deletedTags: forget);
//   - concurrent misses of one manifest share one GET (fetches), and an
//     upstream's "no such manifest" is remembered for NotFoundTTL
//     (notFound), so that a client retrying a typo reaches the upstream
//     once per TTL.
type freshness struct {
	revalidations singleflight.Group
	fetches       singleflight.Group

	mu       sync.Mutex
	notFound map[string]time.Time // upstream repository + ref -> until

	notFoundHits atomic.Int64
	staleServed  atomic.Int64

	// revalidating, when set, is called as a pull starts revalidating a
	// tag (tests hold the upstream's answer until every pull got there).
	revalidating func()
}

// freshTag serves the cached tag repo:ref (local, whose pointer is tag)
// or what it became upstream, following the rule's freshness settings.
func (p *Puller) freshTag(ctx context.Context, repo, ref string, up upstreamRepo, tag storage.Tag, local Content) (Content, Source, error) {
	now := p.opts.Now()
	if up.pinned || p.opts.Upstreams.Offline() || now.Sub(tag.FetchedAt) < up.tagTTL {
		return local, SourceHit, nil
	}
	digest, err := p.revalidate(ctx, repo, ref, up, false)
	switch {
	case err == nil && digest == local.Digest:
		return local, SourceHit, nil
	case err == nil:
		// The tag moved: the flight pointed it at a manifest already
		// stored, or it must be fetched.
		local.Body.Close()
		if digest != "" {
			if t, terr := p.meta.Tag(ctx, repo, ref); terr == nil && t.Digest == digest {
				if c, err := p.openLinked(ctx, repo, digest); err == nil {
					return c, SourceHit, nil
				}
			}
		}
		c, err := p.fetchManifest(ctx, repo, up, ref, ref)
		return c, SourceMiss, err
	case errors.Is(err, errNotFound) && up.forgetDeleted:
		local.Body.Close()
		return Content{}, SourceMiss, p.forgetTag(ctx, repo, ref, up, local.Digest)
	case errors.Is(err, errNotFound):
		p.fresh.staleServed.Add(1)
		p.log.InfoContext(ctx, "serving cached tag deleted upstream", "repo", repo, "tag", ref, "digest", local.Digest, "upstream", up.host+"/"+up.path)
		return local, SourceStale, nil
	}
	if age := now.Sub(tag.FetchedAt); up.maxStale > 0 && age > up.maxStale {
		local.Body.Close()
		return Content{}, SourceMiss, fmt.Errorf("tag %s:%s was last confirmed by upstream %s %v ago, longer than its rule's maxStale (%v), and the upstream cannot confirm it now: %w",
			repo, ref, up.host, age.Round(time.Second), up.maxStale, err)
	}
	p.fresh.staleServed.Add(1)
	var wait *WaitError
	if errors.As(err, &wait) {
		p.log.DebugContext(ctx, "serving cached tag: waiting out the upstream's rate limit", "repo", repo, "tag", ref, "until", wait.Until)
	} else {
		p.log.WarnContext(ctx, "serving cached tag: upstream revalidation failed", "repo", repo, "tag", ref, "digest", local.Digest, "err", err)
	}
	return local, SourceStale, nil
}

// revalidate asks the upstream, with one HEAD per tag at a time, which
// manifest tag ref of repo points at now, and returns its digest ("" when
// the upstream did not say). When that manifest is stored and linked to
// repo, the tag pointer is updated (fresh again: one write per tag and TTL
// window). A revalidation that ended after the caller read the tag counts
// as the caller's own, unless force.
func (p *Puller) revalidate(ctx context.Context, repo, ref string, up upstreamRepo, force bool) (string, error) {
	if _, ok := p.knownMissing(up, ref); ok {
		return "", fmt.Errorf("%w: %s/%s:%s (remembered)", errNotFound, up.host, up.path, ref)
	}
	if p.fresh.revalidating != nil {
		p.fresh.revalidating()
	}
	key := repo + "\x00" + ref
	if force {
		key += "\x00force"
	}
	v, err := joinFlight(ctx, &p.fresh.revalidations, key, func() (any, error) {
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.RevalidateTimeout)
		defer cancel()
		if !force {
			if t, err := p.meta.Tag(hctx, repo, ref); err == nil && p.opts.Now().Sub(t.FetchedAt) < up.tagTTL {
				return t.Digest, nil
			}
		}
		resp, err := p.clients.do(hctx, up, http.MethodHead, up.url("manifests", ref), http.Header{"Accept": {manifestAccept}})
		if err != nil {
			if errors.Is(err, errNotFound) {
				p.rememberNotFound(up, ref)
			}
			return "", err
		}
		resp.Body.Close()
		digest := resp.Header.Get("Docker-Content-Digest")
		if _, err := storage.ParseDigest(digest); err != nil {
			return "", nil
		}
		defer p.protect(digest)()
		l, err := p.meta.Linked(hctx, repo, digest)
		if err != nil || l.MediaType == "" {
			return digest, nil
		}
		if _, err := p.blobs.Stat(hctx, digest); err != nil {
			return digest, nil
		}
		now := p.opts.Now()
		l.LinkedAt = now
		if err := p.meta.Link(hctx, repo, l, &storage.Tag{Name: ref, Digest: digest, FetchedAt: now}); err != nil {
			p.log.WarnContext(ctx, "record tag revalidation", "repo", repo, "tag", ref, "err", err)
		}
		return digest, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// tagDeleter removes tag pointers (storage.Meta).
type tagDeleter interface {
	DeleteTag(ctx context.Context, repo, tag string) error
}

// forgetTag removes the cached tag repo:ref, which its upstream deleted,
// and says so.
func (p *Puller) forgetTag(ctx context.Context, repo, ref string, up upstreamRepo, digest string) error {
	if d, ok := p.meta.(tagDeleter); ok {
		if err := d.DeleteTag(ctx, repo, ref); err != nil && !errors.Is(err, storage.ErrNotFound) {
			p.log.WarnContext(ctx, "remove tag deleted upstream", "repo", repo, "tag", ref, "err", err)
		}
	}
	p.log.InfoContext(ctx, "removed cached tag deleted upstream", "repo", repo, "tag", ref, "digest", digest, "upstream", up.host+"/"+up.path)
	return fmt.Errorf("%w: %s:%s (upstream %s/%s deleted it; its rule forgets deleted tags)", ErrManifestUnknown, repo, ref, up.host, up.path)
}

func notFoundKey(up upstreamRepo, ref string) string { return up.key() + "@" + ref }

// rememberNotFound records that up has no manifest ref.
func (p *Puller) rememberNotFound(up upstreamRepo, ref string) {
	if p.opts.NotFoundTTL < 0 {
		return
	}
	now := p.opts.Now()
	f := &p.fresh
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.notFound) >= maxNotFound {
		for k, until := range f.notFound {
			if !now.Before(until) || len(f.notFound) >= maxNotFound {
				delete(f.notFound, k)
			}
		}
	}
	f.notFound[notFoundKey(up, ref)] = now.Add(p.opts.NotFoundTTL)
}

// knownMissing reports whether up said it has no manifest ref within the
// TTL, and how long the answer is still remembered.
func (p *Puller) knownMissing(up upstreamRepo, ref string) (time.Duration, bool) {
	f := &p.fresh
	k := notFoundKey(up, ref)
	now := p.opts.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	until, ok := f.notFound[k]
	if !ok {
		return 0, false
	}
	if !now.Before(until) {
		delete(f.notFound, k)
		return 0, false
	}
	f.notFoundHits.Add(1)
	return until.Sub(now), true
}

// protect holds digests against a collection until the returned release.
func (p *Puller) protect(digests ...string) (release func()) {
	if p.opts.Guard == nil {
		return func() {}
	}
	return p.opts.Guard.Protect(digests...)
}

// NotFoundHits counts the manifest requests answered from a remembered
// upstream "no such manifest", without asking the upstream.
func (p *Puller) NotFoundHits() int64 { return p.fresh.notFoundHits.Load() }

// StaleServed counts the cached tags served although their upstream could
// not confirm them (down, failing, rate-limiting, or deleted them).
func (p *Puller) StaleServed() int64 { return p.fresh.staleServed.Load() }

// Upstreams is the state shared by the upstream requests: offline mode,
// waits after 429s and the rate limits announced.
func (p *Puller) Upstreams() *Upstreams { return p.opts.Upstreams }

// Refreshed is the outcome of refreshing one cached tag.
type Refreshed struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	// Before and After are the digests the tag pointed at.
	Before string `json:"before"`
	After  string `json:"after,omitempty"`
	// Result is unchanged, updated, deleted upstream (still served),
	// removed (deleted upstream, and the rule forgets such tags) or failed.
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

// repoLister lists repositories (storage.Meta).
type repoLister interface {
	Repositories(ctx context.Context, last string, n int) ([]string, error)
}

// Refresh asks the upstream of rule name, now and whatever the tag TTL
// (tagTTL never included), where each cached tag of the repositories the
// rule covers points, and moves the tags that moved. refs limits it to
// those tags ("repo:tag"). It fails at once when regcache is offline.
func (p *Puller) Refresh(ctx context.Context, name string, refs []string) ([]Refreshed, error) {
	if _, err := p.rules.Get(name); err != nil {
		return nil, err
	}
	if p.opts.Upstreams.Offline() {
		return nil, errOffline
	}
	lister, ok := p.meta.(repoLister)
	if !ok {
		return nil, errors.New("refresh: this store cannot list repositories")
	}
	repos, err := lister.Repositories(ctx, "", -1)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, r := range refs {
		want[r] = true
	}
	out := []Refreshed{}
	for _, repo := range repos {
		m, ok := p.rules.Match(repo)
		if !ok || m.Rule.Name != name {
			continue
		}
		up, _ := p.match(repo)
		tags, err := p.meta.Tags(ctx, repo)
		if err != nil {
			return out, err
		}
		for _, tag := range tags {
			if len(want) > 0 && !want[repo+":"+tag] {
				continue
			}
			out = append(out, p.refreshTag(ctx, repo, tag, up))
			delete(want, repo+":"+tag)
		}
	}
	missing := make([]string, 0, len(want))
	for r := range want {
		missing = append(missing, r)
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		return out, fmt.Errorf("%w: rule %q caches no tag %s", ErrManifestUnknown, name, strings.Join(missing, ", "))
	}
	return out, nil
}

func (p *Puller) refreshTag(ctx context.Context, repo, tag string, up upstreamRepo) Refreshed {
	r := Refreshed{Repository: repo, Tag: tag}
	old, err := p.meta.Tag(ctx, repo, tag)
	if err != nil {
		r.Result, r.Error = "failed", err.Error()
		return r
	}
	r.Before = old.Digest
	p.forgetNotFound(up, tag)
	digest, err := p.revalidate(ctx, repo, tag, up, true)
	switch {
	case errors.Is(err, errNotFound) && up.forgetDeleted:
		p.forgetTag(ctx, repo, tag, up, old.Digest)
		r.Result = "removed"
		return r
	case errors.Is(err, errNotFound):
		r.Result, r.After = "deleted upstream", old.Digest
		return r
	case err != nil:
		r.Result, r.Error = "failed", PublicMessage(err)
		return r
	}
	if digest == old.Digest {
		r.Result, r.After = "unchanged", digest
		return r
	}
	if t, err := p.meta.Tag(ctx, repo, tag); err != nil || t.Digest != digest || digest == "" {
		c, err := p.fetchManifest(ctx, repo, up, tag, tag)
		if err != nil {
			r.Result, r.Error = "failed", PublicMessage(err)
			return r
		}
		c.Body.Close()
		digest = c.Digest
	}
	r.Result, r.After = "updated", digest
	if digest == old.Digest {
		r.Result = "unchanged"
	}
	p.log.InfoContext(ctx, "refreshed cached tag", "repo", repo, "tag", tag, "before", old.Digest, "after", digest, "result", r.Result)
	return r
}

// forgetNotFound drops a remembered miss (an operator's refresh asks
// again).
func (p *Puller) forgetNotFound(up upstreamRepo, ref string) {
	p.fresh.mu.Lock()
	delete(p.fresh.notFound, notFoundKey(up, ref))
	p.fresh.mu.Unlock()
}

// UpstreamStatus is what regcache knows about the upstream of a rule.
type UpstreamStatus struct {
	// RateLimit is the pull limit the upstream last announced for the
	// rule's credential set (nil: none seen yet).
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// WaitUntil is set while the upstream's 429 keeps regcache from
	// sending it anything.
	WaitUntil *time.Time `json:"waitUntil,omitempty"`
	// Offline: regcache contacts no upstream.
	Offline bool `json:"offline,omitempty"`
}

// UpstreamStatus returns what is known of rule r's upstream.
func (p *Puller) UpstreamStatus(r Rule) UpstreamStatus {
	host, _, _ := strings.Cut(r.Source, "/")
	ep := p.endpoints.Resolve(host).Host
	st := UpstreamStatus{Offline: p.opts.Upstreams.Offline()}
	if l, ok := p.opts.Upstreams.RateLimit(ep, r.CredentialSet); ok {
		st.RateLimit = &l
	}
	if until, ok := p.opts.Upstreams.Waits()[ep]; ok {
		st.WaitUntil = &until
	}
	return st
}

// joinFlight runs fn once for all the callers of key at a time in g and
// returns its result, or the caller's context error as soon as that
// context ends: a client that gives up is not kept waiting for the
// upstream, while the flight goes on (bounded by its own timeout) for the
// callers still waiting and stores what it fetched.
func joinFlight(ctx context.Context, g *singleflight.Group, key string, fn func() (any, error)) (any, error) {
	select {
	case r := <-g.DoChan(key, fn):
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

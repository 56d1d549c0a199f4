package cache

import (
	"context"
	"time"
)

// Source says where the answer to a read came from; the registry sends it
// to clients as X-Cache.
type Source string

// The sources of an answer.
const (
	// SourceHit: a cached repository's content served from the store
	// (fresh, or revalidated with the upstream).
	SourceHit Source = "HIT"
	// SourceMiss: a cached repository's read the upstream answered: a
	// manifest fetched, a blob fill started or joined, a HEAD or tag list
	// asked upstream; failures of these too.
	SourceMiss Source = "MISS"
	// SourceStale: a cached repository's content served from the store
	// because the upstream could not revalidate it (serve-stale).
	SourceStale Source = "STALE"
	// SourceLocal: anything else: local repositories (pulls, pushes,
	// deletes), the catalog, the version check, and requests refused
	// before they reached a repository.
	SourceLocal Source = "LOCAL"
)

// Outcome is where the answer to one read came from and the rule covering
// its repository. A caller that wants to know (the registry, for X-Cache,
// its access log and metrics) puts one in the read's context with
// WithOutcome; the puller fills it in. Reads of local repositories leave
// it untouched (the zero Outcome means SourceLocal).
type Outcome struct {
	Source Source
	// Rule names the cache rule; "" for a local repository.
	Rule string
	// Joined is true when the read joined a fill another client started.
	Joined bool
}

type outcomeKey struct{}

// WithOutcome returns ctx carrying o, which reads with that context fill in.
func WithOutcome(ctx context.Context, o *Outcome) context.Context {
	return context.WithValue(ctx, outcomeKey{}, o)
}

// Observer is told what the puller does, for metrics. Every method must be
// cheap and safe for concurrent use: Served runs on every cache hit.
type Observer interface {
	// Served: one manifest or blob read of a cached repository, covered by
	// rule, was answered from src (SourceHit, SourceMiss or SourceStale).
	Served(rule string, src Source)
	// Joined: a read of rule joined a fill already running for the same
	// blob instead of starting another.
	Joined(rule string)
	// UpstreamRequest: one request to upstream (a login server, e.g.
	// docker.io) ended after d with status, 0 when no answer came (a
	// connection, TLS or timeout failure). d runs to the response headers.
	UpstreamRequest(upstream, method string, status int, d time.Duration)
	// Fetched: n bytes of manifest or blob bodies arrived from upstream.
	Fetched(upstream string, n int64)
}

// nopObserver is the Observer of a puller without metrics.
type nopObserver struct{}

func (nopObserver) Served(string, Source)                              {}
func (nopObserver) Joined(string)                                      {}
func (nopObserver) UpstreamRequest(string, string, int, time.Duration) {}
func (nopObserver) Fetched(string, int64)                              {}

// answered records that a read of repository rule's content (rule "" for
// a local one) was answered from src: in the context's Outcome, and, when
// count is true (manifest and blob reads, not tag or referrer lists), in
// the observer.
func (p *Puller) answered(ctx context.Context, rule string, src Source, count bool) {
	if rule == "" {
		return
	}
	if o, ok := ctx.Value(outcomeKey{}).(*Outcome); ok {
		o.Source, o.Rule = src, rule
	}
	if count {
		p.obs.Served(rule, src)
	}
}

// joined records that a read of rule joined a running fill.
func (p *Puller) joined(ctx context.Context, rule string) {
	if o, ok := ctx.Value(outcomeKey{}).(*Outcome); ok {
		o.Joined = true
	}
	p.obs.Joined(rule)
}

// ruleOf names the rule covering repo, "" for a local repository.
func (p *Puller) ruleOf(repo string) string {
	m, ok := p.rules.Match(repo)
	if !ok {
		return ""
	}
	return m.Rule.Name
}

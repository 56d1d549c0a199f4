// Package status owns the summary an operator reads to know whether the
// cache helps and is healthy: rules with their hits and misses, credential
// set health, store usage against its limit, upstream reachability and
// rate limits, the fills running, and the hit ratio minute by minute over
// the last hour. The admin API serves it as JSON (/admin/v1/status),
// `regcache status` prints it as tables, and the status page draws it.
//
// The Reporter only reads: every figure comes from a small source read
// when a summary is asked for, most of them kept by package metrics.
package status

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/storage"
)

// Summary is the state of one regcache.
type Summary struct {
	Version     string    `json:"version,omitempty"`
	StartedAt   time.Time `json:"startedAt"`
	GeneratedAt time.Time `json:"generatedAt"`
	// Problems lists, in words, what an operator should look at; empty
	// when all is well.
	Problems []string `json:"problems"`
	// Offline says regcache contacts no upstream: it serves cached and
	// imported content only.
	Offline        bool            `json:"offline"`
	Rules          []Rule          `json:"rules"`
	CredentialSets []CredentialSet `json:"credentialSets"`
	Store          Store           `json:"store"`
	Upstreams      []Upstream      `json:"upstreams"`
	// RateLimits are the upstream rate limits last seen; nil when regcache
	// does not track them.
	RateLimits []RateLimit `json:"rateLimits,omitempty"`
	// Throttling is what upstreams asked of regcache: waits after 429s
	// (nil when the source is not wired).
	Throttling *Throttling `json:"throttling,omitempty"`
	Fills      Fills       `json:"fills"`
	// UploadSessions is the number of pushes in progress.
	UploadSessions int      `json:"uploadSessions"`
	LastHour       HitRatio `json:"lastHour"`
}

// Rule is a cache rule with what it served since regcache started.
type Rule struct {
	Name          string `json:"name"`
	Source        string `json:"sourceRepository"`
	Target        string `json:"targetRepository"`
	CredentialSet string `json:"credentialSetName,omitempty"`
	Origin        string `json:"origin"`
	Counts
}

// Counts are manifest and blob reads of a rule's repositories since start.
type Counts struct {
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"`
	Stale  int64 `json:"stale"`
	// Joined counts misses that joined a fill already running.
	Joined int64 `json:"joinedFills"`
	// StoreBytes were served from the store (hits and stale serves);
	// MissBytes were streamed to clients while fetched.
	StoreBytes int64 `json:"storeBytes"`
	MissBytes  int64 `json:"missBytes"`
}

// Ratio is hits (stale serves included) over all reads; -1 without reads.
func (c Counts) Ratio() float64 { return ratio(c.Hits+c.Stale, c.Misses) }

func ratio(hits, misses int64) float64 {
	if hits+misses == 0 {
		return -1
	}
	return float64(hits) / float64(hits+misses)
}

// CredentialSet is a set's health.
type CredentialSet struct {
	Name        string    `json:"name"`
	LoginServer string    `json:"loginServer"`
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	CheckedAt   time.Time `json:"checkedAt,omitzero"`
	// Rules are the rules using the set.
	Rules []string `json:"rules"`
}

// Store is what the blob store holds, against its limits.
type Store struct {
	// Counted is false while the blobs are being counted after a start.
	Counted bool  `json:"counted"`
	Bytes   int64 `json:"bytes"`
	Blobs   int64 `json:"blobs"`
	// LimitBytes is the size the store is kept under; 0 when none is set.
	LimitBytes int64 `json:"limitBytes,omitempty"`
	// Evicted counts the eviction runs and the images and bytes they
	// removed since start; nil when regcache does not evict.
	Evicted *Evicted `json:"evicted,omitempty"`
	// FilesystemBytes and FilesystemFreeBytes describe the filesystem the
	// store is on (0 when unknown).
	FilesystemBytes     uint64 `json:"filesystemBytes"`
	FilesystemFreeBytes uint64 `json:"filesystemFreeBytes"`
	// StorageFullEvents counts fills and stores refused for lack of room.
	StorageFullEvents int64 `json:"storageFullEvents"`
}

// Evicted is what eviction did since start.
type Evicted struct {
	Runs   int64 `json:"runs"`
	Images int64 `json:"images"`
	Bytes  int64 `json:"bytes"`
}

// Upstream is one login server the rules pull from.
type Upstream struct {
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	// State is "reachable" (the last request got an answer below 500),
	// "failing" (5xx or 429), "unreachable" (no answer), or "unknown"
	// (no request since start).
	State        string    `json:"state"`
	LastStatus   int       `json:"lastStatus,omitempty"`
	LastContact  time.Time `json:"lastContact,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
	LastErrorAt  time.Time `json:"lastErrorAt,omitzero"`
	Requests     int64     `json:"requests"`
	Errors       int64     `json:"errors"`
	FetchedBytes int64     `json:"fetchedBytes"`
	Rules        []string  `json:"rules"`
}

// Upstream states.
const (
	UpstreamReachable   = "reachable"
	UpstreamFailing     = "failing"
	UpstreamUnreachable = "unreachable"
	UpstreamUnknown     = "unknown"
)

// RateLimit is the rate limit an upstream last announced for a credential
// set ("" for anonymous pulls).
type RateLimit struct {
	Upstream      string    `json:"upstream"`
	CredentialSet string    `json:"credentialSet,omitempty"`
	Remaining     int64     `json:"remaining"`
	Limit         int64     `json:"limit,omitempty"`
	ObservedAt    time.Time `json:"observedAt,omitzero"`
}

// Throttling is what upstreams asked: the waits they set with 429 and
// Retry-After, and the requests that met them.
type Throttling struct {
	// Waits maps the upstreams (endpoint hosts) that answered 429 to when
	// requests to them resume.
	Waits map[string]time.Time `json:"waits"`
	// RateLimited counts their 429 answers since start; Held the requests
	// not sent because of a wait or offline mode.
	RateLimited int64 `json:"rateLimited"`
	Held        int64 `json:"held"`
}

// Fills are the blob fetches in progress.
type Fills struct {
	Running int   `json:"running"`
	Queued  int64 `json:"queued"`
}

// HitRatio is the last hour, minute by minute.
type HitRatio struct {
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"`
	Stale  int64 `json:"stale"`
	// Ratio is hits and stale serves over all reads; -1 without reads.
	Ratio float64 `json:"ratio"`
	// StoreBytes were served from the store for cached repositories:
	// bytes the upstreams did not send again. FetchedBytes came from them.
	StoreBytes   int64    `json:"storeBytes"`
	FetchedBytes int64    `json:"fetchedBytes"`
	Minutes      []Minute `json:"minutes"`
}

// Minute is one minute of reads of cached repositories; the last one of a
// summary is the minute in progress.
type Minute struct {
	Start        time.Time `json:"start"`
	Hits         int64     `json:"hits"`
	Misses       int64     `json:"misses"`
	Stale        int64     `json:"stale"`
	StoreBytes   int64     `json:"storeBytes"`
	FetchedBytes int64     `json:"fetchedBytes"`
}

// Ratio of the minute; -1 without reads.
func (m Minute) Ratio() float64 { return ratio(m.Hits+m.Stale, m.Misses) }

// UpstreamActivity is what was seen of one upstream since start.
type UpstreamActivity struct {
	LastStatus   int // 0: no answer
	LastContact  time.Time
	LastError    string
	LastErrorAt  time.Time
	Requests     int64
	Errors       int64
	FetchedBytes int64
}

// Sources feed a Reporter; optional ones may be nil.
type Sources struct {
	// Rules lists the cache rules and names their endpoints (cache.Store).
	Rules interface {
		List() []cache.Rule
		Endpoint(r cache.Rule) string
	}
	// Activity is what the metrics saw (metrics.Metrics); nil when
	// regcache runs without metrics: counts, reachability and the last
	// hour are then empty.
	Activity Activity
	// Fills is the puller.
	Fills interface {
		FillsRunning() int
		FillsQueued() int64
		StorageFullEvents() int64
	}
	// CredentialSets lists sets with their health (credentials.Manager).
	CredentialSets interface {
		List(ctx context.Context) []credentials.Set
	}
	// Store is the blob store (storage.Blobs).
	Store interface {
		Usage() (storage.Usage, bool)
		Filesystem() (size, free uint64, ok bool)
	}
	// Uploads counts the upload sessions (uploads.Sessions).
	Uploads interface{ Count() int }
	// Evictions and RateLimits exist once regcache bounds its store and
	// reads upstream rate limits.
	Evictions  Evictions
	RateLimits RateLimits
	// Throttling is the upstreams' waits (cache.Upstreams).
	Throttling interface {
		Waits() map[string]time.Time
		RateLimited() int64
		Held() int64
	}
	// Offline is regcache's offline mode.
	Offline bool
}

// Activity is what was counted since start.
type Activity interface {
	RuleCounts() map[string]Counts
	UpstreamActivity() map[string]UpstreamActivity
	Minutes(now time.Time) []Minute
}

// noActivity is the Activity of a regcache without metrics.
type noActivity struct{}

func (noActivity) RuleCounts() map[string]Counts                 { return nil }
func (noActivity) UpstreamActivity() map[string]UpstreamActivity { return nil }
func (noActivity) Minutes(time.Time) []Minute                    { return nil }

// Evictions is the source of eviction figures: the bounded store.
type Evictions interface {
	// Runs, EvictedImages and EvictedBytes count the eviction runs and
	// what they removed since start.
	Runs() int64
	EvictedImages() int64
	EvictedBytes() int64
	// MaxSize is the size the store is kept under (0: no size bound).
	MaxSize() int64
}

// RateLimits is the source of upstream rate limits (from the RateLimit-*
// headers upstreams such as Docker Hub send).
type RateLimits interface {
	RateLimits() []RateLimit
}

// Reporter builds summaries.
type Reporter struct {
	src     Sources
	version string
	started time.Time
	now     func() time.Time
}

// NewReporter returns a Reporter of a regcache of that version, started at
// started; now is the clock (time.Now when nil).
func NewReporter(src Sources, version string, started time.Time, now func() time.Time) *Reporter {
	if now == nil {
		now = time.Now
	}
	if src.Activity == nil {
		src.Activity = noActivity{}
	}
	return &Reporter{src: src, version: version, started: started, now: now}
}

// Status returns the summary now.
func (r *Reporter) Status(ctx context.Context) Summary {
	now := r.now()
	s := Summary{Version: r.version, StartedAt: r.started.UTC(), GeneratedAt: now.UTC(), Problems: []string{}, Offline: r.src.Offline}
	rules := r.src.Rules.List()
	counts := r.src.Activity.RuleCounts()
	byUpstream := map[string][]string{}
	bySet := map[string][]string{}
	s.Rules = make([]Rule, 0, len(rules))
	for _, rule := range rules {
		s.Rules = append(s.Rules, Rule{Name: rule.Name, Source: rule.Source, Target: rule.Target,
			CredentialSet: rule.CredentialSet, Origin: rule.Origin, Counts: counts[rule.Name]})
		host := loginServer(rule.Source)
		byUpstream[host] = append(byUpstream[host], rule.Name)
		if rule.CredentialSet != "" {
			bySet[rule.CredentialSet] = append(bySet[rule.CredentialSet], rule.Name)
		}
	}
	s.CredentialSets = r.credentialSets(ctx, bySet, &s.Problems)
	s.Upstreams = r.upstreams(rules, byUpstream, &s.Problems)
	s.Store = r.store(&s.Problems)
	if t := r.src.Throttling; t != nil {
		s.Throttling = &Throttling{Waits: t.Waits(), RateLimited: t.RateLimited(), Held: t.Held()}
	}
	if r.src.RateLimits != nil {
		s.RateLimits = r.src.RateLimits.RateLimits()
		if s.RateLimits == nil {
			s.RateLimits = []RateLimit{}
		}
	}
	s.Fills = Fills{Running: r.src.Fills.FillsRunning(), Queued: r.src.Fills.FillsQueued()}
	if r.src.Uploads != nil {
		s.UploadSessions = r.src.Uploads.Count()
	}
	s.LastHour = lastHour(r.src.Activity.Minutes(now))
	return s
}

func (r *Reporter) credentialSets(ctx context.Context, bySet map[string][]string, problems *[]string) []CredentialSet {
	out := []CredentialSet{}
	if r.src.CredentialSets == nil {
		return out
	}
	for _, set := range r.src.CredentialSets.List(ctx) {
		cs := CredentialSet{Name: set.Name, LoginServer: set.LoginServer, State: set.Status.State, Reason: set.Status.Reason,
			CheckedAt: set.Status.CheckedAt, Rules: nonNil(bySet[set.Name])}
		if cs.State == credentials.StateUnhealthy {
			*problems = append(*problems, "credential set "+set.Name+" is unhealthy: "+set.Status.Reason)
		}
		out = append(out, cs)
	}
	return out
}

func (r *Reporter) upstreams(rules []cache.Rule, byUpstream map[string][]string, problems *[]string) []Upstream {
	seen := r.src.Activity.UpstreamActivity()
	endpoints := map[string]string{}
	for _, rule := range rules {
		endpoints[loginServer(rule.Source)] = r.src.Rules.Endpoint(rule)
	}
	out := []Upstream{}
	for host, ep := range endpoints {
		a := seen[host]
		u := Upstream{Name: host, Endpoint: ep, State: upstreamState(a), LastStatus: a.LastStatus, LastContact: a.LastContact.UTC(),
			LastError: a.LastError, LastErrorAt: a.LastErrorAt.UTC(), Requests: a.Requests, Errors: a.Errors,
			FetchedBytes: a.FetchedBytes, Rules: nonNil(byUpstream[host])}
		switch u.State {
		case UpstreamUnreachable:
			*problems = append(*problems, "upstream "+host+" could not be reached at the last request")
		case UpstreamFailing:
			*problems = append(*problems, "upstream "+host+" is failing: "+a.LastError)
		}
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// upstreamState tells the state of an upstream from its last request.
func upstreamState(a UpstreamActivity) string {
	switch {
	case a.Requests == 0:
		return UpstreamUnknown
	case a.LastStatus == 0:
		return UpstreamUnreachable
	case a.LastStatus >= 500 || a.LastStatus == 429:
		return UpstreamFailing
	}
	return UpstreamReachable
}

func (r *Reporter) store(problems *[]string) Store {
	var st Store
	st.StorageFullEvents = r.src.Fills.StorageFullEvents()
	if r.src.Store != nil {
		if u, ok := r.src.Store.Usage(); ok {
			st.Counted, st.Bytes, st.Blobs = true, u.Bytes, u.Blobs
		}
		st.FilesystemBytes, st.FilesystemFreeBytes, _ = r.src.Store.Filesystem()
	}
	if e := r.src.Evictions; e != nil {
		st.LimitBytes = e.MaxSize()
		st.Evicted = &Evicted{Runs: e.Runs(), Images: e.EvictedImages(), Bytes: e.EvictedBytes()}
	}
	switch {
	case st.LimitBytes > 0 && st.Counted && st.Bytes > st.LimitBytes*9/10:
		*problems = append(*problems, "the store is above 90% of its limit")
	case st.FilesystemBytes > 0 && st.FilesystemFreeBytes < st.FilesystemBytes/10:
		*problems = append(*problems, "the store's filesystem has less than 10% free")
	}
	if st.StorageFullEvents > 0 {
		*problems = append(*problems, "fills were refused for lack of room since start (storage full)")
	}
	return st
}

// lastHour sums minutes into the hit ratio of the hour.
func lastHour(minutes []Minute) HitRatio {
	h := HitRatio{Minutes: minutes}
	if h.Minutes == nil {
		h.Minutes = []Minute{}
	}
	for _, m := range minutes {
		h.Hits += m.Hits
		h.Misses += m.Misses
		h.Stale += m.Stale
		h.StoreBytes += m.StoreBytes
		h.FetchedBytes += m.FetchedBytes
	}
	h.Ratio = ratio(h.Hits+h.Stale, h.Misses)
	return h
}

// loginServer is the registry host of a rule's source repository.
func loginServer(source string) string {
	host, _, _ := strings.Cut(source, "/")
	return host
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

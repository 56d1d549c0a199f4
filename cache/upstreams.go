package cache

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Upstreams is what regcache knows about its upstreams as a whole, shared
// by every request that leaves for one: whether it may contact any at all
// (offline mode), which asked it to wait (429 with Retry-After) and until
// when, and the pull limits they announce (ratelimit-limit and
// ratelimit-remaining, as Docker Hub sends them), per credential set.
//
// Its Transport enforces the first two on every upstream request, the
// puller's and the credential sets' health checks alike, before any
// connection is made, and records the other two from every answer. The
// puller also asks before it builds a request (Puller.Manifest, Blob and
// the rest answer at once, with an error naming the login server).
type Upstreams struct {
	offline     bool
	now         func() time.Time
	defaultWait time.Duration
	maxWait     time.Duration

	mu     sync.Mutex
	waits  map[string]time.Time // endpoint host -> no request before
	limits map[limitKey]RateLimit

	rateLimited atomic.Int64 // 429 answers seen
	held        atomic.Int64 // requests not sent: waiting or offline
}

type limitKey struct{ host, set string }

// UpstreamsOptions tune Upstreams; zero values take the defaults.
type UpstreamsOptions struct {
	// Offline: no request ever leaves for an upstream.
	Offline bool
	// DefaultWait is how long an upstream that answered 429 without a
	// usable Retry-After is left alone (default 1m).
	DefaultWait time.Duration
	// MaxWait caps a Retry-After (default 1h): an upstream asking for more
	// is asked again after this.
	MaxWait time.Duration
	// Now returns the current time (tests).
	Now func() time.Time
}

// NewUpstreams returns the shared state of the upstreams.
func NewUpstreams(o UpstreamsOptions) *Upstreams {
	if o.DefaultWait <= 0 {
		o.DefaultWait = time.Minute
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Upstreams{offline: o.Offline, now: o.Now, defaultWait: o.DefaultWait, maxWait: o.MaxWait,
		waits: map[string]time.Time{}, limits: map[limitKey]RateLimit{}}
}

// Offline reports whether regcache contacts no upstream.
func (u *Upstreams) Offline() bool { return u.offline }

// errOffline is the error of a request regcache does not send because it
// runs offline.
var errOffline = fmt.Errorf("%w: regcache runs with --offline and contacts no upstream", ErrOffline)

// WaitError is a request regcache did not send because the upstream
// answered 429 Too Many Requests and the time it asked for has not
// passed. It is ErrTooManyRequests for errors.Is.
type WaitError struct {
	// Upstream names the upstream: its login server when known, else the
	// endpoint's host.
	Upstream string
	// Until is when requests to it resume.
	Until time.Time
	// Left is how long that is from when the request was refused.
	Left time.Duration
}

// Error says which upstream, until when, and that cached content is
// still served.
func (e *WaitError) Error() string {
	return fmt.Sprintf("upstream %s answered 429 Too Many Requests: regcache sends it nothing until %s (in %v); cached content is still served",
		e.Upstream, e.Until.UTC().Format(time.RFC3339), e.Left.Round(time.Second))
}

// Unwrap makes a WaitError an ErrTooManyRequests.
func (e *WaitError) Unwrap() error { return ErrTooManyRequests }

// RetryAfter is how long a client should wait before asking again.
func (e *WaitError) RetryAfter() time.Duration { return e.Left }

// gate returns the reason no request may go to the endpoint host now
// (name is what the error calls it), or nil.
func (u *Upstreams) gate(host, name string) error {
	if u.offline {
		u.held.Add(1)
		return errOffline
	}
	u.mu.Lock()
	until, ok := u.waits[host]
	u.mu.Unlock()
	if !ok {
		return nil
	}
	now := u.now()
	if !now.Before(until) {
		u.mu.Lock()
		if w, ok := u.waits[host]; ok && !now.Before(w) {
			delete(u.waits, host)
		}
		u.mu.Unlock()
		return nil
	}
	u.held.Add(1)
	if name == "" {
		name = host
	}
	return &WaitError{Upstream: name, Until: until, Left: until.Sub(now)}
}

// credSetKey carries the credential set of an upstream request in its
// context, so that the transport records rate limits per set.
type credSetKey struct{}

func withCredentialSet(ctx context.Context, set string) context.Context {
	return context.WithValue(ctx, credSetKey{}, set)
}

// observe records what an upstream's answer says about its limits.
func (u *Upstreams) observe(req *http.Request, resp *http.Response) {
	host := req.URL.Host
	now := u.now()
	if limit, window, ok := rateLimitHeader(resp.Header.Get("RateLimit-Limit")); ok {
		remaining, _, rok := rateLimitHeader(resp.Header.Get("RateLimit-Remaining"))
		set, _ := req.Context().Value(credSetKey{}).(string)
		rl := RateLimit{Host: host, CredentialSet: set, Limit: limit, Remaining: -1, WindowSeconds: window, ObservedAt: now}
		if rok {
			rl.Remaining = remaining
		}
		u.mu.Lock()
		u.limits[limitKey{host, set}] = rl
		u.mu.Unlock()
	}
	if resp.StatusCode != http.StatusTooManyRequests {
		return
	}
	u.rateLimited.Add(1)
	until := now.Add(u.retryAfter(resp.Header.Get("Retry-After"), now))
	u.mu.Lock()
	if until.After(u.waits[host]) {
		u.waits[host] = until
	}
	u.mu.Unlock()
}

// retryAfter reads a Retry-After header (seconds, or an HTTP date) as a
// wait from now, within [1s, MaxWait]; DefaultWait when absent or
// unreadable.
func (u *Upstreams) retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	d := u.defaultWait
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil && secs >= 0 {
		d = time.Duration(min(secs, int64(u.maxWait/time.Second)+1)) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, time.Second), u.maxWait)
}

// rateLimitHeader reads "100;w=21600" (the form Docker Hub sends; a bare
// number too): the number and the window in seconds (0 when absent).
func rateLimitHeader(h string) (n, window int64, ok bool) {
	if h == "" {
		return 0, 0, false
	}
	first, _, _ := strings.Cut(h, ",")
	num, params, _ := strings.Cut(first, ";")
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	for _, p := range strings.Split(params, ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && k == "w" {
			window, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return n, window, true
}

// RateLimit is the pull limit an upstream last announced for requests
// with one credential set.
type RateLimit struct {
	// Host is the endpoint's host.
	Host string `json:"host"`
	// CredentialSet is "" for anonymous requests.
	CredentialSet string `json:"credentialSet,omitempty"`
	Limit         int64  `json:"limit"`
	// Remaining is -1 when the upstream sent a limit but no remainder.
	Remaining     int64     `json:"remaining"`
	WindowSeconds int64     `json:"windowSeconds,omitempty"`
	ObservedAt    time.Time `json:"observedAt"`
}

// RateLimits returns the limits recorded, by host and credential set.
func (u *Upstreams) RateLimits() []RateLimit {
	u.mu.Lock()
	out := make([]RateLimit, 0, len(u.limits))
	for _, l := range u.limits {
		out = append(out, l)
	}
	u.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].CredentialSet < out[j].CredentialSet
	})
	return out
}

// RateLimit returns the limit recorded for host and credential set.
func (u *Upstreams) RateLimit(host, set string) (RateLimit, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	l, ok := u.limits[limitKey{host, set}]
	return l, ok
}

// Waits returns, by endpoint host, until when each upstream that answered
// 429 is left alone (those whose wait passed are not listed).
func (u *Upstreams) Waits() map[string]time.Time {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]time.Time{}
	for h, t := range u.waits {
		if now.Before(t) {
			out[h] = t
		}
	}
	return out
}

// RateLimited counts the 429 answers upstreams gave.
func (u *Upstreams) RateLimited() int64 { return u.rateLimited.Load() }

// Held counts the upstream requests not sent because regcache was
// offline or waiting out a 429.
func (u *Upstreams) Held() int64 { return u.held.Load() }

// Transport wraps base: a request to an upstream regcache must not
// contact now fails at once, without a connection; every answer is
// observed.
func (u *Upstreams) Transport(base http.RoundTripper) http.RoundTripper {
	return upstreamsTransport{u: u, base: base}
}

type upstreamsTransport struct {
	u    *Upstreams
	base http.RoundTripper
}

// RoundTrip refuses a request regcache must not send now, and observes
// the answer of every other.
func (t upstreamsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.u.gate(req.URL.Host, ""); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		t.u.observe(req, resp)
	}
	return resp, err
}

// CloseIdleConnections closes the idle connections of the base transport.
func (t upstreamsTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

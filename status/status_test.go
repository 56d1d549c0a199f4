package status_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/status"
	"github.com/regcache/regcache/storage"
)

// The sources below are fixed answers: the summary is a pure function of
// them (the real owners are wired in cmd/regcache and exercised end to
// end).

type rules []cache.Rule

func (r rules) List() []cache.Rule { return r }
func (rules) Endpoint(r cache.Rule) string {
	host, _, _ := strings.Cut(r.Source, "/")
	return "https://" + host
}

type activity struct {
	counts    map[string]status.Counts
	upstreams map[string]status.UpstreamActivity
	minutes   []status.Minute
}

func (a activity) RuleCounts() map[string]status.Counts                 { return a.counts }
func (a activity) UpstreamActivity() map[string]status.UpstreamActivity { return a.upstreams }
func (a activity) Minutes(time.Time) []status.Minute                    { return a.minutes }

type fills struct{ full int64 }

func (fills) FillsRunning() int          { return 2 }
func (fills) FillsQueued() int64         { return 1 }
func (f fills) StorageFullEvents() int64 { return f.full }

type sets []credentials.Set

func (s sets) List(context.Context) []credentials.Set { return s }

type store struct {
	u          storage.Usage
	counted    bool
	size, free uint64
}

func (s store) Usage() (storage.Usage, bool)       { return s.u, s.counted }
func (s store) Filesystem() (uint64, uint64, bool) { return s.size, s.free, s.size > 0 }

type evictions struct{}

func (evictions) Runs() int64          { return 1 }
func (evictions) EvictedImages() int64 { return 3 }
func (evictions) EvictedBytes() int64  { return 300 }
func (evictions) MaxSize() int64       { return 1000 }

func TestSummary(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 30, 0, time.UTC)
	checked := now.Add(-time.Minute)
	src := status.Sources{
		Rules: rules{
			{Name: "hub", Source: "docker.io/library/*", Target: "hub/*", CredentialSet: "hub-creds", Origin: "config"},
			{Name: "ghcr", Source: "ghcr.io/org/*", Target: "ghcr/*", Origin: "api"},
			{Name: "quay", Source: "quay.io/org/app", Target: "app", Origin: "api"},
		},
		Activity: activity{
			counts: map[string]status.Counts{"hub": {Hits: 9, Misses: 1, StoreBytes: 900}},
			upstreams: map[string]status.UpstreamActivity{
				"docker.io": {LastStatus: 200, LastContact: now, Requests: 4},
				"ghcr.io":   {LastStatus: 503, LastContact: now, LastError: "GET ghcr.io answered 503", LastErrorAt: now, Requests: 2, Errors: 2},
			},
			minutes: []status.Minute{
				{Start: now.Add(-2 * time.Minute), Hits: 4, Misses: 1, StoreBytes: 400, FetchedBytes: 100},
				{Start: now.Add(-time.Minute), Hits: 5, Stale: 1, StoreBytes: 500},
			},
		},
		Fills: fills{full: 2},
		CredentialSets: sets{
			{Name: "hub-creds", LoginServer: "docker.io", Status: credentials.Status{State: credentials.StateUnhealthy, Reason: "upstream docker.io rejected the credentials", CheckedAt: checked}},
			{Name: "spare", LoginServer: "ghcr.io", Status: credentials.Status{State: credentials.StateHealthy, CheckedAt: checked}},
		},
		Store:     store{u: storage.Usage{Bytes: 950, Blobs: 12}, counted: true, size: 10000, free: 5000},
		Evictions: evictions{},
	}
	s := status.NewReporter(src, "v1.2.3", now.Add(-time.Hour), func() time.Time { return now }).Status(t.Context())

	if len(s.Rules) != 3 || s.Rules[0].Name != "hub" || s.Rules[0].Hits != 9 || s.Rules[1].Hits != 0 {
		t.Errorf("rules: %+v", s.Rules)
	}
	if got := s.Rules[0].Ratio(); got != 0.9 {
		t.Errorf("hub ratio %v, want 0.9", got)
	}
	if s.CredentialSets[0].State != credentials.StateUnhealthy || !slices.Equal(s.CredentialSets[0].Rules, []string{"hub"}) ||
		len(s.CredentialSets[1].Rules) != 0 || s.CredentialSets[1].Rules == nil {
		t.Errorf("credential sets: %+v", s.CredentialSets)
	}
	states := map[string]string{}
	for _, u := range s.Upstreams {
		states[u.Name] = u.State
	}
	if want := map[string]string{"docker.io": "reachable", "ghcr.io": "failing", "quay.io": "unknown"}; !mapsEqual(states, want) {
		t.Errorf("upstream states %v, want %v", states, want)
	}
	if u := s.Upstreams[0]; u.Name != "docker.io" || u.Endpoint != "https://docker.io" || !slices.Equal(u.Rules, []string{"hub"}) {
		t.Errorf("upstream docker.io: %+v", u)
	}
	if st := s.Store; !st.Counted || st.Bytes != 950 || st.LimitBytes != 1000 || st.Evicted == nil || st.Evicted.Images != 3 || st.Evicted.Runs != 1 || st.StorageFullEvents != 2 {
		t.Errorf("store: %+v", st)
	}
	if s.Fills.Running != 2 || s.Fills.Queued != 1 {
		t.Errorf("fills: %+v", s.Fills)
	}
	h := s.LastHour
	if h.Hits != 9 || h.Misses != 1 || h.Stale != 1 || h.StoreBytes != 900 || h.FetchedBytes != 100 || h.Ratio != 10.0/11 {
		t.Errorf("last hour: %+v", h)
	}
	wantProblems := []string{
		"credential set hub-creds is unhealthy: upstream docker.io rejected the credentials",
		"upstream ghcr.io is failing: GET ghcr.io answered 503",
		"the store is above 90% of its limit",
		"fills were refused for lack of room since start (storage full)",
	}
	if !slices.Equal(s.Problems, wantProblems) {
		t.Errorf("problems:\n%q\nwant\n%q", s.Problems, wantProblems)
	}
	if s.RateLimits != nil {
		t.Errorf("rate limits without a source: %+v", s.RateLimits)
	}
}

// TestSummaryWithoutActivity: a regcache without metrics (or just
// started, with nothing configured) still has a complete summary.
func TestSummaryWithoutActivity(t *testing.T) {
	t.Parallel()
	s := status.NewReporter(status.Sources{Rules: rules{}, Fills: fills{}}, "", time.Now(), nil).Status(t.Context())
	if s.Problems == nil || s.Rules == nil || s.CredentialSets == nil || s.Upstreams == nil || s.LastHour.Minutes == nil || s.LastHour.Ratio != -1 {
		t.Errorf("empty summary has nil lists or a ratio without reads: %+v", s)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ got, want string }{
		{status.Bytes(0), "0 B"},
		{status.Bytes(1023), "1023 B"},
		{status.Bytes(1536), "1.5 KiB"},
		{status.Bytes(200 << 20), "200 MiB"},
		{status.Bytes(5 << 40), "5.0 TiB"},
		{status.Count(1234567), "1,234,567"},
		{status.Count(-1000), "-1,000"},
		{status.Count(12), "12"},
		{status.Percent(-1), "–"},
		{status.Percent(1), "100%"},
		{status.Percent(0.875), "87.5%"},
		{status.Percent(0), "0%"},
		{status.Duration(40 * time.Second), "40s"},
		{status.Duration(90 * time.Minute), "1h 30m"},
		{status.Duration(50 * time.Hour), "2d 2h"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

package cache

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/regcache/regcache/storage"
)

// setClock makes the puller and its upstream state read time from c.
func (f *fixture) setClock(c *clock) {
	f.puller.opts.Now = c.now
	f.puller.opts.Upstreams.now = c.now
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// newClockedFixture is newFixture with an injected clock.
func newClockedFixture(t *testing.T, creds Credentials, rules ...Rule) (*fixture, *clock) {
	t.Helper()
	f := newFixture(t, creds, rules...)
	c := newClock()
	f.setClock(c)
	return f, c
}

// cachedBlob reads blob digest of repo through the puller and waits until
// it is stored (its fill, if any, ended).
func cachedBlob(t *testing.T, f *fixture, repo, digest string) []byte {
	t.Helper()
	c, err := f.puller.Blob(t.Context(), repo, digest)
	b := readAll(t, c, err)
	if err := fillEnded(t, c); err != nil {
		t.Fatal(err)
	}
	return b
}

// upstreamRequests counts every request the upstream proxy received.
func (f *fixture) upstreamRequests() int64 {
	var n int64
	f.requests.Range(func(_, v any) bool {
		n += v.(*atomic.Int64).Load()
		return true
	})
	return n
}

// TestUnchangedTagHeadsOnly: once a tag's TTL passed, an unchanged tag
// costs the upstream a HEAD per TTL window and never a GET.
func TestUnchangedTagHeadsOnly(t *testing.T) {
	t.Parallel()
	f, c := newClockedFixture(t, Anonymous{}, hubRule)
	f.push(t, "library/app:v1")
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	for range 5 {
		c.add(DefaultTagTTL + time.Second)
		reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	}
	if heads, gets := f.count(http.MethodHead, "/v2/library/app/manifests/v1"), f.count(http.MethodGet, "/v2/library/app/manifests/v1"); heads != 5 || gets != 1 {
		t.Fatalf("5 TTL windows of an unchanged tag: %d HEADs and %d GETs upstream, want 5 and 1", heads, gets)
	}
}

// TestConcurrentRevalidationsOneHead: 100 pulls of a stale tag at once
// make one HEAD. The upstream's answer is held until every pull started
// revalidating, so each of them would have sent its own.
func TestConcurrentRevalidationsOneHead(t *testing.T) {
	t.Parallel()
	f, c := newClockedFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	want, _ := img.Digest()
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	c.add(DefaultTagTTL + time.Second)

	const pulls = 100
	var entered atomic.Int64
	all := make(chan struct{})
	f.puller.fresh.revalidating = func() {
		if entered.Add(1) == pulls {
			close(all)
		}
	}
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead {
			select {
			case <-all:
			case <-time.After(gateWaitLimit):
			}
		}
		return false
	})
	var wg sync.WaitGroup
	errs := make(chan error, pulls)
	for range pulls {
		wg.Go(func() {
			m, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
			if err != nil {
				errs <- err
				return
			}
			m.Body.Close()
			if m.Digest != want.String() {
				errs <- errors.New("served " + m.Digest)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := f.count(http.MethodHead, "/v2/library/app/manifests/v1"); n != 1 {
		t.Fatalf("%d concurrent revalidations sent %d HEADs, want 1", pulls, n)
	}
	if n := f.count(http.MethodGet, "/v2/library/app/manifests/v1"); n != 1 {
		t.Fatalf("%d GETs of the unchanged tag, want the first one only", n)
	}
}

// TestMissingManifestRemembered: a tag the upstream does not have, asked
// for 50 times in a row, reaches the upstream once per NotFoundTTL.
func TestMissingManifestRemembered(t *testing.T) {
	t.Parallel()
	f, c := newClockedFixture(t, Anonymous{}, hubRule)
	f.push(t, "library/app:v1")
	var afterFirst int64
	for i := range 50 {
		if _, err := f.puller.Manifest(t.Context(), "hub/app", "typo"); !errors.Is(err, ErrManifestUnknown) {
			t.Fatalf("request %d: %v, want ErrManifestUnknown", i+1, err)
		}
		if i == 0 {
			afterFirst = f.upstreamRequests() // the GET, and the authentication ping
		}
	}
	gets := func() int64 { return f.count(http.MethodGet, "/v2/library/app/manifests/typo") }
	if n := f.upstreamRequests(); gets() != 1 || n != afterFirst {
		t.Fatalf("50 requests for a missing tag: %d GETs of it upstream (%d requests after the first), want 1 (none)", gets(), n-afterFirst)
	}
	if h := f.puller.NotFoundHits(); h != 49 {
		t.Fatalf("NotFoundHits = %d, want 49", h)
	}
	c.add(DefaultNotFoundTTL)
	f.puller.Manifest(t.Context(), "hub/app", "typo")
	if gets() != 2 {
		t.Fatalf("after the TTL: %d GETs upstream, want 2", gets())
	}
	// Another tag is asked for.
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
}

// TestRetryAfter: an upstream that answered 429 with Retry-After receives
// nothing until that time passed: cached tags are served, uncached
// content is answered TOOMANYREQUESTS with the time left; afterwards
// requests resume.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	f, c := newClockedFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	f.push(t, "library/app:v2")
	want, _ := img.Digest()
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	var limited atomic.Bool
	limited.Store(true)
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if !limited.Load() {
			return false
		}
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	})
	c.add(DefaultTagTTL + time.Second)
	m, err := f.puller.Manifest(t.Context(), "hub/app", "v1") // the HEAD meets the 429
	if got := readAll(t, m, err); m.Digest != want.String() || len(got) == 0 {
		t.Fatalf("cached tag during a 429: %s", m.Digest)
	}
	before := f.upstreamRequests()
	limited.Store(false) // the upstream would answer now: regcache must not ask
	c.add(10 * time.Second)
	for range 10 {
		reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	}
	_, err = f.puller.Manifest(t.Context(), "hub/app", "v2")
	var wait *WaitError
	if !errors.Is(err, ErrTooManyRequests) || !errors.As(err, &wait) || wait.RetryAfter() != 20*time.Second {
		t.Fatalf("uncached tag during the wait: %v, want ErrTooManyRequests retrying after 20s", err)
	}
	if _, err := f.puller.Blob(t.Context(), "hub/app", "sha256:"+strings.Repeat("1", 64)); !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("uncached blob during the wait: %v, want ErrTooManyRequests", err)
	}
	if n := f.upstreamRequests(); n != before {
		t.Fatalf("%d requests reached the upstream during its Retry-After window", n-before)
	}
	if waits := f.puller.Upstreams().Waits(); len(waits) != 1 {
		t.Fatalf("Waits() = %v, want the upstream", waits)
	}
	c.add(20 * time.Second)
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v2"))
	if f.upstreamRequests() == before {
		t.Fatal("requests did not resume once the Retry-After window passed")
	}
}

// TestRateLimitsRecorded: the ratelimit-limit and ratelimit-remaining
// headers of upstream answers are recorded per upstream and credential
// set, and a rule's status shows those of its own set.
func TestRateLimitsRecorded(t *testing.T) {
	t.Parallel()
	creds := staticCreds{"hub-creds": &authn.Basic{Username: "u", Password: "p"}}
	anon := Rule{Name: "anon-app", Source: "docker.io/library/app", Target: "anon"}
	authed := Rule{Name: "authed-app", Source: "docker.io/library/other", Target: "authed", CredentialSet: "hub-creds"}
	f := newFixture(t, creds, anon, authed)
	f.push(t, "library/app:v1")
	f.push(t, "library/other:v1")
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if _, _, ok := r.BasicAuth(); ok {
			w.Header().Set("RateLimit-Limit", "200;w=21600")
			w.Header().Set("RateLimit-Remaining", "150;w=21600")
		} else {
			w.Header().Set("RateLimit-Limit", "100;w=21600")
			w.Header().Set("RateLimit-Remaining", "76;w=21600")
		}
		f.forward(w, r, nil)
		return true
	})
	reader(t)(f.puller.Manifest(t.Context(), "anon", "v1"))
	reader(t)(f.puller.Manifest(t.Context(), "authed", "v1"))
	for _, tc := range []struct {
		rule             Rule
		limit, remaining int64
	}{{anon, 100, 76}, {authed, 200, 150}} {
		st := f.puller.UpstreamStatus(tc.rule)
		if st.RateLimit == nil || st.RateLimit.Limit != tc.limit || st.RateLimit.Remaining != tc.remaining || st.RateLimit.WindowSeconds != 21600 ||
			st.RateLimit.CredentialSet != tc.rule.CredentialSet {
			t.Errorf("rule %s: rate limit %+v, want %d of %d left per 21600s for set %q", tc.rule.Name, st.RateLimit, tc.remaining, tc.limit, tc.rule.CredentialSet)
		}
	}
	if n := len(f.puller.Upstreams().RateLimits()); n != 2 {
		t.Errorf("%d rate limits recorded, want 2 (one per credential set)", n)
	}
}

// TestTagTTLNever: a rule with tagTTL never keeps the first digest
// fetched, however long ago and whatever the upstream says, until an
// operator refreshes it.
func TestTagTTLNever(t *testing.T) {
	t.Parallel()
	pinned := hubRule
	pinned.TagTTL = TagTTLNever
	f, c := newClockedFixture(t, Anonymous{}, pinned)
	first := f.push(t, "library/app:v1")
	fd, _ := first.Digest()
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	moved := f.push(t, "library/app:v1")
	md, _ := moved.Digest()
	c.add(365 * 24 * time.Hour)
	m, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
	readAll(t, m, err)
	if m.Digest != fd.String() || f.count(http.MethodHead, "/v2/library/app/manifests/v1") != 0 {
		t.Fatalf("a pinned tag a year later: served %s with %d HEADs; want the first digest %s and none",
			m.Digest, f.count(http.MethodHead, "/v2/library/app/manifests/v1"), fd)
	}
	got, err := f.puller.Refresh(t.Context(), pinned.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Result != "updated" || got[0].Before != fd.String() || got[0].After != md.String() {
		t.Fatalf("Refresh = %+v, want hub/app:v1 updated from %s to %s", got, fd, md)
	}
	m, err = f.puller.Manifest(t.Context(), "hub/app", "v1")
	readAll(t, m, err)
	if m.Digest != md.String() {
		t.Fatalf("after the refresh: served %s, want %s", m.Digest, md)
	}
	if _, err := f.puller.Refresh(t.Context(), pinned.Name, []string{"hub/app:nope"}); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("refresh of a tag not cached: %v", err)
	}
}

// TestMaxStale: during an upstream outage a cached tag is served only
// while the upstream confirmed it within the rule's maxStale.
func TestMaxStale(t *testing.T) {
	t.Parallel()
	rule := hubRule
	rule.MaxStale = "1h"
	f, c := newClockedFixture(t, Anonymous{}, rule)
	f.puller.opts.RevalidateTimeout = time.Second
	f.push(t, "library/app:v1")
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	c.add(59 * time.Minute)
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	c.add(2 * time.Minute)
	if _, err := f.puller.Manifest(t.Context(), "hub/app", "v1"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "maxStale") {
		t.Fatalf("61 minutes after the last confirmation, upstream down: %v, want ErrUnavailable naming maxStale", err)
	}
	// The upstream is back: confirmed again, served again.
	f.fault.Store(func(http.ResponseWriter, *http.Request) bool { return false })
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
}

// TestDeletedTags: a tag deleted upstream stays served by default; a
// rule with deletedTags forget removes it.
func TestDeletedTags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy string
		served bool
	}{{"", true}, {DeletedTagsForget, false}} {
		t.Run("policy="+tc.policy, func(t *testing.T) {
			t.Parallel()
			rule := hubRule
			rule.DeletedTags = tc.policy
			f, c := newClockedFixture(t, Anonymous{}, rule)
			img := f.push(t, "library/app:v1")
			want, _ := img.Digest()
			reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
			f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.HasSuffix(r.URL.Path, "/manifests/v1") {
					w.WriteHeader(http.StatusNotFound)
					return true
				}
				return false
			})
			c.add(DefaultTagTTL + time.Second)
			m, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
			if tc.served {
				if got := readAll(t, m, err); m.Digest != want.String() || !bytes.Contains(got, []byte("schemaVersion")) {
					t.Fatalf("deleted upstream, policy serve: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrManifestUnknown) || !strings.Contains(err.Error(), "deleted") {
				t.Fatalf("deleted upstream, policy forget: %v, want ErrManifestUnknown", err)
			}
			if _, err := f.meta.Tag(t.Context(), "hub/app", "v1"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("the tag is still cached: %v", err)
			}
		})
	}
}

// TestOffline: an offline puller serves what is cached (a stale tag
// without a HEAD) and answers anything else at once with ErrOffline;
// the upstream receives nothing.
func TestOffline(t *testing.T) {
	t.Parallel()
	f, c := newClockedFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	f.push(t, "library/app:v2")
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	cachedBlob(t, f, "hub/app", ld.String())
	before := f.upstreamRequests()
	f.puller.opts.Upstreams.offline = true
	c.add(24 * time.Hour)
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	reader(t)(f.puller.Blob(t.Context(), "hub/app", ld.String()))
	if pg, err := f.puller.Tags(t.Context(), "hub/app", "", -1); err != nil || len(pg.Tags) != 1 {
		t.Fatalf("Tags offline = %v, %v; want the cached one", pg.Tags, err)
	}
	for what, err := range map[string]error{
		"manifest": func() error { _, err := f.puller.Manifest(t.Context(), "hub/app", "v2"); return err }(),
		"blob": func() error {
			_, err := f.puller.Blob(t.Context(), "hub/app", "sha256:"+strings.Repeat("2", 64))
			return err
		}(),
		"stat": func() error {
			_, err := f.puller.StatBlob(t.Context(), "hub/app", "sha256:"+strings.Repeat("2", 64))
			return err
		}(),
	} {
		if !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "offline") {
			t.Errorf("uncached %s offline: %v, want ErrOffline", what, err)
		}
	}
	if n := f.upstreamRequests(); n != before {
		t.Fatalf("%d requests reached the upstream while offline", n-before)
	}
}

// TestVanishedBlobIsFetchedAgain: a reader that opened a blob keeps
// reading all of it after its bytes are removed (eviction); a reader that
// comes after finds the link gone or the bytes gone and fetches the blob
// again, never a short body.
func TestVanishedBlobIsFetchedAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	want := cachedBlob(t, f, "hub/app", ld.String())
	open, err := f.puller.Blob(t.Context(), "hub/app", ld.String())
	if err != nil {
		t.Fatal(err)
	}
	// Bytes gone, link still there (the moment between the two).
	if err := f.blobs.Remove(t.Context(), ld.String()); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, open, nil); !bytes.Equal(got, want) {
		t.Fatalf("a reader that opened the blob before its removal read %d bytes, want %d", len(got), len(want))
	}
	c, err := f.puller.Blob(t.Context(), "hub/app", ld.String())
	if got := readAll(t, c, err); !bytes.Equal(got, want) {
		t.Fatalf("after the removal: %d bytes, want %d", len(got), len(want))
	}
	fillEnded(t, c)
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+ld.String()); n != 2 {
		t.Fatalf("%d upstream GETs, want 2 (the blob fetched again)", n)
	}
}

// TestVanishedBlobIsFetchedAgainAfterConfirmation: a reader of another
// repository whose upstream confirmed stored bytes just before they went
// fetches the blob rather than failing.
func TestVanishedBlobIsFetchedAgainAfterConfirmation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule, Rule{Name: "other-app", Source: "docker.io/other/app", Target: "other"})
	img := f.push(t, "library/app:v1")
	f.push(t, "other/app:v1") // the ggcr registry shares blobs across repositories
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	want := cachedBlob(t, f, "hub/app", ld.String())
	// The other repository's upstream confirms the stored bytes, which
	// an eviction removes right then.
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead && strings.HasPrefix(r.URL.Path, "/v2/other/app/blobs/") {
			f.blobs.Remove(r.Context(), ld.String())
		}
		return false
	})
	c, err := f.puller.Blob(t.Context(), "other", ld.String())
	if got := readAll(t, c, err); !bytes.Equal(got, want) {
		t.Fatalf("bytes vanished after the confirmation: %d bytes, want %d", len(got), len(want))
	}
	if n := f.count(http.MethodGet, "/v2/other/app/blobs/"+ld.String()); n != 1 {
		t.Fatalf("%d GETs from the other repository's upstream, want 1 (fetched again)", n)
	}
}

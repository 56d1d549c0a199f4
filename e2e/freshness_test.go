package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
)

// countingUpstream is a small proxy in front of a real registry that
// counts requests per "METHOD path", announces a pull limit on every
// answer, and can hold a path's HEADs or answer 429.
type countingUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	counts   map[string]int
	hold     map[string]chan struct{} // path -> released when closed
	limited  atomic.Bool
	received atomic.Int64
}

func newCountingUpstream(t *testing.T, target string) *countingUpstream {
	t.Helper()
	c := &countingUpstream{counts: map[string]int{}, hold: map[string]chan struct{}{}}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.received.Add(1)
		c.mu.Lock()
		c.counts[r.Method+" "+r.URL.Path]++
		gate := c.hold[r.URL.Path]
		c.mu.Unlock()
		if gate != nil && r.Method == http.MethodHead {
			<-gate
		}
		w.Header().Set("RateLimit-Limit", "100;w=21600")
		w.Header().Set("RateLimit-Remaining", "76;w=21600")
		if c.limited.Load() {
			w.Header().Set("Retry-After", "3600")
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"pull limit"}]}`, http.StatusTooManyRequests)
			return
		}
		resp, ok := relay(w, r, tr, target)
		if !ok {
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *countingUpstream) count(method, path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[method+" "+path]
}

// pullManifest GETs a manifest from regcache and returns the status.
func pullManifest(t *testing.T, url string, onWritten func()) (int, http.Header) {
	t.Helper()
	ctx := t.Context()
	if onWritten != nil {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { onWritten() }})
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// TestFreshnessAgainstCountingUpstream runs the binary against a counting
// proxy in front of a real registry:
//
//   - an unchanged tag of a rule that revalidates on every pull costs a
//     HEAD per pull and no GET after the first;
//   - 100 pulls of a stale tag at once make one HEAD (the proxy holds it
//     until every pull was sent);
//   - a missing tag asked for 50 times in a row reaches the upstream once;
//   - the pull limit the upstream announces is shown by `regcache cache
//     show`;
//   - after a 429 with Retry-After, nothing reaches the upstream: cached
//     tags are served, an uncached one is answered 429 with a Retry-After.
func TestFreshnessAgainstCountingUpstream(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	peers.SeedImage(t, u.Host+"/library/fresh:v1", false)
	peers.SeedImage(t, u.Host+"/library/burst:v1", false)
	up := newCountingUpstream(t, u.URL())
	rc := startRegcacheWithConfig(t, bin, `rules:
  - name: fresh-app
    source: docker.io/library/fresh
    target: fresh
    tagTTL: 0s
  - name: burst-app
    source: docker.io/library/burst
    target: burst
    tagTTL: 5s
`, "docker.io="+up.URL)

	t.Run("unchanged tag: HEADs, no GETs", func(t *testing.T) {
		for range 5 {
			if code, _ := pullManifest(t, rc.URL()+"/v2/fresh/manifests/v1", nil); code != http.StatusOK {
				t.Fatalf("pull: %d", code)
			}
		}
		if h, g := up.count(http.MethodHead, "/v2/library/fresh/manifests/v1"), up.count(http.MethodGet, "/v2/library/fresh/manifests/v1"); h != 4 || g != 1 {
			t.Fatalf("5 pulls of an unchanged tag (tagTTL 0s): %d HEADs and %d GETs upstream, want 4 and 1", h, g)
		}
	})

	t.Run("100 concurrent revalidations, one HEAD", func(t *testing.T) {
		path := "/v2/library/burst/manifests/v1"
		if code, _ := pullManifest(t, rc.URL()+"/v2/burst/manifests/v1", nil); code != http.StatusOK {
			t.Fatalf("first pull: %d", code)
		}
		// The tag goes stale (tagTTL 5s); its HEAD will be held until all
		// 100 pulls were sent to regcache.
		gate := make(chan struct{})
		up.mu.Lock()
		up.hold[path] = gate
		up.mu.Unlock()
		time.Sleep(5*time.Second + 100*time.Millisecond)
		const pulls = 100
		var sent atomic.Int64
		var wg sync.WaitGroup
		for range pulls {
			wg.Go(func() {
				code, _ := pullManifest(t, rc.URL()+"/v2/burst/manifests/v1", func() {
					if sent.Add(1) == pulls {
						close(gate)
					}
				})
				if code != http.StatusOK {
					t.Errorf("pull: %d", code)
				}
			})
		}
		wg.Wait()
		if h := up.count(http.MethodHead, path); h != 1 {
			t.Fatalf("%d pulls of a stale tag at once made %d HEADs upstream, want 1", pulls, h)
		}
		if g := up.count(http.MethodGet, path); g != 1 {
			t.Fatalf("%d GETs of the unchanged tag, want the first one only", g)
		}
	})

	t.Run("a missing tag 50 times", func(t *testing.T) {
		for i := range 50 {
			if code, _ := pullManifest(t, rc.URL()+"/v2/burst/manifests/typo", nil); code != http.StatusNotFound {
				t.Fatalf("pull %d of a missing tag: %d, want 404", i+1, code)
			}
		}
		if g := up.count(http.MethodGet, "/v2/library/burst/manifests/typo"); g != 1 {
			t.Fatalf("50 pulls of a missing tag: %d upstream GETs, want 1", g)
		}
	})

	t.Run("pull limit shown", func(t *testing.T) {
		out := adminCLI(t, bin, rc, "cache", "show", "-n", "burst-app", "-o", "table")
		if !strings.Contains(out, "upstream pull limit (anonymous): 76 of 100 left per 6h0m0s") {
			t.Fatalf("cache show does not show the announced pull limit:\n%s", out)
		}
	})

	t.Run("Retry-After", func(t *testing.T) {
		up.limited.Store(true)
		// A revalidation (tagTTL 0s) meets the 429; the cached tag is served.
		if code, _ := pullManifest(t, rc.URL()+"/v2/fresh/manifests/v1", nil); code != http.StatusOK {
			t.Fatalf("cached tag when the upstream answers 429: %d", code)
		}
		before := up.received.Load()
		up.limited.Store(false) // it would answer now: regcache must not ask
		for range 10 {
			if code, _ := pullManifest(t, rc.URL()+"/v2/fresh/manifests/v1", nil); code != http.StatusOK {
				t.Fatalf("cached tag during the wait: %d", code)
			}
		}
		code, h := pullManifest(t, rc.URL()+"/v2/burst/manifests/v2", nil)
		ra, _ := strconv.Atoi(h.Get("Retry-After"))
		if code != http.StatusTooManyRequests || ra < 3500 || ra > 3600 {
			t.Fatalf("uncached tag during the wait: %d, Retry-After %q; want 429 with about 3600", code, h.Get("Retry-After"))
		}
		if n := up.received.Load() - before; n != 0 {
			t.Fatalf("%d requests reached the upstream during its Retry-After window", n)
		}
		if out := adminCLI(t, bin, rc, "cache", "show", "-n", "fresh-app", "-o", "table"); !strings.Contains(out, "upstream answered 429: no request until") {
			t.Fatalf("cache show does not show the wait:\n%s", out)
		}
	})
}

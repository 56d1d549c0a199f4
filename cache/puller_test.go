package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regcache/regcache/storage"
)

// fixture is a puller wired to real storage and a real in-process upstream
// registry, reached through a small proxy that can inject faults and
// demand authentication.
type fixture struct {
	puller   *Puller
	blobs    *storage.Blobs
	meta     *storage.Meta
	upstream *httptest.Server // the real registry
	proxy    *httptest.Server // what regcache talks to
	fault    atomic.Value     // func(w, r) bool: true when it answered
	requests sync.Map         // "METHOD path" -> *atomic.Int64
	store    *Store
	eps      *Endpoints
	// transport is the puller's base transport; gates hold blob bodies.
	transport gateTransport
	logs      logBuffer // what the puller logs
	// relay is the proxy's own transport to the registry: not
	// http.DefaultTransport, whose idle connections every
	// httptest.Server.Close of a parallel test closes under it.
	relay *http.Transport
}

type staticCreds map[string]authn.Authenticator

func (s staticCreds) LoginServer(_ context.Context, set string) (string, bool, error) {
	_, ok := s[set]
	return "docker.io", ok, nil
}

func (s staticCreds) Refused(string, string, bool) {}
func (s staticCreds) Authenticator(_ context.Context, set string) (authn.Authenticator, error) {
	if set == "" {
		return authn.Anonymous, nil
	}
	return s[set], nil
}

func newFixture(t *testing.T, creds Credentials, rules ...Rule) *fixture {
	t.Helper()
	f := &fixture{relay: &http.Transport{}}
	t.Cleanup(f.relay.CloseIdleConnections)
	f.fault.Store(func(http.ResponseWriter, *http.Request) bool { return false })
	f.upstream = httptest.NewServer(ggcr.New(ggcr.Logger(stdlog.New(io.Discard, "", 0))))
	t.Cleanup(f.upstream.Close)
	f.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := f.requests.LoadOrStore(r.Method+" "+r.URL.Path, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
		if f.fault.Load().(func(http.ResponseWriter, *http.Request) bool)(w, r) {
			return
		}
		f.forward(w, r, nil)
	}))
	t.Cleanup(f.proxy.Close)

	dir := t.TempDir()
	var err error
	if f.blobs, err = storage.OpenBlobs(dir + "/blobs"); err != nil {
		t.Fatal(err)
	}
	if f.meta, err = storage.OpenMeta(dir + "/meta.db"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.meta.Close() })
	log := slog.New(slog.NewTextHandler(&f.logs, nil))
	store, err := NewStore(t.Context(), f.meta, creds, rules, log)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := NewEndpoints(map[string]string{"docker.io": f.proxy.URL})
	if err != nil {
		t.Fatal(err)
	}
	f.store, f.eps = store, eps
	f.transport.base = DefaultTransport()
	f.puller = NewPuller(store, eps, creds, f.blobs, f.meta, log, Options{Transport: &f.transport})
	t.Cleanup(f.puller.Close)
	return f
}

// forward sends r to the real registry and copies its answer to w, the
// response headers passed through edit first when it is not nil (a fault
// that changes what the registry said).
func (f *fixture) forward(w http.ResponseWriter, r *http.Request, edit func(http.Header)) {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, f.upstream.URL+r.URL.RequestURI(), nil)
	req.Header = r.Header.Clone()
	resp, err := f.relay.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if edit != nil {
		edit(w.Header())
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func (f *fixture) count(method, path string) int64 {
	c, ok := f.requests.Load(method + " " + path)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

// push writes a random image to the real upstream (not through the proxy).
func (f *fixture) push(t *testing.T, repo string) v1.Image {
	t.Helper()
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(f.upstream.URL, "http://")+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// reader returns a function that reads content returned with an error.
func reader(t *testing.T) func(Content, error) []byte {
	return func(c Content, err error) []byte {
		t.Helper()
		return readAll(t, c, err)
	}
}

func readAll(t *testing.T, c Content, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Body.Close()
	b, err := io.ReadAll(c.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var hubRule = Rule{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}

// TestPullThroughThenServeStale: what was pulled is served again without
// the upstream, the tag included once its TTL expired (the revalidation
// fails, and the last known pointer is served).
func TestPullThroughThenServeStale(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f.puller.opts.Now = c.now
	img := f.push(t, "library/app:v1")
	raw, _ := img.RawManifest()
	want, _ := img.Digest()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	lraw, _ := layers[0].Compressed()
	wantLayer, _ := io.ReadAll(lraw)

	got := reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	if !bytes.Equal(got, raw) {
		t.Fatalf("manifest bytes differ from upstream")
	}
	if b := reader(t)(f.puller.Blob(t.Context(), "hub/app", ld.String())); !bytes.Equal(b, wantLayer) {
		t.Fatalf("layer bytes differ from upstream")
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+ld.String()); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
	// A second read of the blob is a hit: no upstream traffic.
	reader(t)(f.puller.Blob(t.Context(), "hub/app", ld.String()))
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+ld.String()); n != 1 {
		t.Fatalf("upstream blob GETs after hit = %d, want 1", n)
	}

	// The upstream goes away and the tag's TTL expires: the cached tag,
	// digest and blob are served.
	f.upstream.Close()
	f.proxy.Close()
	c.add(DefaultTagTTL + time.Second)
	m, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
	if got := readAll(t, m, err); !bytes.Equal(got, raw) || m.Digest != want.String() {
		t.Fatalf("stale manifest: digest %s, want %s", m.Digest, want)
	}
	if !strings.Contains(f.logs.String(), "serving cached tag: upstream revalidation failed") {
		t.Fatalf("the expired tag was served without a revalidation attempt; log:\n%s", f.logs.String())
	}
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", want.String()))
	reader(t)(f.puller.Blob(t.Context(), "hub/app", ld.String()))
	// What was never fetched is not there.
	if _, err := f.puller.Manifest(t.Context(), "hub/app", "v2"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("uncached tag with upstream down: err = %v, want ErrUnavailable", err)
	}
}

// TestServeStaleWhenUpstreamFails: once a tag's TTL expired, an upstream
// that rate-limits, fails or does not answer the revalidating HEAD in time
// gets the last known pointer served; the tag stays expired, so the next
// pull asks again, except an upstream that answered 429, which is left
// alone for a while (TestRetryAfter).
func TestServeStaleWhenUpstreamFails(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault func(w http.ResponseWriter, r *http.Request)
		heads [2]int64 // HEADs after the first and second pull
	}{
		{"rate-limited", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) }, [2]int64{1, 1}},
		{"failing", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }, [2]int64{1, 2}},
		// Never answers: the HEAD ends at the revalidation timeout.
		{"hanging", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, [2]int64{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Anonymous{}, hubRule)
			c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			f.puller.opts.Now = c.now
			f.puller.opts.RevalidateTimeout = 50 * time.Millisecond
			img := f.push(t, "library/app:v1")
			want, _ := img.Digest()
			raw, _ := img.RawManifest()
			reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))

			f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodHead || !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				tc.fault(w, r)
				return true
			})
			heads := func() int64 { return f.count(http.MethodHead, "/v2/library/app/manifests/v1") }
			c.add(DefaultTagTTL + time.Second)
			for i := range 2 {
				m, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
				if got := readAll(t, m, err); !bytes.Equal(got, raw) || m.Digest != want.String() {
					t.Fatalf("pull %d after the TTL: digest %s, want the cached %s", i+1, m.Digest, want)
				}
				if n := heads(); n != tc.heads[i] {
					t.Fatalf("pull %d after the TTL: %d revalidating HEADs, want %d", i+1, n, tc.heads[i])
				}
			}
			if gets := f.count(http.MethodGet, "/v2/library/app/manifests/v1"); gets != 1 {
				t.Fatalf("%d manifest GETs, want 1 (serving stale downloads nothing)", gets)
			}
		})
	}
}

func TestTagRevalidation(t *testing.T) {
	t.Parallel()
	always := hubRule
	always.TagTTL = "0s" // revalidate on every pull
	f := newFixture(t, Anonymous{}, always)
	f.push(t, "library/app:v1")
	first, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
	readAll(t, first, err)
	moved := f.push(t, "library/app:v1")
	want, _ := moved.Digest()
	c, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
	readAll(t, c, err)
	if c.Digest != want.String() || c.Digest == first.Digest {
		t.Fatalf("after the tag moved upstream: served %s, want %s", c.Digest, want)
	}
	tag, err := f.meta.Tag(t.Context(), "hub/app", "v1")
	if err != nil || tag.Digest != want.String() {
		t.Fatalf("tag pointer = %+v, %v; want digest %s", tag, err, want)
	}
	// Revalidation uses HEAD; the unchanged tag is not downloaded again.
	gets := f.count(http.MethodGet, "/v2/library/app/manifests/v1")
	reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
	if f.count(http.MethodGet, "/v2/library/app/manifests/v1") != gets || f.count(http.MethodHead, "/v2/library/app/manifests/v1") < 2 {
		t.Fatalf("unchanged tag: want a HEAD and no GET")
	}
}

func TestCorruptUpstreamBlobIsNotStored(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Header().Set("Content-Length", "4")
		w.Write([]byte("evil"))
		return true
	})
	// Short and wrong bytes: whether the reader attaches before the fill
	// fails or after, it gets the error, never all the bytes.
	// (TestLastByteWaitsForVerification holds a fill in the middle.)
	c, err := f.puller.Blob(t.Context(), "hub/app", ld.String())
	if err == nil {
		var got []byte
		got, err = io.ReadAll(c.Body)
		c.Body.Close()
		if len(got) >= 4 {
			t.Fatalf("the reader received all %d unverified bytes", len(got))
		}
	}
	if !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("corrupt blob: err = %v, want a digest mismatch", err)
	}
	if _, err := f.blobs.Stat(t.Context(), ld.String()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("corrupt blob left in the store: %v", err)
	}
	if _, err := f.meta.Linked(t.Context(), "hub/app", ld.String()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("corrupt blob linked: %v", err)
	}
	f.fault.Store(func(http.ResponseWriter, *http.Request) bool { return false })
	reader(t)(f.puller.Blob(t.Context(), "hub/app", ld.String()))
}

func TestCorruptUpstreamManifestIsNotStored(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	d, _ := img.Digest()
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Write([]byte(`{"schemaVersion":2}`))
		return true
	})
	if _, err := f.puller.Manifest(t.Context(), "hub/app", d.String()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("manifest not matching its digest: err = %v, want ErrUnavailable", err)
	}
	if _, err := f.blobs.Stat(t.Context(), d.String()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("mismatched manifest stored: %v", err)
	}
}

// TestManifestHeaderDigestMismatch: a manifest fetched by tag whose
// Docker-Content-Digest header names other bytes than the body is refused
// and nothing is stored: one of the two is corrupt.
func TestManifestHeaderDigestMismatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	d, _ := img.Digest()
	claimed := "sha256:" + strings.Repeat("ab", 32)
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		f.forward(w, r, func(h http.Header) { h.Set("Docker-Content-Digest", claimed) })
		return true
	})
	_, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), claimed) || !strings.Contains(err.Error(), d.String()) {
		t.Fatalf("header digest %s for a body hashing to %s: err = %v, want ErrUnavailable naming both", claimed, d, err)
	}
	if _, err := f.blobs.Stat(t.Context(), d.String()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("manifest stored although its header digest mismatched: %v", err)
	}
	if tag, err := f.meta.Tag(t.Context(), "hub/app", "v1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("tag pointed at %s although the header digest mismatched: %v", tag.Digest, err)
	}
	// The same upstream with a truthful header is served.
	f.fault.Store(func(http.ResponseWriter, *http.Request) bool { return false })
	m, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
	readAll(t, m, err)
	if m.Digest != d.String() {
		t.Fatalf("served %s, want %s", m.Digest, d)
	}
}

// TestLinksArePerRepository: bytes stored for one rule are served under
// another only after that rule's upstream confirmed it has them.
func TestLinksArePerRepository(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule, Rule{Name: "other-app", Source: "docker.io/other/app", Target: "other"})
	img := f.push(t, "library/app:v1")
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	first, err := f.puller.Blob(t.Context(), "hub/app", ld.String())
	readAll(t, first, err)
	// The fill has ended: the bytes are in the store, no fill is running,
	// and the other repository meets them there.
	if err := fillEnded(t, first); err != nil {
		t.Fatal(err)
	}

	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/other/") {
			w.WriteHeader(http.StatusNotFound)
			return true
		}
		return false
	})
	if _, err := f.puller.Blob(t.Context(), "other", ld.String()); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("blob under a repository it was not fetched for: err = %v, want ErrBlobUnknown", err)
	}
	if _, err := f.puller.Blob(t.Context(), "unruled", ld.String()); !errors.Is(err, ErrNameUnknown) {
		t.Fatalf("blob under an unknown repository: err = %v, want ErrNameUnknown", err)
	}
	// Once the other upstream has it, a HEAD confirms it and no bytes move.
	f.fault.Store(func(http.ResponseWriter, *http.Request) bool { return false })
	f.push(t, "other/app:v1") // the ggcr registry shares blobs across repositories
	reader(t)(f.puller.Blob(t.Context(), "other", ld.String()))
	if n := f.count(http.MethodGet, "/v2/other/app/blobs/"+ld.String()); n != 0 {
		t.Fatalf("GETs of a blob already stored = %d, want 0 (HEAD only)", n)
	}
	if n := f.count(http.MethodHead, "/v2/other/app/blobs/"+ld.String()); n < 1 {
		t.Fatalf("no HEAD confirmed the blob for the second repository")
	}
}

// TestUpstreamAuthChallenges runs the transport against basic and bearer
// challenges (the proxy plays the token server) and anonymous bearer.
func TestUpstreamAuthChallenges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		creds   staticCreds
		set     string
		wantErr error
	}{
		{"basic", staticCreds{"good": &authn.Basic{Username: "u", Password: "p"}}, "good", nil},
		{"basic wrong password", staticCreds{"bad": &authn.Basic{Username: "u", Password: "x"}}, "bad", ErrUnauthorized},
		{"bearer", staticCreds{"good": &authn.Basic{Username: "u", Password: "p"}}, "good", nil},
		{"bearer anonymous", staticCreds{}, "", nil},
		{"bearer wrong password", staticCreds{"bad": &authn.Basic{Username: "u", Password: "x"}}, "bad", ErrUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rule := hubRule
			rule.CredentialSet = tc.set
			f := newFixture(t, tc.creds, rule)
			img := f.push(t, "library/app:v1")
			raw, _ := img.RawManifest()
			bearer := strings.HasPrefix(tc.name, "bearer")
			f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
				user, pass, hasBasic := r.BasicAuth()
				okBasic := hasBasic && user == "u" && pass == "p"
				if r.URL.Path == "/token" {
					if hasBasic && !okBasic {
						w.WriteHeader(http.StatusUnauthorized)
						return true
					}
					tok := "anon"
					if okBasic {
						tok = "user"
					}
					w.Write([]byte(`{"token":"` + tok + `"}`))
					return true
				}
				if bearer {
					if a := r.Header.Get("Authorization"); a == "Bearer user" || (a == "Bearer anon" && tc.set == "") {
						r.Header.Del("Authorization")
						return false
					}
					w.Header().Set("WWW-Authenticate", `Bearer realm="`+f.proxy.URL+`/token",service="test",scope="repository:library/app:pull"`)
				} else {
					if okBasic {
						return false
					}
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				}
				w.WriteHeader(http.StatusUnauthorized)
				return true
			})
			c, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "dTp4") { // base64("u:x")
					t.Fatalf("error leaks the credentials: %v", err)
				}
				return
			}
			if got := readAll(t, c, err); !bytes.Equal(got, raw) {
				t.Fatalf("manifest differs from upstream")
			}
		})
	}
}

func TestStatBlobDoesNotFetch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	want, _ := layers[0].Size()
	size, err := f.puller.StatBlob(t.Context(), "hub/app", ld.String())
	if err != nil || size != want {
		t.Fatalf("StatBlob = %d, %v; want %d", size, err, want)
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+ld.String()); n != 0 {
		t.Fatalf("StatBlob fetched the blob (%d GETs)", n)
	}
	if _, err := f.blobs.Stat(t.Context(), ld.String()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("StatBlob stored the blob: %v", err)
	}
	missing := "sha256:" + strings.Repeat("0", 64)
	if _, err := f.puller.StatBlob(t.Context(), "hub/app", missing); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("StatBlob of a missing blob: %v, want ErrBlobUnknown", err)
	}
}

// rotatingCreds hands out a stale password until the upstream refuses it,
// then the current one (a secret rotated in the backend).
type rotatingCreds struct {
	mu      sync.Mutex
	current string
	stale   bool
	refused []bool // the final flags of Refused calls
}

func (r *rotatingCreds) LoginServer(context.Context, string) (string, bool, error) {
	return "docker.io", true, nil
}

func (r *rotatingCreds) Authenticator(context.Context, string) (authn.Authenticator, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stale {
		return &authn.Basic{Username: "u", Password: "old"}, nil
	}
	return &authn.Basic{Username: "u", Password: r.current}, nil
}

func (r *rotatingCreds) Refused(set, host string, final bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stale = false
	r.refused = append(r.refused, final)
}

// TestRefusedCredentialsAreResolvedAgain: a 401 makes the set resolve its
// secrets again and the request is retried once; a second 401 is final.
func TestRefusedCredentialsAreResolvedAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		current     string
		wantRefused []bool
		wantErr     error
	}{
		{"rotated", "p", []bool{false}, nil},
		{"broken", "wrong", []bool{false, true}, ErrUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			creds := &rotatingCreds{current: tc.current, stale: true}
			rule := hubRule
			rule.CredentialSet = "hub-creds"
			f := newFixture(t, creds, rule)
			img := f.push(t, "library/app:v1")
			f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
				if u, p, ok := r.BasicAuth(); ok && u == "u" && p == "p" {
					return false
				}
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return true
			})
			c, err := f.puller.Manifest(t.Context(), "hub/app", "v1")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), `credential set "hub-creds"`) {
					t.Fatalf("err = %v, want %v naming the set", err, tc.wantErr)
				}
			} else {
				raw, _ := img.RawManifest()
				if got := readAll(t, c, err); !bytes.Equal(got, raw) {
					t.Fatal("manifest differs from upstream")
				}
			}
			creds.mu.Lock()
			defer creds.mu.Unlock()
			if fmt.Sprint(creds.refused) != fmt.Sprint(tc.wantRefused) {
				t.Fatalf("Refused calls (final flags) = %v, want %v", creds.refused, tc.wantRefused)
			}
		})
	}
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestTagFreshness: inside the tag TTL a cached tag is answered without
// touching the upstream; after it, one HEAD revalidates it and restarts
// the window; a rule's tagTTL overrides the default.
func TestTagFreshness(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ttl  string
		want time.Duration
	}{
		{"default", "", DefaultTagTTL},
		{"rule override", "1h", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rule := hubRule
			rule.TagTTL = tc.ttl
			f := newFixture(t, Anonymous{}, rule)
			c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			f.puller.opts.Now = c.now
			f.push(t, "library/app:v1")
			heads := func() int64 { return f.count(http.MethodHead, "/v2/library/app/manifests/v1") }
			gets := func() int64 { return f.count(http.MethodGet, "/v2/library/app/manifests/v1") }
			reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
			for range 50 {
				reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
			}
			c.add(tc.want - time.Second)
			reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
			if heads() != 0 || gets() != 1 {
				t.Fatalf("inside the TTL: %d HEADs, %d GETs upstream; want 0 and 1", heads(), gets())
			}
			c.add(2 * time.Second)
			reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
			if heads() != 1 || gets() != 1 {
				t.Fatalf("after the TTL: %d HEADs, %d GETs; want 1 and 1", heads(), gets())
			}
			c.add(tc.want - time.Second) // the revalidation restarted the window
			reader(t)(f.puller.Manifest(t.Context(), "hub/app", "v1"))
			if heads() != 1 {
				t.Fatalf("inside the renewed window: %d HEADs, want 1", heads())
			}
		})
	}
}

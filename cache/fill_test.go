package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regcache/regcache/storage"
)

// layerOf returns the digest and bytes of the first layer of img.
func layerOf(t *testing.T, img v1.Image) (string, []byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := layers[0].Digest()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return d.String(), b
}

// slowBlob makes the proxy serve blob GETs of body in chunks with a pause
// after each, cutting the connection after cutAfter bytes when it is >= 0.
func slowBlob(body []byte, chunk int, pause time.Duration, cutAfter int) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		for off := 0; off < len(body); off += chunk {
			if cutAfter >= 0 && off >= cutAfter {
				panic(http.ErrAbortHandler) // the upstream connection drops
			}
			w.Write(body[off:min(off+chunk, len(body))])
			w.(http.Flusher).Flush()
			time.Sleep(pause)
		}
		return true
	}
}

// TestConcurrentMissesOneFetch: 32 clients miss on one cold blob while its
// fill is held at the upstream; all of them follow the one fill, exactly
// one upstream GET is made, and each gets the verified bytes.
func TestConcurrentMissesOneFetch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	g := f.gate(t, digest)

	const clients = 32
	var wg sync.WaitGroup
	contents := make([]Content, clients)
	errs := make([]error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			contents[i], errs[i] = f.puller.Blob(t.Context(), "hub/app", digest)
		}()
	}
	wg.Wait() // every client asked while no byte of the blob had arrived
	fills := map[*fill]bool{}
	for i, c := range contents {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		defer c.Body.Close()
		fills[following(t, c)] = true
	}
	if len(fills) != 1 || g.requests() != 1 {
		t.Fatalf("%d clients started %d fills and %d upstream GETs, want 1 and 1", clients, len(fills), g.requests())
	}

	g.open()
	got := make([][]byte, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = io.ReadAll(contents[i].Body)
		}()
	}
	wg.Wait()
	for i := range clients {
		if errs[i] != nil || !bytes.Equal(got[i], want) {
			t.Fatalf("client %d: %d bytes, err %v; want the %d layer bytes", i, len(got[i]), errs[i], len(want))
		}
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+digest); n != 1 {
		t.Fatalf("upstream GETs of the blob = %d, want exactly 1", n)
	}
}

// TestUpstreamCutMidBlob: every waiter gets an error, nothing is stored,
// and the next request fetches again and succeeds.
func TestUpstreamCutMidBlob(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	f.fault.Store(slowBlob(want, 512, time.Millisecond, len(want)/2))

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := f.puller.Blob(t.Context(), "hub/app", digest)
			if err == nil {
				_, err = io.ReadAll(c.Body)
				c.Body.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Fatalf("waiter %d read the whole blob although the upstream cut it", i)
		}
	}
	if _, err := f.blobs.Stat(t.Context(), digest); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a cut fill left the blob in the store: %v", err)
	}
	if _, err := f.meta.Linked(t.Context(), "hub/app", digest); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a cut fill linked the blob: %v", err)
	}

	f.fault.Store(func(http.ResponseWriter, *http.Request) bool { return false })
	if got := reader(t)(f.puller.Blob(t.Context(), "hub/app", digest)); !bytes.Equal(got, want) {
		t.Fatal("the retry did not return the layer bytes")
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+digest); n != 2 {
		t.Fatalf("upstream GETs = %d, want 2 (the cut one and the retry)", n)
	}
}

// TestLastByteWaitsForVerification: readers following a fill get every
// byte but the last as they land, and the last only once size and digest
// verified. Bytes that do not verify reach no reader whole: every reader
// gets the digest mismatch, and nothing is stored or linked.
func TestLastByteWaitsForVerification(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		corrupt bool
	}{
		{"verified", false},
		{"corrupt", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Anonymous{}, hubRule)
			img := f.push(t, "library/app:v1")
			digest, body := layerOf(t, img)
			if tc.corrupt {
				body[len(body)/2] ^= 0xff // the right size, another digest
				f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+digest) {
						return false
					}
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
					w.Write(body)
					return true
				})
			}
			g := f.gate(t, digest)
			n := int64(len(body))

			// Two readers follow the fill: a probe, whose context ends
			// before it asks for the last byte so that its Read cannot
			// wait, and a client that waits for the end.
			probeCtx, stopProbe := context.WithCancel(t.Context())
			probe, err := f.puller.Blob(probeCtx, "hub/app", digest)
			if err != nil {
				t.Fatal(err)
			}
			defer probe.Body.Close()
			client, err := f.puller.Blob(t.Context(), "hub/app", digest)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Body.Close()
			if following(t, probe) != following(t, client) {
				t.Fatal("the two readers follow different fills")
			}
			g.allow(n)       // every byte arrives; the end of the body is held
			g.waitHeld(t, n) // so the fill has written all of them, verified none
			for _, c := range []Content{probe, client} {
				head := make([]byte, n-1)
				if _, err := io.ReadFull(c.Body, head); err != nil || !bytes.Equal(head, body[:n-1]) {
					t.Fatalf("reading all but the last byte during the fill: %v", err)
				}
			}
			stopProbe()
			if k, err := probe.Body.Read(make([]byte, 1)); k != 0 || !errors.Is(err, context.Canceled) {
				t.Fatalf("all bytes landed, none verified: the probe read %d more bytes (err %v), want none (context.Canceled)", k, err)
			}

			g.open()
			last, err := io.ReadAll(client.Body)
			if tc.corrupt {
				if len(last) != 0 {
					t.Fatalf("the client received the last byte of bytes that failed verification (err %v)", err)
				}
				if !errors.Is(err, storage.ErrDigestMismatch) {
					t.Fatalf("reading a corrupt fill: err = %v, want a digest mismatch", err)
				}
				if err := fillEnded(t, client); !errors.Is(err, storage.ErrDigestMismatch) {
					t.Fatalf("the corrupt fill ended with %v, want a digest mismatch", err)
				}
				if _, err := f.blobs.Stat(t.Context(), digest); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("corrupt blob left in the store: %v", err)
				}
				if _, err := f.meta.Linked(t.Context(), "hub/app", digest); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("corrupt blob linked: %v", err)
				}
				return
			}
			if err != nil || !bytes.Equal(last, body[n-1:]) {
				t.Fatalf("after verification: %d more bytes, err %v; want the last byte", len(last), err)
			}
			if err := fillEnded(t, client); err != nil {
				t.Fatal(err)
			}
			if _, err := f.meta.Linked(t.Context(), "hub/app", digest); err != nil {
				t.Fatalf("verified blob not linked: %v", err)
			}
		})
	}
}

// TestClientDisconnectMidFill: the client that started a fill reads the
// bytes the upstream sent before it paused (within fillHold, not at the
// pause's end), then goes away; the fill completes and the blob is
// committed and linked.
func TestClientDisconnectMidFill(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	g := f.gate(t, digest)
	g.allow(1000) // the rest of the blob is held until the client left

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	c, err := f.puller.Blob(ctx, "hub/app", digest)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if _, err := io.ReadFull(c.Body, buf); err != nil {
		t.Fatalf("reading bytes the paused upstream sent: %v", err)
	}
	cancel()
	if _, err := io.ReadAll(c.Body); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after the client left: %v, want context.Canceled", err)
	}
	c.Body.Close()
	g.open()

	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := f.meta.Linked(t.Context(), "hub/app", digest); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fill did not complete after its client disconnected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.fault.Store(func(http.ResponseWriter, *http.Request) bool { return false })
	if got := reader(t)(f.puller.Blob(t.Context(), "hub/app", digest)); !bytes.Equal(got, want) {
		t.Fatal("committed blob differs from the layer")
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+digest); n != 1 {
		t.Fatalf("upstream GETs = %d, want 1", n)
	}
}

// TestRangeDuringFillAndOnHit serves Range requests through
// http.ServeContent after Content.Verified, as the registry does, while the
// blob is being filled and after it was committed.
func TestRangeDuringFillAndOnHit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	f.fault.Store(slowBlob(want, 256, 2*time.Millisecond, -1))

	ranges := []struct {
		header     string
		start, end int // inclusive
	}{
		{"bytes=0-9", 0, 9},
		{"bytes=100-1099", 100, 1099},
		{"bytes=" + strconv.Itoa(len(want)-10) + "-", len(want) - 10, len(want) - 1},
		{"bytes=-1", len(want) - 1, len(want) - 1},
	}
	get := func(t *testing.T, rng string, duringFill bool) *httptest.ResponseRecorder {
		c, err := f.puller.Blob(t.Context(), "hub/app", digest)
		if err != nil {
			t.Error(err)
			return httptest.NewRecorder()
		}
		defer c.Body.Close()
		if _, inFill := c.Body.(*fillReader); inFill != duringFill {
			t.Errorf("%s: body follows a fill: %v, want %v", rng, inFill, duringFill)
		}
		// A partial response is served from verified bytes only.
		if err := c.Verified(t.Context()); err != nil {
			t.Error(err)
		}
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
		req.Header.Set("Range", rng)
		rec := httptest.NewRecorder()
		http.ServeContent(rec, req, "", time.Time{}, c.Body)
		return rec
	}
	for _, phase := range []string{"during fill", "on hit"} {
		duringFill := phase == "during fill"
		if !duringFill {
			waitLinked(t, f, "hub/app", digest)
		}
		t.Run(phase, func(t *testing.T) {
			var wg sync.WaitGroup
			for _, r := range ranges {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rec := get(t, r.header, duringFill)
					wantRange := "bytes " + strconv.Itoa(r.start) + "-" + strconv.Itoa(r.end) + "/" + strconv.Itoa(len(want))
					if rec.Code != http.StatusPartialContent || rec.Header().Get("Content-Range") != wantRange ||
						!bytes.Equal(rec.Body.Bytes(), want[r.start:r.end+1]) {
						t.Errorf("%s: %d %q, %d bytes; want 206 %q and the exact bytes", r.header, rec.Code, rec.Header().Get("Content-Range"), rec.Body.Len(), wantRange)
					}
				}()
			}
			wg.Wait()
		})
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+digest); n != 1 {
		t.Fatalf("upstream GETs = %d, want 1", n)
	}
}

// TestJoiningAnotherRulesFillNeedsConfirmation: a fill started through one
// rule is shared with another rule only after that rule's upstream
// confirmed the digest, and the joining repository is linked when the fill
// commits, so that it is served from the store afterwards.
func TestJoiningAnotherRulesFillNeedsConfirmation(t *testing.T) {
	t.Parallel()
	other := Rule{Name: "other-app", Source: "docker.io/other/app", Target: "other"}
	f := newFixture(t, Anonymous{}, hubRule, other)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	g := f.gate(t, digest) // the fill runs until the test opens the gate
	var confirm atomic.Bool
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/other/") && !confirm.Load() {
			w.WriteHeader(http.StatusNotFound)
			return true
		}
		return false
	})
	started, err := f.puller.Blob(t.Context(), "hub/app", digest)
	if err != nil {
		t.Fatal(err)
	}
	defer started.Body.Close()
	running := following(t, started)
	if _, err := f.puller.Blob(t.Context(), "other", digest); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("joining without confirmation: err = %v, want ErrBlobUnknown", err)
	}
	confirm.Store(true)
	f.push(t, "other/app:v1")
	joined, err := f.puller.Blob(t.Context(), "other", digest)
	if err != nil {
		t.Fatal(err)
	}
	if following(t, joined) != running {
		t.Fatal("the confirmed repository did not join the running fill")
	}
	g.open()
	if got := readAll(t, joined, nil); !bytes.Equal(got, want) {
		t.Fatal("the confirmed joiner got other bytes")
	}
	if err := fillEnded(t, joined); err != nil {
		t.Fatal(err)
	}
	if _, err := f.meta.Linked(t.Context(), "other", digest); err != nil {
		t.Fatalf("the fill committed without linking the repository that joined it: %v", err)
	}
	if n := f.count(http.MethodGet, "/v2/other/app/blobs/"+digest); n != 0 {
		t.Fatalf("the joiner fetched the blob itself (%d GETs)", n)
	}
	heads := f.count(http.MethodHead, "/v2/other/app/blobs/"+digest)
	if heads != 2 {
		t.Fatalf("HEADs by the joiner's upstream = %d, want one per attempt (2)", heads)
	}
	// Linked: the next read is a hit, with no upstream request at all.
	if c, err := f.puller.Blob(t.Context(), "other", digest); err != nil || !bytes.Equal(readAll(t, c, err), want) {
		t.Fatalf("the joined blob is not served from the store: %v", err)
	}
	if n := f.count(http.MethodHead, "/v2/other/app/blobs/"+digest); n != heads {
		t.Fatalf("a read after the fill asked the upstream again (%d HEADs, want %d)", n, heads)
	}
}

// countingMeta counts the metadata writes the puller makes.
type countingMeta struct {
	*storage.Meta
	mu      sync.Mutex
	links   int
	touches int
}

func (m *countingMeta) Link(ctx context.Context, repo string, l storage.Link, tag *storage.Tag) error {
	m.mu.Lock()
	m.links++
	m.mu.Unlock()
	return m.Meta.Link(ctx, repo, l, tag)
}

func (m *countingMeta) TouchBlobs(ctx context.Context, times map[string]time.Time) error {
	m.mu.Lock()
	m.touches++
	m.mu.Unlock()
	return m.Meta.TouchBlobs(ctx, times)
}

// TestHitsDoNotWriteMetadata: serving a stored blob writes nothing to
// bbolt; access times are flushed in one batch.
func TestHitsDoNotWriteMetadata(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	meta := &countingMeta{Meta: f.meta}
	f.puller.meta = meta
	reader(t)(f.puller.Blob(t.Context(), "hub/app", digest)) // the miss links once
	waitLinked(t, f, "hub/app", digest)
	meta.mu.Lock()
	before := meta.links
	meta.mu.Unlock()
	for range 200 {
		if got := reader(t)(f.puller.Blob(t.Context(), "hub/app", digest)); !bytes.Equal(got, want) {
			t.Fatal("hit returned other bytes")
		}
	}
	meta.mu.Lock()
	links, touches := meta.links, meta.touches
	meta.mu.Unlock()
	if links != before || touches != 0 {
		t.Fatalf("200 hits made %d link and %d access writes, want none", links-before, touches)
	}
	if err := f.puller.FlushAccess(t.Context()); err != nil {
		t.Fatal(err)
	}
	if meta.touches != 1 {
		t.Fatalf("flush made %d writes, want 1", meta.touches)
	}
	if _, err := f.meta.LastAccess(t.Context(), digest); err != nil {
		t.Fatalf("access time not recorded: %v", err)
	}
}

// waitLinked waits until the fill of digest linked it to repo (a fill
// commits just after its readers got the verified bytes).
func waitLinked(t *testing.T, f *fixture, repo, digest string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if _, err := f.meta.Linked(t.Context(), repo, digest); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not linked to %s", digest, repo)
		}
	}
}

// TestWaitersGetBytesWhenTheUpstreamPauses: bytes written within the wake
// interval of the last wake-up, and then nothing more for a while (an
// upstream that pauses, or a peer replica waiting for its own upstream),
// reach the waiters within the wake interval, not at the next write.
func TestWaitersGetBytesWhenTheUpstreamPauses(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFill("sha256:"+strings.Repeat("0", 64), "up", "hub/app")
		f.start(1000, "")
		f.progress(100) // the first bytes wake at once
		var woke atomic.Bool
		go func() {
			if f.wait(t.Context(), func() bool { return f.written >= 200 }) == nil {
				woke.Store(true)
			}
		}()
		synctest.Wait()
		f.progress(100) // within the wake interval: no wake-up now; then the upstream pauses
		synctest.Wait()
		if woke.Load() {
			t.Fatal("the waiter woke at once: the test proves nothing")
		}
		time.Sleep(wakeInterval)
		synctest.Wait()
		if !woke.Load() {
			t.Fatalf("a waiter for bytes written %v ago, with nothing written since, is still waiting", wakeInterval)
		}
	})
}

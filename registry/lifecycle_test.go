package registry_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/regcache/regcache/archive"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/eviction"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/warm"
)

// lifecycleOf wires warm, export, import and eviction as serve does.
func lifecycleOf(t testing.TB, puller *cache.Puller, store *cache.Store, blobs *storage.Blobs, meta *storage.Meta, repos *local.Repos, offline bool) registry.Lifecycle {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ev, err := eviction.New(blobs, meta, store, repos, puller, log, eviction.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return registry.Lifecycle{
		Warm:   warm.New(puller, log),
		Export: archive.NewExporter(puller, log),
		Import: archive.NewImporter(blobs, meta, repos, store, log),
		Inventory: func(ctx context.Context, w io.Writer) (int, error) {
			return archive.WriteInventory(ctx, meta, blobs, w)
		},
		Refresh:   puller,
		Evict:     ev,
		Upstreams: puller,
		Offline:   offline,
	}
}

func adminDo(t *testing.T, method, url string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	return do(t, method, url, map[string]string{"Authorization": "Bearer " + testToken}, body)
}

// TestOfflineSaysSo: an offline registry says so on its health
// endpoints, on every admin answer and in its status; a pull of content
// it does not hold, and a warm, fail at once saying it is offline; the
// upstream receives nothing.
func TestOfflineSaysSo(t *testing.T) {
	t.Parallel()
	var seen atomic.Int64
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		http.Error(w, "no", http.StatusBadGateway)
	}))
	t.Cleanup(counting.Close)
	st := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": counting.URL}, config: []cache.Rule{hubRule}, local: true, lifecycle: true, offline: true})
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, body := do(t, http.MethodGet, st.url+p, nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "offline") || resp.Header.Get("Regcache-Offline") != "true" {
			t.Errorf("%s: %s %q, want 200 saying offline", p, resp.Status, body)
		}
	}
	resp, _ := adminDo(t, http.MethodGet, st.url+"/admin/v1/cache-rules", nil)
	if resp.Header.Get("Regcache-Offline") != "true" {
		t.Errorf("admin answer without Regcache-Offline: %v", resp.Header)
	}
	resp, body := adminDo(t, http.MethodGet, st.url+"/admin/v1/status", nil)
	var sum status.Summary
	if json.Unmarshal(body, &sum); !sum.Offline || sum.Store.Evicted == nil {
		t.Errorf("status %s: want offline and the store's eviction", body)
	}
	resp, body = do(t, http.MethodGet, st.url+"/v2/hub/app/manifests/1", nil, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || ociCode(t, body) != "UNAVAILABLE" || !strings.Contains(string(body), "offline") ||
		!strings.Contains(resp.Header.Get("Warning"), "offline") {
		t.Errorf("uncached pull offline: %s %s (Warning %q)", resp.Status, body, resp.Header.Get("Warning"))
	}
	resp, body = adminDo(t, http.MethodPost, st.url+"/admin/v1/warm", strings.NewReader(`{"references":["hub/app:1"]}`))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "OFFLINE") {
		t.Errorf("warm offline: %s %s", resp.Status, body)
	}
	if n := seen.Load(); n != 0 {
		t.Fatalf("the upstream received %d requests from an offline registry", n)
	}
}

// TestRetryAfterReachesClients: once an upstream answered 429 with
// Retry-After, clients asking for content regcache lacks get 429
// TOOMANYREQUESTS with a Retry-After of their own, and the upstream
// receives nothing more meanwhile.
func TestRetryAfterReachesClients(t *testing.T) {
	t.Parallel()
	var seen atomic.Int64
	limited := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(limited.Close)
	st := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": limited.URL}, config: []cache.Rule{hubRule}, local: true, lifecycle: true})
	resp, body := do(t, http.MethodGet, st.url+"/v2/hub/app/manifests/1", nil, nil)
	if resp.StatusCode != http.StatusTooManyRequests || ociCode(t, body) != "TOOMANYREQUESTS" {
		t.Fatalf("first pull: %s %s", resp.Status, body)
	}
	before := seen.Load()
	resp, body = do(t, http.MethodGet, st.url+"/v2/hub/other/manifests/2", nil, nil)
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || ra < 100 || ra > 120 || !strings.Contains(string(body), "docker.io") {
		t.Fatalf("pull during the wait: %s Retry-After %q %s; want 429 with about 120s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	if seen.Load() != before {
		t.Fatal("the upstream received a request during its Retry-After window")
	}
	_, body = adminDo(t, http.MethodGet, st.url+"/admin/v1/status", nil)
	var sum status.Summary
	json.Unmarshal(body, &sum)
	if sum.Throttling == nil || len(sum.Throttling.Waits) != 1 || sum.Throttling.RateLimited != 1 {
		t.Fatalf("status %s: want the wait listed", body)
	}
}

// TestLifecycleOverHTTP: warm streams NDJSON progress; an export from one
// registry imports into another through the admin API; a damaged
// archive is refused naming the blob.
func TestLifecycleOverHTTP(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img := must(random.Image(2000, 2))
	pushImage(t, up, "library/app:1", img)
	a := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, config: []cache.Rule{hubRule}, local: true, lifecycle: true})
	b := newStack(t, stackConfig{local: true, lifecycle: true})

	resp, body := adminDo(t, http.MethodPost, a.url+"/admin/v1/warm", strings.NewReader(`{"references":["hub/app:1","hub/nope:1"]}`))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("warm: %s %s", resp.Status, body)
	}
	var last warm.Event
	types := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("warm line %q: %v", sc.Text(), err)
		}
		types[last.Type]++
	}
	if last.Type != warm.TypeSummary || last.Succeeded != 1 || len(last.Failed) != 1 || types[warm.TypeStart] != 1 || types[warm.TypeDone] != 1 || types[warm.TypeError] != 1 {
		t.Fatalf("warm events %v, summary %+v", types, last)
	}

	resp, tarball := adminDo(t, http.MethodPost, a.url+"/admin/v1/export", strings.NewReader(`{"references":["hub/app:1"]}`))
	if resp.StatusCode != http.StatusOK || resp.Trailer.Get("Regcache-Export-Error") != "" {
		t.Fatalf("export: %s %q", resp.Status, resp.Trailer.Get("Regcache-Export-Error"))
	}
	if n, _ := strconv.ParseInt(resp.Header.Get("Regcache-Export-Bytes"), 10, 64); n <= 0 || int64(len(tarball)) < n {
		t.Fatalf("export announced %d bytes, sent a %d-byte archive", n, len(tarball))
	}
	resp, body = adminDo(t, http.MethodPost, b.url+"/admin/v1/import?to=lab", bytes.NewReader(tarball))
	var rep archive.ImportReport
	if json.Unmarshal(body, &rep); resp.StatusCode != http.StatusOK || len(rep.Images) != 1 || rep.Images[0].Repository != "lab/hub/app" {
		t.Fatalf("import: %s %s", resp.Status, body)
	}
	raw, _ := img.RawManifest()
	if resp, got := do(t, http.MethodGet, b.url+"/v2/lab/hub/app/manifests/1", nil, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(got, raw) {
		t.Fatalf("imported image: %s", resp.Status)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	lb, _ := layers[0].Compressed()
	content, _ := io.ReadAll(lb)
	damaged := bytes.Clone(tarball)
	at := bytes.Index(damaged, content) + 3
	damaged[at] ^= 0xff
	resp, body = adminDo(t, http.MethodPost, b.url+"/admin/v1/import?to=again", bytes.NewReader(damaged))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "INVALID_ARCHIVE") || !strings.Contains(string(body), ld.String()) {
		t.Fatalf("damaged import: %s %s", resp.Status, body)
	}
	resp, body = adminDo(t, http.MethodGet, b.url+"/admin/v1/inventory", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), ld.String()) {
		t.Fatalf("inventory: %s %s", resp.Status, body)
	}
	resp, body = adminDo(t, http.MethodPost, a.url+"/admin/v1/gc?dryRun=true", nil)
	var gc registry.GCResult
	if json.Unmarshal(body, &gc); resp.StatusCode != http.StatusOK || gc.Eviction == nil || !gc.Eviction.DryRun || !gc.DryRun {
		t.Fatalf("gc dry run: %s %s", resp.Status, body)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

package registry_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/regcache/regcache/cache"
)

// A manifest hit answered from memory carries exactly the headers of one
// answered through http.ServeContent; conditional and Range requests still
// get ServeContent's answers (304, 206), HEAD has no body, and a path the
// mux would clean is still redirected.
func TestManifestHitPath(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/app:v1", img)
	_, raw := upstreamManifest(t, up, "library/app", "v1")
	digest := digestOf(raw)
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})
	url := s.url + "/v2/hub/app/manifests/v1"
	if resp, _ := do(t, http.MethodGet, url, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("first GET: %d", resp.StatusCode)
	}

	hot, body := do(t, http.MethodGet, url, nil, nil)
	// An If-None-Match that does not match is answered in full, through
	// ServeContent.
	slow, slowBody := do(t, http.MethodGet, url, map[string]string{"If-None-Match": `"sha256:other"`}, nil)
	if hot.StatusCode != http.StatusOK || slow.StatusCode != http.StatusOK || string(body) != string(raw) || string(slowBody) != string(raw) {
		t.Fatalf("hit: %d, %d bytes; through ServeContent: %d, %d bytes; want 200 and the %d bytes of the manifest",
			hot.StatusCode, len(body), slow.StatusCode, len(slowBody), len(raw))
	}
	for _, h := range []string{"Content-Type", "Docker-Content-Digest", "Etag", "Content-Length", "X-Cache", "Docker-Distribution-Api-Version"} {
		if got, want := hot.Header.Values(h), slow.Header.Values(h); len(got) != 1 || len(want) != 1 || got[0] != want[0] {
			t.Errorf("%s: %q on the hit path, %q through ServeContent", h, got, want)
		}
	}
	// The hit path sends no Accept-Ranges (ServeContent does), and no
	// header ServeContent's answer does not have.
	if got := hot.Header.Values("Accept-Ranges"); len(got) != 0 {
		t.Errorf("Accept-Ranges on the hit path: %q, want none", got)
	}
	for h := range hot.Header {
		if _, ok := slow.Header[h]; !ok {
			t.Errorf("the hit path sends %s: %q, which ServeContent's answer has not", h, hot.Header.Values(h))
		}
	}
	// By tag, neither path lets an HTTP cache keep the answer; by digest,
	// both say it may be kept for a year.
	if got, want := hot.Header.Values("Cache-Control"), slow.Header.Values("Cache-Control"); len(got) != 0 || len(want) != 0 {
		t.Errorf("Cache-Control by tag: %q on the hit path, %q through ServeContent; want none", got, want)
	}
	byDigest := s.url + "/v2/hub/app/manifests/" + digest
	hotD, _ := do(t, http.MethodGet, byDigest, nil, nil)
	slowD, _ := do(t, http.MethodGet, byDigest, map[string]string{"If-None-Match": `"sha256:other"`}, nil)
	// At most eight headers besides the Date net/http adds: a ninth makes
	// net/http's header maps, and its copy of them, several times dearer.
	if n := len(hotD.Header) - len(hotD.Header.Values("Date")); n > 8 {
		t.Errorf("the hit path by digest sends %d headers besides Date, want at most 8: %v", n, hotD.Header)
	}
	for what, resp := range map[string]*http.Response{"hit path": hotD, "ServeContent": slowD} {
		if got := resp.Header.Values("Cache-Control"); len(got) != 1 || got[0] != "max-age=31536000" {
			t.Errorf("Cache-Control by digest through the %s: %q, want max-age=31536000", what, got)
		}
	}
	if hot.Header.Get("Docker-Content-Digest") != digest || hot.Header.Get("Content-Length") != strconv.Itoa(len(raw)) || hot.Header.Get("X-Cache") != "HIT" {
		t.Errorf("hit headers: %v", hot.Header)
	}

	head, headBody := do(t, http.MethodHead, url, nil, nil)
	if head.StatusCode != http.StatusOK || len(headBody) != 0 || head.Header.Get("Content-Length") != strconv.Itoa(len(raw)) {
		t.Errorf("HEAD: %d, %d body bytes, Content-Length %q", head.StatusCode, len(headBody), head.Header.Get("Content-Length"))
	}
	if resp, _ := do(t, http.MethodGet, url, map[string]string{"If-None-Match": `"` + digest + `"`}, nil); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the manifest's ETag: %d, want 304", resp.StatusCode)
	}
	resp, part := do(t, http.MethodGet, url, map[string]string{"Range": "bytes=0-9"}, nil)
	if resp.StatusCode != http.StatusPartialContent || string(part) != string(raw[:10]) {
		t.Errorf("Range bytes=0-9: %d %q, want 206 %q", resp.StatusCode, part, raw[:10])
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.url+"/v2/hub//app/manifests/v1", nil)
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/v2/hub/app/manifests/v1" {
		t.Errorf("unclean path: %d, Location %q; want the mux's redirect to the clean path", resp.StatusCode, resp.Header.Get("Location"))
	}
}

package registry_test

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/requestid"
)

// logBuffer collects log lines written from the server's goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the complete lines written since line from.
func (b *logBuffer) lines(from int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	all := strings.Split(strings.TrimSuffix(b.buf.String(), "\n"), "\n")
	if len(all) == 1 && all[0] == "" {
		return nil
	}
	return all[min(from, len(all)):]
}

// waitLine waits for a line containing every one of parts.
func (b *logBuffer) waitLine(t *testing.T, parts ...string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
	lines:
		for _, l := range b.lines(0) {
			for _, p := range parts {
				if !strings.Contains(l, p) {
					continue lines
				}
			}
			return l
		}
	}
	t.Fatalf("no log line with %q:\n%s", parts, strings.Join(b.lines(0), "\n"))
	return ""
}

// newCachedStack is a regcache whose rule hub-library revalidates tags on
// every pull (tag TTL 0s), with local repositories, an upstream holding
// library/app:v1, and its logs at debug level in logs.
func newCachedStack(t *testing.T, logs *logBuffer, obs observer) (*stack, *upstreamImage) {
	t.Helper()
	up := newUpstream(t)
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/app:v1", img)
	rule := hubRule
	rule.TagTTL = "0s"
	st := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{rule}, local: true, logs: logs, observer: obs})
	layer, layerBody := layerBytes(t, img)
	_, manifest := upstreamManifest(t, up, "library/app", "v1")
	return st, &upstreamImage{up: up, layer: layer, layerBody: layerBody, manifest: manifest}
}

type upstreamImage struct {
	up        interface{ Close() }
	layer     string
	layerBody []byte
	manifest  []byte
}

// TestXCache checks where each answer says it came from: misses, hits,
// answers the upstream gave (a HEAD, a tag list, an error), stale serves
// once the upstream is gone, local repositories and the version check;
// and that the access log line says it too, with the rule.
func TestXCache(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	st, img := newCachedStack(t, logs, nil)
	manifestURL := st.url + "/v2/hub/app/manifests/v1"
	layerURL := st.url + "/v2/hub/app/blobs/" + img.layer
	check := func(step, method, url string, wantStatus int, want cache.Source) {
		t.Helper()
		resp, _ := do(t, method, url, map[string]string{requestid.Header: "xcache-" + strings.ReplaceAll(step, " ", "-")}, nil)
		if resp.StatusCode != wantStatus || resp.Header.Get("X-Cache") != string(want) {
			t.Errorf("%s: %s %s: %d, X-Cache %q; want %d, %s", step, method, url, resp.StatusCode, resp.Header.Get("X-Cache"), wantStatus, want)
		}
		line := logs.waitLine(t, "msg=request", "requestId=xcache-"+strings.ReplaceAll(step, " ", "-"))
		wantRule := " rule=hub-library"
		if want == cache.SourceLocal {
			wantRule = ""
		}
		if !strings.Contains(line, " cache="+string(want)) || strings.Contains(line, " rule=") != (wantRule != "") || !strings.Contains(line, wantRule) {
			t.Errorf("%s: access log line %q: want cache=%s%s", step, line, want, wantRule)
		}
	}
	check("manifest miss", "GET", manifestURL, http.StatusOK, cache.SourceMiss)
	check("manifest hit", "GET", manifestURL, http.StatusOK, cache.SourceHit)
	check("manifest head hit", "HEAD", manifestURL, http.StatusOK, cache.SourceHit)
	check("blob miss", "GET", layerURL, http.StatusOK, cache.SourceMiss)
	// The fill links the blob just after its client got the last byte.
	logs.waitLine(t, `msg="cached blob"`, "requestId=xcache-blob-miss")
	check("blob hit", "GET", layerURL, http.StatusOK, cache.SourceHit)
	check("blob head hit", "HEAD", layerURL, http.StatusOK, cache.SourceHit)
	check("unknown tag", "GET", st.url+"/v2/hub/app/manifests/nope", http.StatusNotFound, cache.SourceMiss)
	check("tag list", "GET", st.url+"/v2/hub/app/tags/list", http.StatusOK, cache.SourceMiss)

	// A local repository: an upload, a pull.
	resp, _ := do(t, "POST", st.url+"/v2/lab/app/blobs/uploads/?digest="+digestOf([]byte("local blob")), nil, strings.NewReader("local blob"))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Cache") != "LOCAL" {
		t.Errorf("monolithic push: %d, X-Cache %q; want 201, LOCAL", resp.StatusCode, resp.Header.Get("X-Cache"))
	}
	check("local blob", "GET", st.url+"/v2/lab/app/blobs/"+digestOf([]byte("local blob")), http.StatusOK, cache.SourceLocal)
	check("local unknown", "GET", st.url+"/v2/lab/other/manifests/v1", http.StatusNotFound, cache.SourceLocal)
	check("version check", "GET", st.url+"/v2/", http.StatusOK, cache.SourceLocal)
	check("bad name", "GET", st.url+"/v2/Bad/manifests/v1", http.StatusBadRequest, cache.SourceLocal)

	// The upstream goes away: the tag (TTL 0s) is served from its last
	// known pointer, the layer from the store.
	img.up.Close()
	check("manifest stale", "GET", manifestURL, http.StatusOK, cache.SourceStale)
	check("blob hit upstream gone", "GET", layerURL, http.StatusOK, cache.SourceHit)
	check("tag list stale", "GET", st.url+"/v2/hub/app/tags/list", http.StatusOK, cache.SourceStale)

	// Other routes are not registry answers.
	resp, _ = do(t, "GET", st.url+"/healthz", nil, nil)
	if got := resp.Header.Get("X-Cache"); got != "" {
		t.Errorf("/healthz has X-Cache %q", got)
	}
}

// TestRequestIDs checks X-Request-Id: the client's kept when usable, else
// replaced or made up, answered back, and in every log line the request
// causes: its upstream requests, the manifest it cached, the access log,
// and the fill it started, which logs after the answer.
func TestRequestIDs(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	st, img := newCachedStack(t, logs, nil)

	for _, c := range []struct{ sent, want string }{
		{"client-id.1", "client-id.1"},
		{"bad id", ""},
		{strings.Repeat("x", 200), ""},
		{"", ""},
	} {
		h := map[string]string{}
		if c.sent != "" {
			h[requestid.Header] = c.sent
		}
		resp, _ := do(t, "GET", st.url+"/v2/", h, nil)
		got := resp.Header.Get(requestid.Header)
		if (c.want != "" && got != c.want) || (c.want == "" && (!regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got) || got == c.sent)) {
			t.Errorf("sent %q: answered X-Request-Id %q", c.sent, got)
		}
		logs.waitLine(t, "msg=request", "requestId="+got)
	}

	// A miss of the manifest, then of the layer: each request's lines,
	// from the first to the end of the fill, carry its ID.
	for _, c := range []struct{ id, path, last string }{
		{"pull-manifest-42", "/v2/hub/app/manifests/v1", "msg=\"cached manifest\""},
		{"pull-layer-43", "/v2/hub/app/blobs/" + img.layer, "msg=\"cached blob\""},
	} {
		from := len(logs.lines(0))
		resp, body := do(t, "GET", st.url+c.path, map[string]string{requestid.Header: c.id}, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(requestid.Header) != c.id {
			t.Fatalf("GET %s: %d %s, X-Request-Id %q", c.path, resp.StatusCode, body, resp.Header.Get(requestid.Header))
		}
		logs.waitLine(t, c.last, "requestId="+c.id)
		logs.waitLine(t, "msg=request", "requestId="+c.id)
		lines := logs.lines(from)
		var upstream int
		for _, l := range lines {
			if !strings.Contains(l, " requestId="+c.id) {
				t.Errorf("request %s: a line without its ID: %s", c.id, l)
			}
			if strings.Contains(l, `msg="upstream request"`) {
				upstream++
			}
		}
		if upstream == 0 {
			t.Errorf("request %s: no upstream request logged:\n%s", c.id, strings.Join(lines, "\n"))
		}
	}
}

package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/eviction"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/requestid"
	"github.com/regcache/regcache/status"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

const testToken = "test-admin-token-0123456789"

// hubRule caches every Docker Hub official image under hub/.
var hubRule = cache.Rule{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}

// newUpstream starts go-containerregistry's in-memory registry.
func newUpstream(t testing.TB) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(s.Close)
	return s
}

// hostOf returns the host:port of a test server.
func hostOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// credSets is a Credentials with a fixed list of credential sets, all
// anonymous: enough to exercise the credentialSetName field.
type credSets map[string]string // set -> login server

// LoginServer returns the login server of a known set.
func (c credSets) LoginServer(_ context.Context, set string) (string, bool, error) {
	server, ok := c[set]
	return server, ok, nil
}

func (credSets) Refused(string, string, bool) {}

func (c credSets) Authenticator(context.Context, string) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

// stackConfig describes one regcache under test.
type stackConfig struct {
	upstreams map[string]string // login server -> endpoint URL
	config    []cache.Rule      // rules of the config file (read-only)
	rules     []cache.Rule      // rules created through the store
	creds     cache.Credentials // default cache.Anonymous{}
	limits    registry.Limits   // progress deadlines of the handler
	local     bool              // accept pushes into local repositories
	localNS   []string          // local namespaces
	defReg    string            // default registry
	auth      registry.ClientAuth
	trusted   []netip.Prefix // trusted proxies
	logs      io.Writer      // debug logs with request IDs (default: none)
	observer  observer       // told about requests and the cache (default: none)
	// backend, when set, decorates the puller (fault injection).
	backend   func(registry.Backend) registry.Backend
	lifecycle bool // warm, export, import, status (lifecycle_test.go); needs local
	offline   bool // contact no upstream
}

// observer is what metrics.Metrics is to the puller and the handler.
type observer interface {
	cache.Observer
	registry.Observer
}

// stack is regcache built as `regcache serve` builds it, served by httptest.
type stack struct {
	url     string
	handler http.Handler // what srv serves, for in-process requests
	puller  *cache.Puller
	store   *cache.Store
	blobs   *storage.Blobs
	meta    *storage.Meta
	dir     string // the data directory: blobs, meta.db, quarantine
	fsck    *storage.Checker
}

func newStack(t testing.TB, sc stackConfig) *stack {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if sc.logs != nil {
		logger = slog.New(requestid.Handler(slog.NewTextHandler(sc.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	endpoints, err := cache.NewEndpoints(sc.upstreams)
	if err != nil {
		t.Fatal(err)
	}
	creds := sc.creds
	if creds == nil {
		creds = cache.Anonymous{}
	}
	store, err := cache.NewStore(ctx, meta, creds, sc.config, logger)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range sc.rules {
		if _, err := store.Create(ctx, r); err != nil {
			t.Fatalf("create rule %s: %v", r.Name, err)
		}
	}
	if _, err := store.SetLocalNamespaces(sc.localNS); err != nil {
		t.Fatal(err)
	}
	puller := cache.NewPuller(store, endpoints, creds, blobs, meta, logger, cache.Options{DefaultRegistry: sc.defReg, Observer: sc.observer,
		Upstreams: cache.NewUpstreams(cache.UpstreamsOptions{Offline: sc.offline})})
	t.Cleanup(puller.Close)
	fsck := storage.NewChecker(blobs, meta, filepath.Join(dir, "quarantine"))
	var backend registry.Backend = puller
	if sc.backend != nil {
		backend = sc.backend(puller)
	}
	cfg := registry.Config{Backend: backend, Rules: store, AdminToken: testToken, Log: logger, Limits: sc.limits,
		ClientAuth: sc.auth, TrustedProxies: sc.trusted, Fsck: fsck, Observer: sc.observer}
	if sc.local {
		sessions, err := uploads.New(ctx, blobs, meta, uploads.Options{}, logger)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Local = local.New(blobs, meta, sessions, store, logger, local.Options{})
	}
	if sc.lifecycle {
		cfg.Lifecycle = lifecycleOf(t, puller, store, blobs, meta, cfg.Local.(*local.Repos), sc.offline)
		cfg.GC = cfg.Local.(*local.Repos)
		src := status.Sources{Rules: store, Fills: puller, Store: blobs, Throttling: puller.Upstreams(), Offline: sc.offline}
		if e, ok := cfg.Lifecycle.Evict.(*eviction.Evictor); ok {
			src.Evictions = e
		}
		cfg.Status = status.NewReporter(src, "test", time.Now(), nil)
	}
	h, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close) // runs before meta.Close
	return &stack{url: srv.URL, handler: h, puller: puller, store: store, blobs: blobs, meta: meta, dir: dir, fsck: fsck}
}

// pushImage writes img to the upstream as repo:tag.
func pushImage(t testing.TB, up *httptest.Server, repoTag string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(hostOf(up)+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func pushIndex(t *testing.T, up *httptest.Server, repoTag string, idx v1.ImageIndex) {
	t.Helper()
	ref, err := name.ParseReference(hostOf(up)+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// do sends one request and returns the response with its whole body.
func do(t testing.TB, method, url string, header map[string]string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, b
}

// ociCode returns the code of a distribution-spec error body.
func ociCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("body %q is not a one-entry OCI error (%v)", body, err)
	}
	if e.Errors[0].Message == "" {
		t.Errorf("error %s has no message", e.Errors[0].Code)
	}
	return e.Errors[0].Code
}

// upstreamManifest GETs a manifest straight from the upstream.
func upstreamManifest(t testing.TB, up *httptest.Server, repo, ref string) (mediaType string, raw []byte) {
	t.Helper()
	resp, body := do(t, http.MethodGet, up.URL+"/v2/"+repo+"/manifests/"+ref, map[string]string{"Accept": strings.Join([]string{
		string(types.OCIImageIndex), string(types.OCIManifestSchema1), string(types.DockerManifestList), string(types.DockerManifestSchema2),
	}, ", ")}, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upstream %s:%s: %s", repo, ref, resp.Status)
	}
	return resp.Header.Get("Content-Type"), body
}

func layerBytes(t testing.TB, img v1.Image) (string, []byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
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

func TestCalls(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)

	// v1: Docker schema 2 image; v2: OCI image; v3: OCI index.
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/app:v1", img)
	base2, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	ociImg := mutate.ConfigMediaType(mutate.MediaType(base2, types.OCIManifestSchema1), types.OCIConfigJSON)
	pushImage(t, up, "library/app:v2", ociImg)
	idx, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	pushIndex(t, up, "library/app:v3", idx)

	type manifest struct {
		mediaType, digest string
		raw               []byte
	}
	manifests := map[string]manifest{}
	for _, tag := range []string{"v1", "v2", "v3"} {
		mt, raw := upstreamManifest(t, up, "library/app", tag)
		manifests[tag] = manifest{mt, digestOf(raw), raw}
	}
	if want, _ := img.RawManifest(); !bytes.Equal(manifests["v1"].raw, want) {
		t.Fatalf("upstream changed the pushed manifest")
	}
	for tag, want := range map[string]types.MediaType{"v1": types.DockerManifestSchema2, "v2": types.OCIManifestSchema1, "v3": types.OCIImageIndex} {
		if got := manifests[tag].mediaType; got != string(want) {
			t.Fatalf("upstream %s media type = %q, want %q", tag, got, want)
		}
	}
	v1m := manifests["v1"]
	layerDigest, layer := layerBytes(t, img)
	if len(layer) < 20 {
		t.Fatalf("layer of %d bytes is too small for the range test", len(layer))
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	cfgRaw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	const missingDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

	tagList := func(want ...string) func(*testing.T, []byte) {
		return func(t *testing.T, body []byte) {
			var got struct {
				Name string   `json:"name"`
				Tags []string `json:"tags"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("tag list %q: %v", body, err)
			}
			if got.Name != "hub/app" || got.Tags == nil || !slices.Equal(got.Tags, want) {
				t.Errorf("tag list = %s, want name hub/app and tags %q", body, want)
			}
		}
	}

	tests := []struct {
		name       string
		method     string
		path       string
		header     map[string]string
		wantStatus int
		wantHeader map[string]string // "" means the header must be absent
		wantBody   []byte            // exact body; nil skips the check
		wantEmpty  bool              // the body must be empty
		wantCode   string            // OCI error code of the body
		check      func(*testing.T, []byte)
	}{
		{
			name: "base", method: "GET", path: "/v2/", wantStatus: 200,
			wantHeader: map[string]string{"Docker-Distribution-API-Version": "registry/2.0"},
		},
		{
			name: "base without slash", method: "GET", path: "/v2", wantStatus: 200,
			wantHeader: map[string]string{"Docker-Distribution-API-Version": "registry/2.0"},
		},
		{
			name: "GET manifest by tag", method: "GET", path: "/v2/hub/app/manifests/v1", wantStatus: 200,
			wantHeader: map[string]string{
				"Content-Type": v1m.mediaType, "Docker-Content-Digest": v1m.digest,
				"Content-Length": strconv.Itoa(len(v1m.raw)), "ETag": `"` + v1m.digest + `"`,
				"Docker-Distribution-API-Version": "registry/2.0",
				"Cache-Control":                   "", // a tag may move: no HTTP cache may keep it
			},
			wantBody: v1m.raw,
		},
		{
			name: "HEAD manifest by tag", method: "HEAD", path: "/v2/hub/app/manifests/v1", wantStatus: 200,
			wantHeader: map[string]string{
				"Content-Type": v1m.mediaType, "Docker-Content-Digest": v1m.digest,
				"Content-Length": strconv.Itoa(len(v1m.raw)), "Cache-Control": "",
			},
			wantEmpty: true,
		},
		{
			name: "GET manifest by digest", method: "GET", path: "/v2/hub/app/manifests/" + v1m.digest, wantStatus: 200,
			wantHeader: map[string]string{
				"Content-Type": v1m.mediaType, "Docker-Content-Digest": v1m.digest,
				"Content-Length": strconv.Itoa(len(v1m.raw)), "ETag": `"` + v1m.digest + `"`,
				"Cache-Control": "max-age=31536000",
			},
			wantBody: v1m.raw,
		},
		{
			name: "HEAD manifest by digest", method: "HEAD", path: "/v2/hub/app/manifests/" + v1m.digest, wantStatus: 200,
			wantHeader: map[string]string{
				"Content-Type": v1m.mediaType, "Docker-Content-Digest": v1m.digest,
				"Content-Length": strconv.Itoa(len(v1m.raw)),
			},
			wantEmpty: true,
		},
		{
			name: "GET OCI manifest keeps its media type", method: "GET", path: "/v2/hub/app/manifests/v2", wantStatus: 200,
			wantHeader: map[string]string{
				"Content-Type": manifests["v2"].mediaType, "Docker-Content-Digest": manifests["v2"].digest,
				"Content-Length": strconv.Itoa(len(manifests["v2"].raw)),
			},
			wantBody: manifests["v2"].raw,
		},
		{
			name: "GET index keeps its media type", method: "GET", path: "/v2/hub/app/manifests/v3", wantStatus: 200,
			wantHeader: map[string]string{
				"Content-Type": manifests["v3"].mediaType, "Docker-Content-Digest": manifests["v3"].digest,
				"Content-Length": strconv.Itoa(len(manifests["v3"].raw)),
			},
			wantBody: manifests["v3"].raw,
		},
		{
			name: "manifest If-None-Match", method: "GET", path: "/v2/hub/app/manifests/v1",
			header:     map[string]string{"If-None-Match": `"` + v1m.digest + `"`},
			wantStatus: 304, wantHeader: map[string]string{"ETag": `"` + v1m.digest + `"`}, wantEmpty: true,
		},
		{
			name: "manifest If-None-Match of another digest", method: "GET", path: "/v2/hub/app/manifests/v1",
			header:     map[string]string{"If-None-Match": `"` + missingDigest + `"`},
			wantStatus: 200, wantBody: v1m.raw,
		},
		{
			name: "GET blob", method: "GET", path: "/v2/hub/app/blobs/" + layerDigest, wantStatus: 200,
			wantHeader: map[string]string{
				"Docker-Content-Digest": layerDigest, "Content-Length": strconv.Itoa(len(layer)),
				"ETag": `"` + layerDigest + `"`, "Content-Type": "application/octet-stream",
				"Cache-Control": "max-age=31536000",
			},
			wantBody: layer,
		},
		{
			name: "GET config blob", method: "GET", path: "/v2/hub/app/blobs/" + cfgName.String(), wantStatus: 200,
			wantHeader: map[string]string{"Docker-Content-Digest": cfgName.String()},
			wantBody:   cfgRaw,
		},
		{
			name: "HEAD blob", method: "HEAD", path: "/v2/hub/app/blobs/" + layerDigest, wantStatus: 200,
			wantHeader: map[string]string{"Docker-Content-Digest": layerDigest, "Content-Length": strconv.Itoa(len(layer))},
			wantEmpty:  true,
		},
		{
			name: "blob range", method: "GET", path: "/v2/hub/app/blobs/" + layerDigest,
			header:     map[string]string{"Range": "bytes=10-19"},
			wantStatus: 206,
			wantHeader: map[string]string{
				"Content-Range": fmt.Sprintf("bytes 10-19/%d", len(layer)), "Content-Length": "10",
				"Docker-Content-Digest": layerDigest,
			},
			wantBody: layer[10:20],
		},
		{
			name: "blob If-None-Match", method: "GET", path: "/v2/hub/app/blobs/" + layerDigest,
			header:     map[string]string{"If-None-Match": `"` + layerDigest + `"`},
			wantStatus: 304, wantEmpty: true,
		},
		{
			name: "tags list", method: "GET", path: "/v2/hub/app/tags/list", wantStatus: 200,
			wantHeader: map[string]string{"Content-Type": "application/json", "Link": ""},
			check:      tagList("v1", "v2", "v3"),
		},
		{
			name: "tags first page", method: "GET", path: "/v2/hub/app/tags/list?n=1", wantStatus: 200,
			wantHeader: map[string]string{"Link": `</v2/hub/app/tags/list?last=v1&n=1>; rel="next"`},
			check:      tagList("v1"),
		},
		{
			name: "tags first page of two", method: "GET", path: "/v2/hub/app/tags/list?n=2", wantStatus: 200,
			wantHeader: map[string]string{"Link": `</v2/hub/app/tags/list?last=v2&n=2>; rel="next"`},
			check:      tagList("v1", "v2"),
		},
		{
			name: "tags second page", method: "GET", path: "/v2/hub/app/tags/list?n=1&last=v1", wantStatus: 200,
			wantHeader: map[string]string{"Link": `</v2/hub/app/tags/list?last=v2&n=1>; rel="next"`},
			check:      tagList("v2"),
		},
		{
			name: "tags last page", method: "GET", path: "/v2/hub/app/tags/list?n=2&last=v2", wantStatus: 200,
			wantHeader: map[string]string{"Link": ""},
			check:      tagList("v3"),
		},
		{
			name: "tags after the last", method: "GET", path: "/v2/hub/app/tags/list?last=v3", wantStatus: 200,
			check: tagList(),
		},
		{
			name: "tags last between tags", method: "GET", path: "/v2/hub/app/tags/list?last=v1a", wantStatus: 200,
			check: tagList("v2", "v3"),
		},
		{
			name: "tags n=0", method: "GET", path: "/v2/hub/app/tags/list?n=0", wantStatus: 200,
			wantHeader: map[string]string{"Link": ""},
			check:      tagList(),
		},
		{
			name: "tags n negative", method: "GET", path: "/v2/hub/app/tags/list?n=-1", wantStatus: 400,
			wantCode: "PAGINATION_NUMBER_INVALID",
		},
		{
			name: "tags n not a number", method: "GET", path: "/v2/hub/app/tags/list?n=abc", wantStatus: 400,
			wantCode: "PAGINATION_NUMBER_INVALID",
		},
		{
			name: "unknown repo manifest", method: "GET", path: "/v2/nope/manifests/v1", wantStatus: 404,
			wantCode: "NAME_UNKNOWN", wantHeader: map[string]string{"Content-Type": "application/json", "Docker-Distribution-API-Version": "registry/2.0"},
		},
		{
			name: "unknown repo blob", method: "GET", path: "/v2/nope/blobs/" + layerDigest, wantStatus: 404,
			wantCode: "NAME_UNKNOWN",
		},
		{
			name: "unknown repo tags", method: "GET", path: "/v2/nope/tags/list", wantStatus: 404,
			wantCode: "NAME_UNKNOWN",
		},
		{
			name: "HEAD unknown repo", method: "HEAD", path: "/v2/nope/manifests/v1", wantStatus: 404,
			wantEmpty: true,
		},
		{
			name: "unknown tag under a ruled repo", method: "GET", path: "/v2/hub/app/manifests/nope", wantStatus: 404,
			wantCode: "MANIFEST_UNKNOWN",
		},
		{
			name: "unknown digest under a ruled repo", method: "GET", path: "/v2/hub/app/manifests/" + missingDigest, wantStatus: 404,
			wantCode: "MANIFEST_UNKNOWN",
		},
		{
			name: "unknown blob under a ruled repo", method: "GET", path: "/v2/hub/app/blobs/" + missingDigest, wantStatus: 404,
			wantCode: "BLOB_UNKNOWN",
		},
		{
			name: "ruled repo missing upstream tags", method: "GET", path: "/v2/hub/missing/tags/list", wantStatus: 404,
			wantCode: "NAME_UNKNOWN",
		},
		{
			name: "PUT manifest", method: "PUT", path: "/v2/hub/app/manifests/v9", wantStatus: 405,
			header: map[string]string{"Content-Type": string(types.DockerManifestSchema2)}, wantCode: "UNSUPPORTED",
		},
		{
			name: "DELETE manifest", method: "DELETE", path: "/v2/hub/app/manifests/" + v1m.digest, wantStatus: 405,
			wantCode: "UNSUPPORTED",
		},
		{
			name: "POST upload", method: "POST", path: "/v2/hub/app/blobs/uploads/", wantStatus: 405,
			wantCode: "UNSUPPORTED",
		},
		{
			name: "GET upload session", method: "GET", path: "/v2/hub/app/blobs/uploads/abc", wantStatus: 405,
			wantCode: "UNSUPPORTED",
		},
		{
			name: "bad blob digest", method: "GET", path: "/v2/hub/app/blobs/sha256:short", wantStatus: 400,
			wantCode: "DIGEST_INVALID",
		},
		{
			name: "md5 manifest digest", method: "GET", path: "/v2/hub/app/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", wantStatus: 400,
			wantCode: "DIGEST_INVALID",
		},
		{
			name: "invalid name", method: "GET", path: "/v2/hub/App/manifests/v1", wantStatus: 400,
			wantCode: "NAME_INVALID",
		},
		{
			// No manifest has an invalid tag: a read finds none (as
			// distribution answers; the conformance suite's pull workflow
			// expects it), a push is refused.
			name: "invalid tag", method: "GET", path: "/v2/hub/app/manifests/.v1", wantStatus: 404,
			wantCode: "MANIFEST_UNKNOWN",
		},
		{
			name: "PUT invalid tag", method: "PUT", path: "/v2/hub/app/manifests/.v1", wantStatus: 400,
			wantCode: "TAG_INVALID",
		},
		{
			name: "unknown endpoint", method: "GET", path: "/v2/hub/app/catalog", wantStatus: 404,
			wantCode: "NOT_FOUND",
		},
		{
			name: "healthz", method: "GET", path: "/healthz", wantStatus: 200, wantBody: []byte("ok\n"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})
			resp, body := do(t, tt.method, s.url+tt.path, tt.header, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s %s: status %d, want %d; body %s", tt.method, tt.path, resp.StatusCode, tt.wantStatus, body)
			}
			for k, want := range tt.wantHeader {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if tt.wantBody != nil && !bytes.Equal(body, tt.wantBody) {
				t.Errorf("body (%d bytes) differs from the expected %d bytes", len(body), len(tt.wantBody))
			}
			if tt.wantEmpty && len(body) != 0 {
				t.Errorf("body = %q, want empty", body)
			}
			if tt.wantCode != "" {
				if got := ociCode(t, body); got != tt.wantCode {
					t.Errorf("error code = %s, want %s (body %s)", got, tt.wantCode, body)
				}
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
}

// A blob stored for one repository is served under another only when that
// repository's own upstream confirms it has the blob.
func TestBlobNeedsUpstreamConfirmation(t *testing.T) {
	t.Parallel()
	hub, quay := newUpstream(t), newUpstream(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, hub, "library/app:v1", img)
	digest, layer := layerBytes(t, img)
	s := newStack(t, stackConfig{
		upstreams: map[string]string{"docker.io": hub.URL, "quay.io": quay.URL},
		rules:     []cache.Rule{hubRule, {Name: "other-quay", Source: "quay.io/*", Target: "other/*"}},
	})

	resp, body := do(t, "GET", s.url+"/v2/hub/app/blobs/"+digest, nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("GET under hub/app: %s, %d bytes", resp.Status, len(body))
	}
	// The fill commits (fsync, rename) after the client got the verified
	// bytes.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, err := s.blobs.Stat(t.Context(), digest)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob not in the store after the pull: %v", err)
		}
	}

	for _, method := range []string{"GET", "HEAD"} {
		resp, body = do(t, method, s.url+"/v2/other/app/blobs/"+digest, nil, nil)
		if resp.StatusCode != 404 {
			t.Fatalf("%s under other/app (empty upstream): status %d, want 404", method, resp.StatusCode)
		}
		if method == "GET" {
			if code := ociCode(t, body); code != "BLOB_UNKNOWN" {
				t.Errorf("code = %s, want BLOB_UNKNOWN", code)
			}
		}
	}

	// Once the second upstream has the blob, the stored bytes are linked
	// and served.
	pushImage(t, quay, "app:v1", img)
	resp, body = do(t, "GET", s.url+"/v2/other/app/blobs/"+digest, nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("GET under other/app after the upstream got it: %s, %d bytes", resp.Status, len(body))
	}
}

// Content cached through a rule stays served after the rule is deleted.
func TestCachedContentOutlivesRule(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/app:v1", img)
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})
	_, raw := upstreamManifest(t, up, "library/app", "v1")

	if resp, body := do(t, "GET", s.url+"/v2/hub/app/manifests/v1", nil, nil); resp.StatusCode != 200 || !bytes.Equal(body, raw) {
		t.Fatalf("first pull: %s", resp.Status)
	}
	if err := s.store.Delete(t.Context(), hubRule.Name); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		wantStatus int
		wantCode   string
	}{
		{"cached tag", "/v2/hub/app/manifests/v1", 200, ""},
		{"cached digest", "/v2/hub/app/manifests/" + digestOf(raw), 200, ""},
		{"tag never pulled", "/v2/hub/app/manifests/v2", 404, "MANIFEST_UNKNOWN"},
		{"repository never pulled", "/v2/hub/other/manifests/v1", 404, "NAME_UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := do(t, "GET", s.url+tt.path, nil, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantCode != "" {
				if code := ociCode(t, body); code != tt.wantCode {
					t.Errorf("code = %s, want %s", code, tt.wantCode)
				}
			} else if !bytes.Equal(body, raw) {
				t.Errorf("body differs from the upstream manifest")
			}
		})
	}
}

func digestOf(b []byte) string {
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		panic(err)
	}
	return h.String()
}

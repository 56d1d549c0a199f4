package registry_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/regcache/regcache/cache"
)

// Fuzz targets that go through the real HTTP handler (in process, no
// socket), with a real upstream behind it for the distribution API.

// upstreamLog records every request that reached the upstream.
type upstreamLog struct {
	next http.Handler
	mu   sync.Mutex
	seen []*url.URL
}

func (l *upstreamLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	l.seen = append(l.seen, r.URL)
	l.mu.Unlock()
	l.next.ServeHTTP(w, r)
}

// take returns and forgets the requests recorded so far.
func (l *upstreamLog) take() []*url.URL {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := l.seen
	l.seen = nil
	return seen
}

// inRuleScope reports whether an upstream request is one a rule
// docker.io/library/* may make: the version check, or a manifest, blob or
// tag list of a repository under library/ in the repository grammar, with
// no query but the tag list's pagination.
func inRuleScope(u *url.URL) bool {
	if u.Path == "/v2/" {
		return u.RawQuery == ""
	}
	rest, ok := strings.CutPrefix(u.Path, "/v2/library/")
	if !ok {
		return false
	}
	if repo, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		q := u.Query()
		q.Del("n")
		q.Del("last")
		return cache.ValidRepository("library/"+repo) && len(q) == 0
	}
	i := strings.LastIndex(rest, "/")
	j := strings.LastIndex(rest[:max(i, 0)], "/")
	if i < 0 || j < 0 || (rest[j+1:i] != "manifests" && rest[j+1:i] != "blobs") {
		return false
	}
	return cache.ValidRepository("library/"+rest[:j]) && u.RawQuery == ""
}

// FuzzOCIRequest sends any path and query (ns included) through the
// handler of a regcache whose only rule is docker.io/library/* -> hub/*,
// in front of a real upstream that also holds private/secret:v1. Whatever
// the request, regcache never answers 500, never serves that manifest, and
// never asks the upstream for anything outside docker.io/library/ (which,
// with a credential set on the rule, would send its credentials there).
func FuzzOCIRequest(f *testing.F) {
	real := newUpstream(f)
	private, err := random.Image(256, 1)
	if err != nil {
		f.Fatal(err)
	}
	app, err := random.Image(256, 1)
	if err != nil {
		f.Fatal(err)
	}
	pushImage(f, real, "private/secret:v1", private)
	pushImage(f, real, "library/app:v1", app)
	_, secretManifest := upstreamManifest(f, real, "private/secret", "v1")
	secretDigest, _ := private.Digest()
	appDigest, _ := app.Digest()
	appLayer, _ := layerBytes(f, app)
	gate := &upstreamLog{next: real.Config.Handler}
	up := httptest.NewServer(gate)
	f.Cleanup(up.Close)
	s := newStack(f, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})

	for _, seed := range []struct {
		path, query string
		head        bool
	}{
		{"/v2/hub/app/manifests/v1", "", false},
		{"/v2/hub/app/manifests/" + appDigest.String(), "", true},
		{"/v2/hub/app/blobs/" + appLayer, "", false},
		{"/v2/library/app/manifests/v1", "ns=docker.io", false},
		{"/v2/app/tags/list", "ns=docker.io&n=1", false},
		{"/v2/docker.io/library/app/manifests/v1", "", false},
		{"/v2/private/secret/manifests/v1", "", false},
		{"/v2/private/secret/manifests/v1", "ns=docker.io%2Flibrary%2F..", false},
		{"/v2/private/secret/manifests/" + secretDigest.String(), "ns=docker.io%2Flibrary%2F..", true},
		{"/v2/private/secret/tags/list", "ns=docker.io%2Flibrary%2F..", false},
		{"/v2/x/manifests/v1", "ns=docker.io%2Flibrary%2F..%2F_catalog%3Fx%3D", false},
		{"/v2/x/manifests/v1", "ns=docker.io%2F..%2F_catalog%3Fx%3D", false},
		{"/v2/hub/../private/secret/manifests/v1", "", false},
		{"/v2/hub/..%2Fprivate%2Fsecret/manifests/v1", "", false},
		{"/v2/secret/manifests/v1", "ns=docker.io%2Flibrary%2F..%2Fprivate", false},
		{"/v2/app/manifests/v1", "ns=%2E%2E", false},
		{"/v2/app/manifests/v1", "ns=docker.io&ns=ghcr.io", false},
		{"/v2/_catalog", "", false},
		{"/v2/", "ns=docker.io", true},
	} {
		f.Add(seed.path, seed.query, seed.head)
	}
	f.Fuzz(func(t *testing.T, path, query string, head bool) {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
		if head {
			req.Method = http.MethodHead
		}
		req.URL.Path, req.URL.RawQuery = path, query
		rec := httptest.NewRecorder()
		s.handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s?%s answered %d: %s", req.Method, path, query, rec.Code, rec.Body)
		}
		if bytes.Contains(rec.Body.Bytes(), secretManifest) || (rec.Code/100 == 2 && rec.Header().Get("Docker-Content-Digest") == secretDigest.String()) {
			t.Fatalf("%s %s?%s answered %d with private/secret's manifest", req.Method, path, query, rec.Code)
		}
		for _, u := range gate.take() {
			if !inRuleScope(u) {
				t.Fatalf("%s %s?%s made regcache ask the upstream for %s?%s, outside docker.io/library/", req.Method, path, query, u.Path, u.RawQuery)
			}
		}
	})
}

// adminMethods are the methods FuzzAdminAPI sends (by index).
var adminMethods = []string{"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"}

// FuzzAdminAPI sends any method, path under /admin/v1/ and body, with the
// admin token or without, through the handler of a regcache with credential
// sets whose secret values are known. A request never answers 500 and
// never brings back a secret value (nor its base64 forms, as Basic auth
// carries it) in a header, the body or the server's log unless the request
// itself carried it; an error is a JSON body with a code and a message; a
// request without the token is 401 and changes nothing.
func FuzzAdminAPI(f *testing.F) {
	var logs syncBuffer
	s := newCredStackLog(f, &logs)
	const user, pass = "hub-user", "hub-s3cr3t" // the values newCredStackLog's env references resolve to
	secrets := []string{user, pass, testToken}
	for _, v := range []string{pass, user + ":" + pass} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			secrets = append(secrets, enc.EncodeToString([]byte(v)))
		}
	}
	adminDo := func(t testing.TB, method, path string, body []byte, token bool) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", bytes.NewReader(body))
		req.Method = method
		req.URL.Path = path
		if token {
			req.Header.Set("Authorization", "Bearer "+testToken)
		}
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		s.handler.ServeHTTP(rec, req)
		return rec
	}
	names := func(t testing.TB, path string) []string {
		rec := adminDo(t, "GET", path, nil, true)
		var items []struct {
			Name string `json:"name"`
		}
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &items) != nil {
			t.Fatalf("list %s: %d %s", path, rec.Code, rec.Body)
		}
		var out []string
		for _, it := range items {
			out = append(out, it.Name)
		}
		return out
	}
	initialRules, initialSets := names(f, rulesPath), names(f, setsPath)
	state := func(t testing.TB) string { return fmt.Sprint(names(t, rulesPath), names(t, setsPath)) }
	// reset deletes what a request created (rules first: a set in use
	// cannot go), so that every input starts from the same state.
	reset := func(t testing.TB) {
		for _, r := range names(t, rulesPath) {
			if !slices.Contains(initialRules, r) {
				adminDo(t, "DELETE", rulesPath+"/"+url.PathEscape(r), nil, true)
			}
		}
		for _, n := range names(t, setsPath) {
			if !slices.Contains(initialSets, n) {
				adminDo(t, "DELETE", setsPath+"/"+url.PathEscape(n), nil, true)
			}
		}
	}

	for _, seed := range []struct {
		method uint8
		path   string
		body   string
		token  bool
	}{
		{0, "cache-rules", "", true},
		{1, "cache-rules", `{"name":"new-rule","sourceRepository":"docker.io/library/*","targetRepository":"hub/*","credentialSetName":"cfg-set"}`, true},
		{1, "cache-rules", `{"name":"new-rule","sourceRepository":"docker.io/library/..","targetRepository":"hub/*"}`, true},
		{1, "cache-rules", `{"name":"new-rule"}{"name":"trailing"}`, true},
		{1, "cache-rules", `{"name":"new-rule","unknown":1}`, true},
		{1, "cache-rules", `[`, true},
		{2, "cache-rules/cfg-rule", `{"tagTTL":"10m"}`, true},
		{3, "cache-rules/nope", "", true},
		{0, "credential-sets", "", true},
		{0, "credential-sets/cfg-set", "", true},
		{0, "credential-sets/cfg-set/policy", "", true},
		{0, "credential-sets-policy", "", true},
		{1, "credential-sets", `{"name":"HubCreds","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`, true},
		{1, "credential-sets", `{"name":"exfil","loginServer":"attacker.example","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`, true},
		{1, "credential-sets", `{"name":"bad-refs","loginServer":"docker.io","usernameSecretIdentifier":"env://HOME","passwordSecretIdentifier":"file:///etc/shadow"}`, true},
		{2, "credential-sets/cfg-set", `{"passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`, true},
		{3, "credential-sets/cfg-set", "", true},
		{4, "cache-rules", `{}`, true},
		{0, "nothing", "", true},
		{0, "cache-rules", "", false},
		{1, "credential-sets", `{"name":"HubCreds","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_HUB_USER","passwordSecretIdentifier":"env://REGCACHE_SECRET_HUB_PASS"}`, false},
		{3, "credential-sets/cfg-set", "", false},
	} {
		f.Add(seed.method, seed.path, []byte(seed.body), seed.token)
	}
	f.Fuzz(func(t *testing.T, m uint8, path string, body []byte, token bool) {
		method := adminMethods[int(m)%len(adminMethods)]
		path = "/admin/v1/" + path
		before := state(t)
		logStart := logs.Len()
		rec := adminDo(t, method, path, body, token)
		defer reset(t)
		what := fmt.Sprintf("%s %q (token %v) body %q", method, path, token, body)
		if rec.Code >= 500 {
			t.Fatalf("%s answered %d: %s", what, rec.Code, rec.Body)
		}
		if !token {
			// net/http's mux redirects an unclean path ("/admin/v1/.") to
			// its clean form before any handler runs: no bypass, as long
			// as the clean path asks for the token in turn.
			code, loc := rec.Code, rec.Header().Get("Location")
			if code == http.StatusMovedPermanently || code == http.StatusTemporaryRedirect || code == http.StatusPermanentRedirect {
				u, err := url.Parse(loc)
				if err != nil || !strings.HasPrefix(u.Path, "/admin/") {
					t.Fatalf("%s redirected without the admin token to %q", what, loc)
				}
				code = adminDo(t, method, u.Path, body, false).Code
			}
			if code != http.StatusUnauthorized {
				t.Fatalf("%s answered %d (after redirects to %q) without the admin token", what, code, loc)
			}
			if after := state(t); after != before {
				t.Fatalf("%s changed the rules or sets without the admin token: %s -> %s", what, before, after)
			}
		}
		if rec.Code >= 400 && method != http.MethodHead {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s answered %d with %q: not an error with a code and a message (%v)", what, rec.Code, rec.Body, err)
			}
		}
		var headers strings.Builder
		rec.Header().Write(&headers)
		out := map[string]string{"headers": headers.String(), "body": rec.Body.String(), "log": logs.String()[logStart:]}
		for _, secret := range secrets {
			if strings.Contains(path, secret) || bytes.Contains(body, []byte(secret)) {
				continue
			}
			for where, text := range out {
				if strings.Contains(text, secret) {
					t.Fatalf("%s: the %s holds a secret value (%q...)", what, where, secret[:3])
				}
			}
		}
	})
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

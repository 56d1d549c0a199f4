package registry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/regcache/regcache/cache"
)

// basicGate is a small proxy in front of a real registry that asks for
// Basic credentials (so that the rule's credentials are actually sent) and
// records every path that reached the registry, with or without them.
type basicGate struct {
	next http.Handler
	mu   sync.Mutex
	seen []string // "auth " or "anon " + path + "?" + raw query
}

func (g *basicGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _, ok := r.BasicAuth()
	g.mu.Lock()
	g.seen = append(g.seen, map[bool]string{true: "auth ", false: "anon "}[ok]+r.URL.Path+"?"+r.URL.RawQuery)
	g.mu.Unlock()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	g.next.ServeHTTP(w, r)
}

func (g *basicGate) paths() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.seen...)
}

// basicSet is a Credentials with one set, "HubCreds", for docker.io.
type basicSet struct{}

func (basicSet) LoginServer(_ context.Context, set string) (string, bool, error) {
	return "docker.io", set == "HubCreds", nil
}
func (basicSet) Refused(string, string, bool) {}
func (basicSet) Authenticator(_ context.Context, set string) (authn.Authenticator, error) {
	if set == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: "hub-user", Password: "hub-pass"}, nil
}

// A rule docker.io/library/* -> hub/* must never reach, with or without its
// credentials, a repository of the upstream outside docker.io/library/:
// not through containerd's ns parameter, not through path segments such as
// "..", not through a redirect.
func TestRuleScopeCannotBeEscaped(t *testing.T) {
	t.Parallel()
	real := newUpstream(t)
	gate := &basicGate{next: real.Config.Handler}
	up := httptest.NewServer(gate)
	t.Cleanup(up.Close)
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, real, "private/secret:v1", img)
	pushImage(t, real, "library/app:v1", img)
	digest, _ := layerBytes(t, img)
	rule := hubRule
	rule.CredentialSet = "HubCreds"
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{rule}, creds: basicSet{}})

	// The rule works: its own repository is served.
	if resp, body := do(t, "GET", s.url+"/v2/hub/app/manifests/v1", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("in-scope pull: %s %s", resp.Status, body)
	}
	for _, path := range []string{
		"/v2/private/secret/manifests/v1",
		"/v2/private/secret/manifests/v1?ns=docker.io%2Flibrary%2F..",
		"/v2/private/secret/manifests/v1?ns=docker.io%2Flibrary%2F..%2F",
		"/v2/private/secret/blobs/" + digest + "?ns=docker.io%2Flibrary%2F..",
		"/v2/private/secret/tags/list?ns=docker.io%2Flibrary%2F..",
		"/v2/x/manifests/v1?ns=docker.io%2Flibrary%2F..%2F_catalog%3Fx%3D",
		"/v2/x/manifests/v1?ns=docker.io%2F..%2F_catalog%3Fx%3D",
		"/v2/secret/manifests/v1?ns=docker.io%2Flibrary%2F..%2Fprivate",
		"/v2/private/secret/manifests/v1?ns=docker.io%3A443%2Flibrary%2F..",
		"/v2/app/manifests/v1?ns=docker.io%2Flibrary",
		"/v2/app/manifests/v1?ns=docker.io%2F",
		"/v2/app/manifests/v1?ns=%2E%2E",
	} {
		t.Run(path, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				resp, body := do(t, method, s.url+path, nil, nil)
				if resp.StatusCode/100 == 2 {
					t.Errorf("%s %s answered %s (%d bytes): out of the rule's scope", method, path, resp.Status, len(body))
				}
				if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
					t.Errorf("%s %s answered %s, want 400 or 404", method, path, resp.Status)
				}
			}
		})
	}
	for _, p := range gate.paths() {
		if !strings.HasPrefix(p, "auth /v2/library/app/") && !strings.HasPrefix(p, "anon /v2/library/app/") && p != "anon /v2/?" && p != "auth /v2/?" {
			t.Errorf("the upstream was asked for %q, outside the rule's source docker.io/library/*", p)
		}
	}
	for _, r := range []string{"hub/../private/secret", "hub/../private/secret/", "hub/..", "hub/../_catalog?x=", "hub/private/secret", "private/secret"} {
		if ok, err := s.meta.HasRepo(t.Context(), r); err != nil || ok {
			t.Errorf("metadata records repository %q (err %v); only hub/app was pulled", r, err)
		}
	}
}

// redirector is a fault-injecting proxy in front of a real registry: blob
// GETs of one repository are redirected to target(digest).
type redirector struct {
	next   http.Handler
	from   string // path prefix, e.g. /v2/library/app/blobs/
	target func(digest string) string
}

func (rd *redirector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d, ok := strings.CutPrefix(r.URL.Path, rd.from); ok && r.Method == http.MethodGet {
		http.Redirect(w, r, rd.target(d), http.StatusTemporaryRedirect)
		return
	}
	rd.next.ServeHTTP(w, r)
}

// An upstream redirect is followed to a download host (which gets no
// credentials), never to another repository of the upstream with the
// rule's credentials.
func TestUpstreamRedirects(t *testing.T) {
	t.Parallel()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	digest, layer := layerBytes(t, img)

	t.Run("to another repository", func(t *testing.T) {
		t.Parallel()
		real := newUpstream(t)
		pushImage(t, real, "private/secret:v1", img)
		pushImage(t, real, "library/app:v1", img)
		gate := &basicGate{}
		gate.next = &redirector{next: real.Config.Handler, from: "/v2/library/app/blobs/",
			target: func(d string) string { return "/v2/private/secret/blobs/" + d }}
		up := httptest.NewServer(gate)
		t.Cleanup(up.Close)
		rule := hubRule
		rule.CredentialSet = "HubCreds"
		s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{rule}, creds: basicSet{}})
		resp, body := do(t, "GET", s.url+"/v2/hub/app/blobs/"+digest, nil, nil)
		if resp.StatusCode == 200 {
			t.Errorf("blob served through a redirect to another repository (%d bytes)", len(body))
		}
		for _, p := range gate.paths() {
			if strings.Contains(p, "private") {
				t.Errorf("the upstream was asked for %q after a redirect", p)
			}
		}
	})

	t.Run("to a download host", func(t *testing.T) {
		t.Parallel()
		real := newUpstream(t)
		pushImage(t, real, "library/app:v1", img)
		var cdnAuth []string
		var mu sync.Mutex
		cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			cdnAuth = append(cdnAuth, r.Header.Get("Authorization"))
			mu.Unlock()
			w.Write(layer)
		}))
		t.Cleanup(cdn.Close)
		gate := &basicGate{}
		gate.next = &redirector{next: real.Config.Handler, from: "/v2/library/app/blobs/",
			target: func(d string) string { return cdn.URL + "/blobs/" + d + "?X-Amz-Signature=s3cr3t" }}
		up := httptest.NewServer(gate)
		t.Cleanup(up.Close)
		rule := hubRule
		rule.CredentialSet = "HubCreds"
		s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{rule}, creds: basicSet{}})
		resp, body := do(t, "GET", s.url+"/v2/hub/app/blobs/"+digest, nil, nil)
		if resp.StatusCode != 200 || string(body) != string(layer) {
			t.Fatalf("blob through a download host: %s, %d bytes", resp.Status, len(body))
		}
		mu.Lock()
		defer mu.Unlock()
		if len(cdnAuth) != 1 || cdnAuth[0] != "" {
			t.Errorf("download host requests carried Authorization %q; want one request without", cdnAuth)
		}
	})
}

// A client naming one upstream image by source (containerd's ns, a
// path-prefixed mirror) is never served another: a wildcard rule does not
// route a source to a local name that another rule owns (here hub/redis,
// the static target of docker.io/bitnami/redis, which hub-library would
// give docker.io/library/redis).
func TestRoutedNameNeverServesAnotherImage(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	library, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	bitnami, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/redis:v1", library)
	pushImage(t, up, "bitnami/redis:v1", bitnami)
	_, bitnamiManifest := upstreamManifest(t, up, "bitnami/redis", "v1")
	static := cache.Rule{Name: "bitnami-redis", Source: "docker.io/bitnami/redis", Target: "hub/redis"}
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule, static}})

	if resp, body := do(t, "GET", s.url+"/v2/hub/redis/manifests/v1", nil, nil); resp.StatusCode != 200 || string(body) != string(bitnamiManifest) {
		t.Fatalf("hub/redis:v1: %s; want docker.io/bitnami/redis:v1", resp.Status)
	}
	for _, path := range []string{
		"/v2/library/redis/manifests/v1?ns=docker.io",
		"/v2/redis/manifests/v1?ns=docker.io",
		"/v2/docker.io/library/redis/manifests/v1",
	} {
		resp, body := do(t, "GET", s.url+path, nil, nil)
		if string(body) == string(bitnamiManifest) {
			t.Errorf("GET %s (docker.io/library/redis) answered %s with docker.io/bitnami/redis's manifest", path, resp.Status)
		}
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s answered %s, want 404: no rule serves docker.io/library/redis under a name of its own", path, resp.Status)
		}
	}
}

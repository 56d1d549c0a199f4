package credentials_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/storage"
)

// cdn is a blob host an upstream redirects blob downloads to, as Docker Hub
// and ghcr.io redirect to their CDNs. It records the Authorization header
// of every request.
type cdn struct {
	*httptest.Server
	mu    sync.Mutex
	auths []string
}

// TestAuthorizationNotForwardedToRedirectedBlobHost: the upstream
// Authorization header (HTTP basic with a credential set's secrets, or the
// bearer token they bought) goes to the registry host only, never to the
// host a blob download is redirected to, even on the same IP address with
// another port (net/http would copy headers set on the request itself to
// a redirect to the same host name).
func TestAuthorizationNotForwardedToRedirectedBlobHost(t *testing.T) {
	t.Parallel()
	for _, scheme := range []string{"basic", "bearer"} {
		t.Run(scheme, func(t *testing.T) {
			t.Parallel()
			const user, password = "cdn-user", "cdn-s3cr3t-password"
			up := newAuthUpstream(t, user, password)
			token := "bearer-" + randomHex(8)
			c := &cdn{}
			c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c.mu.Lock()
				c.auths = append(c.auths, r.Header.Get("Authorization"))
				c.mu.Unlock()
				// Serve the blob from the registry's storage.
				inner := httptest.NewRequest(http.MethodGet, "/v2/"+strings.TrimPrefix(r.URL.Path, "/cdn/"), nil)
				up.inner.ServeHTTP(w, inner)
			}))
			t.Cleanup(c.Close)
			// The upstream: authentication by scheme, blob GETs redirected.
			up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if scheme == "bearer" {
					if r.URL.Path == "/token" {
						if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
							w.WriteHeader(http.StatusUnauthorized)
							return
						}
						json.NewEncoder(w).Encode(map[string]string{"token": token})
						return
					}
					if r.Header.Get("Authorization") != "Bearer "+token {
						w.Header().Set("WWW-Authenticate", `Bearer realm="`+up.URL+`/token",service="test"`)
						w.WriteHeader(http.StatusUnauthorized)
						return
					}
				} else if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				up.authed.Add(1)
				if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
					http.Redirect(w, r, c.URL+"/cdn/"+strings.TrimPrefix(r.URL.Path, "/v2/")+"?signature=abc", http.StatusTemporaryRedirect)
					return
				}
				up.inner.ServeHTTP(w, r)
			})

			img, err := random.Image(4096, 2)
			if err != nil {
				t.Fatal(err)
			}
			seedRef, _ := name.ParseReference(up.host()+"/team/app:v1", name.Insecure)
			if err := remote.Write(seedRef, img, remote.WithAuth(&authn.Basic{Username: user, Password: password}), remote.WithContext(t.Context())); err != nil {
				t.Fatalf("seed: %v", err)
			}

			// regcache, wired as serve wires it.
			ctx := t.Context()
			dir := t.TempDir()
			logger, logs := newLog()
			blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
			if err != nil {
				t.Fatal(err)
			}
			meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { meta.Close() })
			endpoints, _ := cache.NewEndpoints(map[string]string{"registry.test": up.URL})
			mgr, err := credentials.NewManager(ctx, credentials.Options{
				Records: meta, Endpoints: endpoints, Log: logger,
				LookupEnv: func(k string) (string, bool) {
					return map[string]string{"REGCACHE_SECRET_U": user, "REGCACHE_SECRET_P": password}[k], true
				},
				Config: []credentials.Set{{Name: "team-set", LoginServer: "registry.test", UsernameSecretRef: "env://REGCACHE_SECRET_U", PasswordSecretRef: "env://REGCACHE_SECRET_P"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			rules, err := cache.NewStore(ctx, meta, mgr, []cache.Rule{{Name: "team-app", Source: "registry.test/team/app", Target: "app", CredentialSet: "team-set"}}, logger)
			if err != nil {
				t.Fatal(err)
			}
			puller := cache.NewPuller(rules, endpoints, mgr, blobs, meta, logger, cache.Options{})
			t.Cleanup(puller.Close)
			h, err := registry.New(registry.Config{Backend: puller, Rules: rules, AdminToken: "admin-token-0123456789", Log: logger, CredentialSets: mgr})
			if err != nil {
				t.Fatal(err)
			}
			rc := httptest.NewServer(h)
			t.Cleanup(rc.Close)

			pulled, err := remote.Image(mustRef(t, strings.TrimPrefix(rc.URL, "http://")+"/app:v1"), remote.WithContext(ctx))
			if err != nil {
				t.Fatalf("pull through regcache: %v", err)
			}
			if _, err := pulled.RawConfigFile(); err != nil {
				t.Fatalf("config: %v", err)
			}
			layers, _ := pulled.Layers()
			for _, l := range layers {
				r, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					t.Fatalf("layer: %v", err)
				}
				r.Close()
			}
			c.mu.Lock()
			auths := append([]string(nil), c.auths...)
			c.mu.Unlock()
			if len(auths) < 3 { // the config and two layers
				t.Fatalf("the blob host served %d requests, want every blob (the redirect was not followed?)", len(auths))
			}
			for i, a := range auths {
				if a != "" {
					t.Errorf("request %d to the redirected blob host carried Authorization %q", i, a)
				}
			}
			if up.authed.Load() == 0 {
				t.Errorf("the upstream saw no authenticated request")
			}
			for _, secret := range []string{password, token} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("the log contains a secret:\n%s", logs)
				}
			}
		})
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

package cache

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regcache/regcache/storage"
)

// tokenUpstream is a real registry behind Docker's token flow on plain
// HTTP, as a registry on a private or loopback address often is: /v2/
// challenges with a Bearer realm on the same host over http, the realm
// hands out a token for Basic credentials. It records every Authorization
// header it receives.
type tokenUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	auth []string // "path: header"
}

func newTokenUpstream(t *testing.T) *tokenUpstream {
	t.Helper()
	reg := ggcr.New(ggcr.Logger(stdlog.New(io.Discard, "", 0)))
	u := &tokenUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("Authorization"); h != "" {
			u.mu.Lock()
			u.auth = append(u.auth, r.URL.Path+": "+h)
			u.mu.Unlock()
		}
		if r.URL.Path == "/token" {
			if _, _, ok := r.BasicAuth(); !ok {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"token": "t0ken"})
			return
		}
		if r.Header.Get("Authorization") != "Bearer t0ken" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+u.srv.URL+`/token",service="upstream"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *tokenUpstream) host() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *tokenUpstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth...)
}

// loginSet is a Credentials with one set, "LoSet", for one login server.
type loginSet string

func (l loginSet) LoginServer(_ context.Context, set string) (string, bool, error) {
	return string(l), set == "LoSet", nil
}
func (loginSet) Refused(string, string, bool) {}
func (loginSet) Authenticator(_ context.Context, set string) (authn.Authenticator, error) {
	if set == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: "lo-user", Password: "lo-pass"}, nil
}

func newSchemeFixture(t *testing.T, up *tokenUpstream, overrides map[string]string) *Puller {
	t.Helper()
	dir := t.TempDir()
	blobs, err := storage.OpenBlobs(dir + "/blobs")
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(dir + "/meta.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	creds := loginSet(up.host())
	store, err := NewStore(t.Context(), meta, creds, []Rule{{Name: "loopback", Source: up.host() + "/library/*", Target: "lo/*", CredentialSet: "LoSet"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := NewEndpoints(overrides)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPuller(store, eps, creds, blobs, meta, log, Options{})
	t.Cleanup(p.Close)
	return p
}

// Credentials go over plain HTTP only to an upstream the operator
// configured with an http:// endpoint: an upstream on a loopback or
// private address with no endpoint is reached over https, never silently
// over http.
func TestCredentialsNeverSilentlyOverHTTP(t *testing.T) {
	t.Parallel()
	up := newTokenUpstream(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(up.host()+"/library/app:v1", name.Insecure)
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "u", Password: "p"})); err != nil {
		t.Fatal(err)
	}
	before := len(up.seen())

	t.Run("no endpoint", func(t *testing.T) {
		p := newSchemeFixture(t, up, nil)
		_, err := p.Manifest(t.Context(), "lo/app", "v1")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("pull from an https-only upstream that speaks http: %v, want ErrUnavailable", err)
		}
		if !strings.Contains(err.Error(), "http://") {
			t.Errorf("error %q does not say how to allow plain http (an http:// endpoint)", err)
		}
		for _, h := range up.seen()[before:] {
			if strings.Contains(h, "Basic ") {
				t.Errorf("credentials were sent over plain http: %s", h)
			}
		}
	})
	t.Run("http endpoint configured", func(t *testing.T) {
		p := newSchemeFixture(t, up, map[string]string{up.host(): up.srv.URL})
		c, err := p.Manifest(t.Context(), "lo/app", "v1")
		if err != nil {
			t.Fatalf("pull with an http:// endpoint configured: %v", err)
		}
		c.Body.Close()
	})
}

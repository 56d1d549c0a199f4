package credentials_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/regcache/regcache/storage"
)

// memRecords is an in-memory cache.Records (storage.Meta's record methods).
type memRecords struct {
	mu sync.Mutex
	m  map[string]map[string][]byte
}

func newMemRecords() *memRecords { return &memRecords{m: map[string]map[string][]byte{}} }

func (r *memRecords) PutRecord(_ context.Context, kind, key string, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[kind] == nil {
		r.m[kind] = map[string][]byte{}
	}
	r.m[kind][key] = append([]byte(nil), value...)
	return nil
}

func (r *memRecords) DeleteRecord(_ context.Context, kind, key string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[kind][key]; !ok {
		return storage.ErrNotFound
	}
	delete(r.m[kind], key)
	return nil
}

func (r *memRecords) Records(_ context.Context, kind string) (map[string][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range r.m[kind] {
		out[k] = append([]byte(nil), v...)
	}
	return out, nil
}

// dump returns every stored byte, to search for secret values.
func (r *memRecords) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, kv := range r.m {
		for k, v := range kv {
			b.WriteString(k + "=" + string(v) + "\n")
		}
	}
	return b.String()
}

// syncBuffer collects log output written from several goroutines.
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

func newLog() (*slog.Logger, *syncBuffer) {
	b := &syncBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// authUpstream is go-containerregistry's in-process registry behind HTTP
// basic authentication with one user, whose password can change.
type authUpstream struct {
	*httptest.Server
	inner    http.Handler
	user     string
	password atomic.Value // string
	authed   atomic.Int64 // requests that carried the right credentials
}

func newAuthUpstream(t *testing.T, user, password string) *authUpstream {
	t.Helper()
	u := &authUpstream{inner: registry.New(registry.Logger(log.New(io.Discard, "", 0))), user: user}
	u.password.Store(password)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != u.user || pass != u.password.Load().(string) {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		u.authed.Add(1)
		u.inner.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// host is the upstream's host:port.
func (u *authUpstream) host() string { return strings.TrimPrefix(u.URL, "http://") }

// contextWithCancel is a context that ends with the test or on cancel.
func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}

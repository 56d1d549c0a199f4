package registry_test

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regcache/regcache/accesslog"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/logsink"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/storage"
)

// BenchmarkManifestHit measures the request kubelets and containerd send
// most, a manifest already cached (HEAD or GET, by tag within the tag TTL
// or by digest), through the whole in-process handler: access log (text,
// info level, formatted and discarded), path parser, rule match, metadata
// lookups, file open and headers; the network is left out. Allocations per
// request are the figure to watch (the benchmark program reports them:
// go run ./e2e/bench, BENCHMARKS.md).
func BenchmarkManifestHit(b *testing.B) {
	h, manifest, digest := newHitHandler(b)
	// What containerd and kubelets send: every manifest type.
	const accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
		"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
	for _, bc := range []struct {
		name, method, ref string
	}{
		{"GET by tag", http.MethodGet, "latest"},
		{"GET by digest", http.MethodGet, digest},
		{"HEAD by tag", http.MethodHead, "latest"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(bc.method, "/v2/hub/bench/manifests/"+bc.ref, nil)
			req.Header.Set("Accept", accept)
			w := &discardWriter{h: http.Header{}}
			wantBody := int64(len(manifest))
			if bc.method == http.MethodHead {
				wantBody = 0
			}
			b.ReportAllocs()
			for b.Loop() {
				w.reset()
				h.ServeHTTP(w, req)
				// The header map indexed directly: Get's canonicalisation is
				// not the handler's cost.
				if w.status != http.StatusOK || w.n != wantBody || len(w.h["Docker-Content-Digest"]) != 1 || w.h["Docker-Content-Digest"][0] != digest {
					b.Fatalf("%s %s: status %d, %d body bytes, digest %q; want 200, %d bytes, %s",
						bc.method, req.URL.Path, w.status, w.n, w.h.Get("Docker-Content-Digest"), wantBody, digest)
				}
			}
		})
	}
}

// newHitHandler builds regcache's handler as `regcache serve` wires it, on
// an in-process upstream holding library/bench:latest, and has it cache
// that manifest; it returns the handler, the manifest and its digest.
func newHitHandler(b *testing.B) (http.Handler, []byte, string) {
	b.Helper()
	ctx := context.Background()
	up := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	b.Cleanup(up.Close)
	img, err := random.Image(1024, 2)
	if err != nil {
		b.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(up.URL, "http://")+"/library/bench:latest", name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		b.Fatal(err)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		b.Fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		b.Fatal(err)
	}

	dir := b.TempDir()
	// The production default, as `regcache serve` builds it: text access
	// log at info level into a logsink.Writer (here writing to nowhere).
	sink := logsink.New(io.Discard)
	b.Cleanup(func() { sink.Close() })
	logger := slog.New(accesslog.NewHandler(sink, accesslog.Text, slog.LevelInfo))
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { meta.Close() })
	endpoints, err := cache.NewEndpoints(map[string]string{"docker.io": up.URL})
	if err != nil {
		b.Fatal(err)
	}
	store, err := cache.NewStore(ctx, meta, cache.Anonymous{}, []cache.Rule{hubRule}, logger)
	if err != nil {
		b.Fatal(err)
	}
	puller := cache.NewPuller(store, endpoints, cache.Anonymous{}, blobs, meta, logger, cache.Options{})
	b.Cleanup(puller.Close)
	h, err := registry.New(registry.Config{Backend: puller, Rules: store, AdminToken: testToken, Log: logger})
	if err != nil {
		b.Fatal(err)
	}
	// The miss that caches the manifest, unmeasured.
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v2/hub/bench/manifests/latest", nil))
	if w.status != http.StatusOK || w.n != int64(len(manifest)) {
		b.Fatalf("first GET of the manifest: status %d, %d bytes", w.status, w.n)
	}
	return h, manifest, digest.String()
}

// discardWriter is a reusable http.ResponseWriter that counts the body and
// keeps nothing, so that the benchmark counts the handler's allocations,
// not a recorder's. Like net/http's writer it implements io.ReaderFrom,
// with its own buffer.
type discardWriter struct {
	h      http.Header
	status int
	n      int64
	buf    [32 << 10]byte
}

func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += int64(len(p))
	return len(p), nil
}

func (w *discardWriter) ReadFrom(r io.Reader) (int64, error) {
	w.WriteHeader(http.StatusOK)
	var total int64
	for {
		n, err := r.Read(w.buf[:])
		total += int64(n)
		w.n += int64(n)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

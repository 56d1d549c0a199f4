package registry_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/metrics"
	"github.com/regcache/regcache/status"
)

// BenchmarkHotPath measures cache hits (a manifest by tag within its TTL,
// and a 4 KiB blob) through the whole in-process handler, access log
// included (formatted and discarded), with metrics off and on: the cost of
// metrics, X-Cache and request IDs on the path that serves most requests.
// Compare the ns/op and allocs/op of the two:
//
//	go test -run '^$' -bench BenchmarkHotPath -benchmem -count 6 ./registry/
func BenchmarkHotPath(b *testing.B) {
	up := newUpstream(b)
	img, err := random.Image(4096, 1)
	if err != nil {
		b.Fatal(err)
	}
	pushImage(b, up, "library/bench:latest", img)
	layer, _ := layerBytes(b, img)
	for _, mode := range []string{"metrics=off", "metrics=on"} {
		sc := stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}, logs: io.Discard}
		var m *metrics.Metrics
		if mode == "metrics=on" {
			if m, err = metrics.New(prometheus.NewRegistry(), metrics.Options{}); err != nil {
				b.Fatal(err)
			}
			sc.observer = m
		}
		st := newStack(b, sc)
		if m != nil {
			if err := m.Watch(status.Sources{Rules: st.store, Fills: st.puller, Store: st.blobs}); err != nil {
				b.Fatal(err)
			}
		}
		for _, bc := range []struct{ name, path string }{
			{"manifest", "/v2/hub/bench/manifests/latest"},
			{"blob", "/v2/hub/bench/blobs/" + layer},
		} {
			req := httptest.NewRequest(http.MethodGet, bc.path, nil)
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
			w := &discardWriter{h: http.Header{}}
			// Warm: the first GET fills; wait for the blob to be linked.
			for range 100 {
				w.reset()
				st.handler.ServeHTTP(w, req)
				if w.h.Get("X-Cache") == "HIT" {
					break
				}
			}
			b.Run(mode+"/"+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					w.reset()
					st.handler.ServeHTTP(w, req)
					if w.status != http.StatusOK || w.n == 0 {
						b.Fatalf("GET %s: status %d, %d bytes", bc.path, w.status, w.n)
					}
				}
			})
		}
	}
}

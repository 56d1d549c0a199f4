package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/metrics"
	"github.com/regcache/regcache/registry"
)

// BenchmarkHitCounting is what metrics add to one cache hit: the puller's
// Served and the handler's Request, alone and from every CPU at once
// (counters shared by all requests):
//
//	go test -run '^$' -bench BenchmarkHitCounting -benchmem ./metrics/
func BenchmarkHitCounting(b *testing.B) {
	m, err := metrics.New(prometheus.NewRegistry(), metrics.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ri := registry.RequestInfo{Route: registry.RouteBlob, Method: "GET", Status: 200, Duration: 300 * time.Microsecond,
		Cache: cache.SourceHit, Rule: "hub-library", Bytes: 4096}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Served("hub-library", cache.SourceHit)
			m.Request(ri)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Served("hub-library", cache.SourceHit)
				m.Request(ri)
			}
		})
	})
}

package e2e

import (
	"encoding/json"
	"testing"
)

// checkEvictionRun checks the eviction run of a benchmark result: both
// runs reported, no client error, evictions with the limit and none
// without, every pull served, and the two ratios present.
func checkEvictionRun(t *testing.T, raw []byte) {
	t.Helper()
	var report struct {
		Eviction *struct {
			Images          int      `json:"images"`
			Loops           int      `json:"loops"`
			ThroughputRatio *float64 `json:"throughput_ratio"`
			P99Ratio        *float64 `json:"blob_p99_ratio"`
			Runs            []struct {
				Name          string  `json:"name"`
				MaxSize       int64   `json:"max_size"`
				Pulls         int     `json:"pulls"`
				BytesServed   int64   `json:"bytes_served"`
				BlobP99ms     float64 `json:"blob_p99_ms"`
				EvictedImages int64   `json:"evicted_images"`
				Errors        int     `json:"errors"`
				Error         string  `json:"error"`
			} `json:"runs"`
		} `json:"eviction"`
	}
	if err := json.Unmarshal(raw, &report); err != nil {
		t.Fatal(err)
	}
	e := report.Eviction
	if e == nil || len(e.Runs) != 2 {
		t.Fatalf("eviction run missing or incomplete: %+v", e)
	}
	for i, r := range e.Runs {
		if r.Errors != 0 {
			t.Errorf("eviction run %s: %d client errors, first: %s", r.Name, r.Errors, r.Error)
		}
		if r.Pulls != e.Images*e.Loops || r.BytesServed == 0 || r.BlobP99ms <= 0 {
			t.Errorf("eviction run %s: %d pulls (want %d), %d bytes, p99 %v", r.Name, r.Pulls, e.Images*e.Loops, r.BytesServed, r.BlobP99ms)
		}
		if limited := i == 0; (r.MaxSize > 0) != limited || (r.EvictedImages > 0) != limited {
			t.Errorf("eviction run %s: max size %d, %d images evicted; want evictions with the limit only", r.Name, r.MaxSize, r.EvictedImages)
		}
	}
	if e.ThroughputRatio == nil || e.P99Ratio == nil {
		t.Errorf("eviction ratios missing: %+v %+v", e.ThroughputRatio, e.P99Ratio)
	}
}

package probe

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

func post(t *testing.T, h http.HandlerFunc, path string) Stats {
	t.Helper()
	w := httptest.NewRecorder()
	h(w, httptest.NewRequest(http.MethodPost, path, nil))
	if w.Code != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, w.Code, w.Body)
	}
	var s Stats
	if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return s
}

// TestProbe checks that /end reports the most goroutines the sampler saw
// between /begin and /end, also when they ended before /end, and the
// allocations made meanwhile.
func TestProbe(t *testing.T) {
	p := &probe{}
	begin := post(t, p.begin, "/begin")
	release, exited := make(chan struct{}), make(chan struct{}, 50)
	for range 50 {
		go func() {
			<-release
			exited <- struct{}{}
		}()
	}
	// Wait (a condition, not a duration) until the sampler saw them.
	for deadline := time.Now().Add(10 * time.Second); p.peak.Load() < int64(begin.Goroutines+50); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the sampler never saw the 50 goroutines (peak %d, %d at /begin)", p.peak.Load(), begin.Goroutines)
		}
	}
	close(release)
	for range 50 {
		<-exited
	}
	for runtime.NumGoroutine() > begin.Goroutines+10 {
		runtime.Gosched()
	}
	kept := make([]*[64]byte, 0, 1000)
	for range 1000 {
		kept = append(kept, new([64]byte))
	}
	end := post(t, p.end, "/end")
	if end.PeakGoroutines < begin.Goroutines+50 {
		t.Errorf("peak goroutines %d, want at least %d + 50 (the ones that ran between /begin and /end)", end.PeakGoroutines, begin.Goroutines)
	}
	if end.Goroutines >= begin.Goroutines+50 {
		t.Errorf("%d goroutines at /end, want the 50 gone", end.Goroutines)
	}
	if got := end.Mallocs - begin.Mallocs; got < uint64(len(kept)) {
		t.Errorf("%d allocations between /begin and /end, want at least %d", got, len(kept))
	}
	if end.TotalAlloc-begin.TotalAlloc < 64*uint64(len(kept)) {
		t.Errorf("%d bytes allocated, want at least %d", end.TotalAlloc-begin.TotalAlloc, 64*len(kept))
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:0", "localhost", ":0"} {
		if err := Start(addr); err == nil {
			t.Errorf("Start(%q): no error, want a refusal", addr)
		}
	}
	if err := Start(""); err != nil {
		t.Errorf("Start(\"\"): %v, want nothing started", err)
	}
}

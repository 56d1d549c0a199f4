package cache

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A fill whose upstream stops sending is aborted after the idle timeout,
// and the error says so (not "context canceled"), to the waiting client
// and in the log.
func TestStalledFillSaysIdleTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(want)))
		w.Write(want[:10])
		w.(http.Flusher).Flush()
		<-release // stalls until the test ends
		return true
	})
	var logs logBuffer
	p := NewPuller(f.store, f.eps, Anonymous{}, f.blobs, f.meta, slog.New(slog.NewTextHandler(&logs, nil)), Options{IdleTimeout: 100 * time.Millisecond})
	t.Cleanup(p.Close)
	c, err := p.Blob(t.Context(), "hub/app", digest)
	if err == nil {
		_, err = io.ReadAll(c.Body)
		c.Body.Close()
	}
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no data from the upstream for 100ms") {
		t.Errorf("reading a stalled fill: %v; want ErrUnavailable saying the upstream sent nothing for the idle timeout", err)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "blob fill failed"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line for the failed fill:\n%s", logs.String())
		}
	}
	if l := logs.String(); !strings.Contains(l, "no data from the upstream for 100ms") || strings.Contains(l, "context canceled") {
		t.Errorf("the log of a stalled fill does not name the idle timeout:\n%s", l)
	}
}

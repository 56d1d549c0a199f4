package registry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regcache/regcache/cache"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A client that gives up while regcache waits for the upstream is not a
// server failure: no ERROR line, no 500 recorded.
func TestClientGoneIsNotAnError(t *testing.T) {
	t.Parallel()
	real := newUpstream(t)
	asked := make(chan struct{}, 1)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			asked <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		real.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	var logs lockedBuffer
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}, logs: &logs})
	// The manifest fetch goes on after its client left, until the upstream
	// answers: released before the servers close.
	t.Cleanup(func() { close(release) })

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v2/hub/app/manifests/v1", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-asked // regcache waits for the upstream
	cancel()
	<-done
	// The handler returns once the upstream call ends with the request's
	// context; its access log line is the last thing it writes.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), `msg=request`); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no access log line:\n%s", logs.String())
		}
	}
	if l := logs.String(); strings.Contains(l, "level=ERROR") || strings.Contains(l, "status=500") || strings.Contains(l, "status=503") {
		t.Errorf("a client that went away was logged as a failure:\n%s", l)
	}
}

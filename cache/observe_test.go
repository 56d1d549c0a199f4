package cache

import (
	"io"
	"net/http"
	"sync"
	"testing"
	"time"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	served   map[Source]int
	joined   int
	requests []string // "METHOD status"
	fetched  int64
}

func (r *recorder) Served(rule string, src Source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.served[src]++
}

func (r *recorder) Joined(string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joined++
}

func (r *recorder) UpstreamRequest(upstream, method string, status int, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, method+" "+http.StatusText(status))
}

func (r *recorder) Fetched(upstream string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetched += n
}

// TestObserverSeesOneFillAndItsWaiters: three clients miss the same blob
// while no byte arrived; one fill runs, the two others join it. Each read
// is a miss for its rule, the outcome of the joiners says so, and the one
// upstream GET and its bytes are reported.
func TestObserverSeesOneFillAndItsWaiters(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	rec := &recorder{served: map[Source]int{}}
	// The fixture's puller, observed (before any request).
	f.puller.obs, f.puller.clients.obs = rec, rec
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	g := f.gate(t, digest)

	const clients = 3
	outcomes := make([]Outcome, clients)
	contents := make([]Content, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			var err error
			contents[i], err = f.puller.Blob(WithOutcome(t.Context(), &outcomes[i]), "hub/app", digest)
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait() // every client asked while no byte had arrived
	if t.Failed() {
		return
	}
	g.open()
	for _, c := range contents {
		if b, err := io.ReadAll(c.Body); err != nil || len(b) != len(want) {
			t.Fatalf("read %d bytes, %v", len(b), err)
		}
		c.Body.Close()
	}
	joined := 0
	for _, o := range outcomes {
		if o.Source != SourceMiss || o.Rule != hubRule.Name {
			t.Errorf("outcome %+v, want a miss of %s", o, hubRule.Name)
		}
		if o.Joined {
			joined++
		}
	}
	// The fill reports its bytes once the copy ended.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		rec.mu.Lock()
		fetched := rec.fetched
		rec.mu.Unlock()
		if fetched == int64(len(want)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetched %d bytes reported, want %d", fetched, len(want))
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if joined != clients-1 || rec.joined != clients-1 || rec.served[SourceMiss] != clients || len(rec.served) != 1 {
		t.Errorf("%d outcomes joined, observer: %d joined, served %v; want %d joined and %d misses", joined, rec.joined, rec.served, clients-1, clients)
	}
	gets := 0
	for _, r := range rec.requests {
		if r == "GET OK" {
			gets++
		}
	}
	if gets != 1 {
		t.Errorf("upstream requests %v, want one GET answered 200", rec.requests)
	}
}

package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/regcache/regcache/storage"
)

// peerStep is what one Open of testPeers does.
type peerStep struct {
	peer string // the owner it names; "" says this replica owns it
	err  error  // the owner cannot be reached
	cut  int64  // the stream breaks after this many bytes (-1: never)
}

// testPeers stands for the other replicas: it streams the blob from the
// real upstream registry (as an owner's fill would), breaking the stream
// as its plan says. Past its plan, it says this replica owns the digest.
type testPeers struct {
	t        *testing.T
	upstream string // base URL of the real registry
	path     string // repository on it
	plan     []peerStep

	mu      sync.Mutex
	offsets []int64 // of every Open
}

// Owner names the owner of the next step of the plan.
func (p *testPeers) Owner(string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := len(p.offsets); i < len(p.plan) {
		return p.plan[i].peer
	}
	return ""
}

func (p *testPeers) Open(ctx context.Context, peer, repo, digest string, off int64) (io.ReadCloser, int64, error) {
	p.mu.Lock()
	i := len(p.offsets)
	p.offsets = append(p.offsets, off)
	p.mu.Unlock()
	step := p.plan[i]
	if peer != step.peer {
		p.t.Errorf("Open of %s, want the owner named, %s", peer, step.peer)
	}
	if step.err != nil {
		return nil, 0, step.err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.upstream+"/v2/"+p.path+"/blobs/"+digest, nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("test peer: %s", resp.Status)
	}
	// Skip to the offset as an owner serving from it would.
	if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
		resp.Body.Close()
		return nil, 0, err
	}
	return &cutBody{rc: resp.Body, left: step.cut}, resp.ContentLength, nil
}

func (p *testPeers) calls() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.offsets...)
}

// cutBody breaks after left bytes, as the stream of a killed replica.
type cutBody struct {
	rc   io.ReadCloser
	left int64 // -1: never
}

var errKilled = errors.New("connection reset by peer (the owner was killed)")

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, errKilled
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	return n, err
}

func (b *cutBody) Close() error { return b.rc.Close() }

// peerPuller returns a puller of the fixture's store whose cluster is
// peers; its upstream requests go through the fixture's counting proxy.
func peerPuller(t *testing.T, f *fixture, plan ...peerStep) (*Puller, *testPeers, *logBuffer) {
	t.Helper()
	peers := &testPeers{t: t, upstream: f.upstream.URL, path: "library/app", plan: plan}
	var logs logBuffer
	p := NewPuller(f.store, f.eps, Anonymous{}, f.blobs, f.meta, slog.New(slog.NewTextHandler(&logs, nil)),
		Options{Transport: &f.transport, Peers: peers})
	t.Cleanup(p.Close)
	return p, peers, &logs
}

// rangeGETs returns the Range headers of the upstream GETs of digest.
func (f *fixture) recordRanges(digest string) func() []string {
	var mu sync.Mutex
	var ranges []string
	f.fault.Store(func(_ http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+digest) {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
		}
		return false
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), ranges...)
	}
}

// TestPeerTakeover: a fill streaming from the owner replica continues,
// when the owner's stream breaks mid-blob, from the bytes it has: from the
// next owner, or from the upstream with a Range request for exactly the
// rest. The client gets the whole verified blob; it is stored and linked.
func TestPeerTakeover(t *testing.T) {
	t.Parallel()
	const cut = 1500
	for _, tc := range []struct {
		name    string
		plan    []peerStep
		offsets []int64  // of the Opens
		ranges  []string // of the upstream GETs ("" a whole GET)
		from    string   // in the "cached blob" line
	}{
		{name: "owner killed, rest from the upstream", plan: []peerStep{{peer: "10.0.0.1:5001", cut: cut}},
			offsets: []int64{0}, ranges: []string{"bytes=1500-%d"}, from: `from="[peer 10.0.0.1:5001 (1500 bytes) upstream (%d bytes)]"`},
		{name: "owner killed, rest from the next owner", plan: []peerStep{{peer: "10.0.0.1:5001", cut: cut}, {peer: "10.0.0.2:5001", cut: -1}},
			offsets: []int64{0, cut}, ranges: nil, from: `from="[peer 10.0.0.1:5001 (1500 bytes) peer 10.0.0.2:5001 (%d bytes)]"`},
		{name: "two owners killed", plan: []peerStep{{peer: "10.0.0.1:5001", cut: cut}, {peer: "10.0.0.2:5001", cut: 100}},
			offsets: []int64{0, cut}, ranges: []string{"bytes=1600-%d"}, from: `from="[peer 10.0.0.1:5001 (1500 bytes) peer 10.0.0.2:5001 (100 bytes) upstream (%d bytes)]"`},
		{name: "owner unreachable before the first byte", plan: []peerStep{{peer: "10.0.0.1:5001", err: errors.New("connection refused")}},
			offsets: []int64{0}, ranges: []string{""}, from: `from="[upstream (%d bytes)]"`},
		{name: "this replica owns it", plan: nil,
			offsets: nil, ranges: []string{""}, from: `from="[upstream (%d bytes)]"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Anonymous{}, hubRule)
			img := f.push(t, "library/app:v1")
			digest, want := layerOf(t, img)
			if len(want) < cut+200 {
				t.Fatalf("layer of %d bytes: too small for the test", len(want))
			}
			ranges := f.recordRanges(digest)
			p, peers, logs := peerPuller(t, f, tc.plan...)

			if got := reader(t)(p.Blob(t.Context(), "hub/app", digest)); !bytes.Equal(got, want) {
				t.Fatalf("client got %d bytes, want the %d of the layer", len(got), len(want))
			}
			p.Close() // waits for the fill to end: it linked the blob and logged its sources
			if _, err := f.meta.Linked(t.Context(), "hub/app", digest); err != nil {
				t.Fatalf("the blob was not linked: %v", err)
			}
			if got := peers.calls(); fmt.Sprint(got) != fmt.Sprint(tc.offsets) {
				t.Fatalf("the owners were asked from offsets %v, want %v", got, tc.offsets)
			}
			var wantRanges []string
			for _, r := range tc.ranges {
				if strings.Contains(r, "%d") {
					r = fmt.Sprintf(r, len(want)-1)
				}
				wantRanges = append(wantRanges, r)
			}
			if got := ranges(); fmt.Sprint(got) != fmt.Sprint(wantRanges) {
				t.Fatalf("upstream GETs with Range %q, want %q", got, wantRanges)
			}
			rest := int64(len(want))
			for _, s := range tc.plan {
				if s.err == nil && s.cut > 0 {
					rest -= s.cut
				}
			}
			if wantFrom := fmt.Sprintf(tc.from, rest); !strings.Contains(logs.String(), wantFrom) {
				t.Fatalf("the cached blob line does not say %s:\n%s", wantFrom, logs.String())
			}
		})
	}
}

// TestPeerTakeoverNeedsRange: an upstream that answers a resume's Range
// with the whole blob (200) fails the fill: nothing is stored, the client
// gets an error (and retries).
func TestPeerTakeoverNeedsRange(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, _ := layerOf(t, img)
	f.fault.Store(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Range") == "" {
			return false
		}
		r.Header.Del("Range") // an upstream without range support
		f.forward(w, r, nil)
		return true
	})
	p, _, _ := peerPuller(t, f, peerStep{peer: "10.0.0.1:5001", cut: 1000})
	c, err := p.Blob(t.Context(), "hub/app", digest)
	if err == nil {
		_, err = io.ReadAll(c.Body)
		c.Body.Close()
	}
	if err == nil || !strings.Contains(fmt.Sprint(err), "fill of") {
		t.Fatalf("read a blob whose resume got a 200: err %v", err)
	}
	if err := fillEnded(t, c); err == nil || !strings.Contains(err.Error(), "want 206") {
		t.Fatalf("fill error %v, want the refused resume", err)
	}
	if _, err := f.blobs.Stat(t.Context(), digest); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a failed resume left the blob in the store: %v", err)
	}
}

// TestPeerCorruptBytesNotStored: bytes from an owner are verified like the
// upstream's: a flipped byte fails the fill, whatever the source.
func TestPeerCorruptBytesNotStored(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	bad := bytes.Clone(want)
	bad[10] ^= 0xff
	p, _, _ := peerPuller(t, f)
	p.opts.Peers = &bytesPeers{body: bad}
	c, err := p.Blob(t.Context(), "hub/app", digest)
	if err == nil {
		_, err = io.ReadAll(c.Body)
		c.Body.Close()
	}
	if !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("a blob from an owner that sent wrong bytes: err %v, want a digest mismatch", err)
	}
	if _, err := f.blobs.Stat(t.Context(), digest); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("wrong bytes from an owner were stored: %v", err)
	}
}

// bytesPeers is an owner that streams body, after hold is closed (nil:
// at once).
type bytesPeers struct {
	body []byte
	hold chan struct{}
}

func (p *bytesPeers) Owner(string) string { return "10.0.0.1:5001" }

func (p *bytesPeers) Open(_ context.Context, _, _, _ string, off int64) (io.ReadCloser, int64, error) {
	return io.NopCloser(&heldReader{r: bytes.NewReader(p.body[off:]), hold: p.hold}), int64(len(p.body)), nil
}

type heldReader struct {
	r    io.Reader
	hold chan struct{}
}

func (h *heldReader) Read(b []byte) (int, error) {
	if h.hold != nil {
		<-h.hold
	}
	return h.r.Read(b)
}

// TestPeerRequestFetchesFromUpstream: a fill started by another replica's
// request never asks the cluster (no forwarding loops), and a replica may
// not follow a fill that streams from a replica itself (ErrNotOwner).
func TestPeerRequestFetchesFromUpstream(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	digest, want := layerOf(t, img)
	p, peers, _ := peerPuller(t, f, peerStep{peer: "10.0.0.1:5001", cut: -1})
	if got := reader(t)(p.Blob(PeerRequest(t.Context()), "hub/app", digest)); !bytes.Equal(got, want) {
		t.Fatal("a peer's request did not get the layer bytes")
	}
	if got := peers.calls(); len(got) != 0 {
		t.Fatalf("a peer's request asked the cluster %d times, want never", len(got))
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+digest); n != 1 {
		t.Fatalf("upstream GETs = %d, want 1", n)
	}

	// A client's fill streaming from an owner (held) refuses a replica's
	// request for the same blob; the client still gets its bytes.
	layers, _ := img.Layers()
	d2, _ := layers[1].Digest()
	rc, _ := layers[1].Compressed()
	want2, _ := io.ReadAll(rc)
	rc.Close()
	owner := &bytesPeers{body: want2, hold: make(chan struct{})}
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(owner.hold) }) }) // before the puller closes
	p.opts.Peers = owner
	c, err := p.Blob(t.Context(), "hub/app", d2.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Body.Close()
	if _, err := p.Blob(PeerRequest(t.Context()), "hub/app", d2.String()); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("a replica following a fill that streams from a replica: err %v, want ErrNotOwner", err)
	}
	release.Do(func() { close(owner.hold) })
	if got, err := io.ReadAll(c.Body); err != nil || !bytes.Equal(got, want2) {
		t.Fatalf("client: %d bytes, err %v; want the %d layer bytes", len(got), err, len(want2))
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+d2.String()); n != 0 {
		t.Fatalf("upstream GETs of a blob streamed from its owner = %d, want 0", n)
	}
}

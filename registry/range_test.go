package registry_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/regcache/regcache/cache"
)

// heldBlob is a fault-injecting proxy in front of a real registry: the
// GET of one blob answers its real length, with the byte at flip
// inverted, and stops after hold bytes until release is closed.
type heldBlob struct {
	next    http.Handler
	path    string
	body    []byte
	flip    int // -1: none
	hold    int
	release chan struct{}

	mu   sync.Mutex
	gets int
}

func (h *heldBlob) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != h.path || r.Method != http.MethodGet {
		h.next.ServeHTTP(w, r)
		return
	}
	h.mu.Lock()
	h.gets++
	h.mu.Unlock()
	body := bytes.Clone(h.body)
	if h.flip >= 0 {
		body[h.flip] ^= 0xff
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body[:h.hold])
	w.(http.Flusher).Flush()
	select {
	case <-h.release:
	case <-r.Context().Done():
		return
	}
	w.Write(body[h.hold:])
}

func (h *heldBlob) getCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gets
}

// A Range request on a blob that is still filling is answered from
// verified bytes only: with a byte flipped by the upstream, it never
// answers 206 with that byte.
func TestRangeDuringFillServesOnlyVerifiedBytes(t *testing.T) {
	t.Parallel()
	real := newUpstream(t)
	img, err := random.Image(2<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, real, "library/app:v1", img)
	digest, layer := layerBytes(t, img)
	const flip = 1048575
	held := &heldBlob{next: real.Config.Handler, path: "/v2/library/app/blobs/" + digest, body: layer, flip: flip, hold: flip + 4096, release: make(chan struct{})}
	up := httptest.NewServer(held)
	t.Cleanup(up.Close)
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})

	// Client A starts the fill and streams it: once it has read past the
	// flipped byte, those bytes are in the fill's temporary file.
	reqA, _ := http.NewRequestWithContext(t.Context(), "GET", s.url+"/v2/hub/app/blobs/"+digest, nil)
	respA, err := http.DefaultClient.Do(reqA)
	if err != nil {
		t.Fatal(err)
	}
	defer respA.Body.Close()
	if _, err := io.ReadFull(respA.Body, make([]byte, flip+100)); err != nil {
		t.Fatalf("client A: %v", err)
	}

	type result struct {
		status int
		body   []byte
	}
	ranged := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", s.url+"/v2/hub/app/blobs/"+digest, nil)
		req.Header.Set("Range", "bytes=1048570-1048581")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ranged <- result{}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ranged <- result{resp.StatusCode, b}
	}()
	// A range request may wait for the fill; release the rest of the body
	// (the fill then fails its digest check).
	close(held.release)
	got := <-ranged
	if got.status == http.StatusPartialContent {
		if !bytes.Equal(got.body, layer[1048570:1048582]) {
			t.Fatalf("range answered 206 with unverified bytes: %x, want %x", got.body, layer[1048570:1048582])
		}
	} else if got.status/100 == 2 {
		t.Fatalf("range answered %d", got.status)
	}
	if _, err := io.ReadAll(respA.Body); err == nil {
		t.Errorf("client A read a complete body of corrupt bytes without an error")
	}
}

// A HEAD, with or without Range, never starts a download of the blob.
func TestHeadWithRangeDoesNotDownload(t *testing.T) {
	t.Parallel()
	real := newUpstream(t)
	img, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, real, "library/app:v1", img)
	digest, layer := layerBytes(t, img)
	held := &heldBlob{next: real.Config.Handler, path: "/v2/library/app/blobs/" + digest, body: layer, flip: -1, hold: len(layer), release: make(chan struct{})}
	close(held.release)
	up := httptest.NewServer(held)
	t.Cleanup(up.Close)
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})

	for _, tc := range []struct {
		rng          string
		status       int
		length       string
		contentRange string
	}{
		{"", 200, strconv.Itoa(len(layer)), ""},
		{"bytes=0-9", 206, "10", "bytes 0-9/" + strconv.Itoa(len(layer))},
		{"bytes=100-", 206, strconv.Itoa(len(layer) - 100), "bytes 100-" + strconv.Itoa(len(layer)-1) + "/" + strconv.Itoa(len(layer))},
		{"bytes=99999999-", 416, "", ""},
	} {
		h := map[string]string{}
		if tc.rng != "" {
			h["Range"] = tc.rng
		}
		resp, body := do(t, "HEAD", s.url+"/v2/hub/app/blobs/"+digest, h, nil)
		if resp.StatusCode != tc.status || len(body) != 0 {
			t.Errorf("HEAD Range %q: %s with %d body bytes, want %d", tc.rng, resp.Status, len(body), tc.status)
		}
		if tc.length != "" && resp.Header.Get("Content-Length") != tc.length {
			t.Errorf("HEAD Range %q: Content-Length %q, want %s", tc.rng, resp.Header.Get("Content-Length"), tc.length)
		}
		if got := resp.Header.Get("Content-Range"); tc.contentRange != "" && got != tc.contentRange {
			t.Errorf("HEAD Range %q: Content-Range %q, want %q", tc.rng, got, tc.contentRange)
		}
		if tc.status < 300 && resp.Header.Get("Docker-Content-Digest") != digest {
			t.Errorf("HEAD Range %q: Docker-Content-Digest %q", tc.rng, resp.Header.Get("Docker-Content-Digest"))
		}
	}
	if n := held.getCount(); n != 0 {
		t.Errorf("HEAD requests made %d upstream GETs of the blob, want 0", n)
	}
}

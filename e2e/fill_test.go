package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/e2e/peers"
)

// countingProxy sits in front of a real upstream: it counts blob GETs and
// paces blob bodies so that concurrent clients overlap with the fill.
type countingProxy struct {
	*httptest.Server
	blobGETs atomic.Int64
}

func newCountingProxy(t *testing.T, upstream string, chunk int, pause time.Duration) *countingProxy {
	t.Helper()
	target, _ := url.Parse(upstream)
	p := &countingProxy{}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isBlob := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
		if isBlob {
			p.blobGETs.Add(1)
		}
		resp, ok := relay(w, r, tr, target.String())
		if !ok {
			return
		}
		defer resp.Body.Close()
		if !isBlob {
			io.Copy(w, resp.Body)
			return
		}
		buf := make([]byte, chunk)
		for {
			n, err := io.ReadFull(resp.Body, buf)
			w.Write(buf[:n])
			w.(http.Flusher).Flush()
			if err != nil {
				return
			}
			time.Sleep(pause)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

// coldBlob pushes a random blob of size bytes to a fresh upstream and starts
// regcache in front of it through a pacing, counting proxy, with the rule
// docker.io/library/* -> hub/*. It returns the blob and its digest.
func coldBlob(t *testing.T, size, chunk int) (*peers.Upstream, *countingProxy, *peers.Regcache, []byte, string) {
	t.Helper()
	bin := peers.BuildRegcache(t)
	up := peers.StartGGCR(t)
	blob := make([]byte, size)
	rand.Read(blob)
	layer := static.NewLayer(blob, types.OCILayer)
	digest, _ := layer.Digest()
	ref, _ := name.ParseReference(up.Host+"/library/big:v1", name.Insecure)
	if err := remote.WriteLayer(ref.Context(), layer, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	proxy := newCountingProxy(t, up.URL(), chunk, 5*time.Millisecond)
	rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+proxy.URL)
	if _, stderr, code := peers.Run(t, bin, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*",
		"--server", rc.URL(), "--token", rc.Token()); code != 0 {
		t.Fatalf("create rule: %s", stderr)
	}
	return up, proxy, rc, blob, digest.String()
}

// TestConcurrentColdPulls: 32 clients ask the built regcache for one cold
// blob at once: exactly one upstream GET, identical verified bytes for all,
// and Range requests answered exactly while the fill runs.
func TestConcurrentColdPulls(t *testing.T) {
	t.Parallel()
	_, proxy, rc, blob, digest := coldBlob(t, 4<<20, 64<<10)

	blobURL := rc.URL() + "/v2/hub/big/blobs/" + digest
	const clients = 32
	type result struct {
		body   []byte
		status int
		err    error
	}
	results := make([]result, clients+2)
	ranges := []struct {
		header     string
		start, end int
	}{{"bytes=1000-1999", 1000, 1999}, {fmt.Sprintf("bytes=%d-", len(blob)-100), len(blob) - 100, len(blob) - 1}}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, blobURL, nil)
			if i >= clients {
				req.Header.Set("Range", ranges[i-clients].header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			results[i].status = resp.StatusCode
			results[i].body, results[i].err = io.ReadAll(resp.Body)
		}()
	}
	close(start)
	wg.Wait()
	for i, r := range results[:clients] {
		if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, blob) {
			t.Fatalf("client %d: status %d, %d bytes, err %v; want 200 and the %d blob bytes", i, r.status, len(r.body), r.err, len(blob))
		}
	}
	for i, rg := range ranges {
		r := results[clients+i]
		if r.err != nil || r.status != http.StatusPartialContent || !bytes.Equal(r.body, blob[rg.start:rg.end+1]) {
			t.Fatalf("range %s: status %d, %d bytes, err %v; want 206 and the exact bytes", rg.header, r.status, len(r.body), r.err)
		}
	}
	if n := proxy.blobGETs.Load(); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want exactly 1", n)
	}
	if !strings.Contains(rc.Logs(), "cached blob") {
		t.Fatalf("no fill was logged:\n%s", rc.Logs())
	}
}

// TestClientDisconnectCommits: the only client of a cold blob hangs up
// after the first bytes; the fill completes, and the next request is a hit.
func TestClientDisconnectCommits(t *testing.T) {
	t.Parallel()
	up, proxy, rc, blob, digest := coldBlob(t, 2<<20, 32<<10)
	conn, err := net.Dial("tcp", rc.Addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /v2/hub/big/blobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n", digest, rc.Addr)
	if _, err := io.ReadFull(conn, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(rc.Logs(), "cached blob") {
		if time.Now().After(deadline) {
			t.Fatalf("the fill did not complete after the client left:\n%s", rc.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	up.Stop() // the next request must be served from the store
	resp, err := http.Get(rc.URL() + "/v2/hub/big/blobs/" + digest)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, blob) {
		t.Fatalf("after the disconnect: %d, %d bytes, %v; want the blob from the store", resp.StatusCode, len(got), err)
	}
	if n := proxy.blobGETs.Load(); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

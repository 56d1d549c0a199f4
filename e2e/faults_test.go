package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/e2e/peers"
	"github.com/regcache/regcache/storage"
)

// Timeouts of the servers under fault: short, so that stalls end soon,
// yet long enough that neither a test gathering its clients at a gate nor
// an upstream slowed by a busy machine reaches them.
const (
	faultFillIdleTimeout = 10 * time.Second
	faultHeaderTimeout   = 10 * time.Second
	faultBlobSize        = 2 << 20
	faultHoldBytes       = 1 << 20 // bytes sent before a mid-body fault
	// faultRetryAfter is the Retry-After of the 429 fault: regcache sends
	// that upstream nothing for so long.
	faultRetryAfter = 3 * time.Second
)

// TestUpstreamFaults injects each fault into the upstream blob GETs of the
// built regcache, through a proxy in front of a real registry, for full
// and Range GETs with 1 and 8 concurrent clients: no client ever gets a
// complete answer whose bytes fail verification (while the fault lasts, no
// client gets a complete answer at all), clients that had no body yet get
// the right status and error code, and once the fault clears the same
// pulls succeed and verify. Afterwards the store holds nothing bad (the
// running server's fsck), no temporary file and no open blob file.
func TestUpstreamFaults(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
	tests := []struct {
		name   string
		fault  fault
		status int    // the answer of a client that got no body yet
		code   string // its OCI error code
	}{
		{"reset mid-body", faultReset, http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"flipped byte", faultFlip, http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"short body with the full Content-Length", faultShort, http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"short body with a short Content-Length", faultWrongLength, http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"chunked with a flipped byte", faultChunkedFlip, http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"stall beyond the fill idle timeout", faultStall, http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"500", fault500, http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"429 with Retry-After", fault429, http.StatusTooManyRequests, "TOOMANYREQUESTS"},
		{"slow headers beyond the upstream header timeout", faultSlowHeaders, http.StatusServiceUnavailable, "UNAVAILABLE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proxy := newFaultProxy(t, up.URL())
			rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+proxy.URL,
				"--fill-idle-timeout", faultFillIdleTimeout.String(), "--upstream-header-timeout", faultHeaderTimeout.String())
			createHubRule(t, bin, rc)
			client := newTestClient(t)
			for _, c := range []struct {
				clients int
				ranged  bool
			}{{1, false}, {8, false}, {1, true}, {8, true}} {
				kind := "full GET"
				if c.ranged {
					kind = "Range GET"
				}
				t.Run(fmt.Sprintf("%d %s", c.clients, kind), func(t *testing.T) {
					blob, digest := pushRandomBlob(t, up, "library/faulty", faultBlobSize)
					f := proxy.set(digest, &blobFault{kind: tc.fault, body: blob, hold: faultHoldBytes})
					ps := faultPulls(c.clients, c.ranged, f.flipAt())
					url := rc.URL() + "/v2/hub/faulty/blobs/" + digest

					run := startBlobPulls(client, url, ps)
					if tc.fault.midBody() {
						f.waitHeld(t, 1)
						if !c.ranged && tc.fault != faultChunkedFlip {
							// Every client streams the one fill before the fault
							// hits it (a fill of unknown size is not streamed).
							run.waitHeaders(t)
							if n := f.gets.Load(); n != 1 {
								t.Errorf("%d clients made %d upstream GETs, want 1", c.clients, n)
							}
						}
						close(f.gate)
					}
					for i, r := range run.wait() {
						checkFaulted(t, ps[i], r, blob, digest, tc.status, tc.code)
					}
					if tc.fault.midBody() && f.delivered.Load() == 0 {
						t.Errorf("the fault was never delivered whole (the fill gave up before the gate opened): the test did not test it")
					}
					if f.gets.Load() == 0 {
						t.Errorf("no upstream GET reached the fault")
					}
					if n := f.gets.Load(); tc.fault == fault429 && n != 1 {
						t.Errorf("%d upstream GETs after a 429 asking for %v: a client retrying within it reached the upstream", n, faultRetryAfter)
					}

					proxy.clear(digest)
					if tc.fault == fault429 {
						// regcache recorded the wait before it answered these
						// clients: once it passed, the upstream is asked again.
						time.Sleep(faultRetryAfter)
					}
					for i, r := range startBlobPulls(client, url, ps).wait() {
						if err := verifyPull(ps[i], r, blob, digest); err != nil {
							t.Errorf("after the fault cleared: %s: %v", ps[i], err)
						}
					}
				})
			}
			// A failed fill ends its upstream request: none is left open.
			waitUntil(t, "no upstream request is left open", func() string {
				if n := proxy.active.Load(); n > 0 {
					return fmt.Sprintf("%d upstream requests open", n)
				}
				return ""
			})
			checkStoreSound(t, bin, rc, 4)
		})
	}
}

// newTestClient returns an HTTP client of its own for the test, whose
// requests end after two minutes (a hang is an error, not a stuck test).
func newTestClient(t *testing.T) *http.Client {
	c := &http.Client{Transport: &http.Transport{}, Timeout: 2 * time.Minute}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// createHubRule creates the rule docker.io/library/* -> hub/*.
func createHubRule(t *testing.T, bin string, rc *peers.Regcache) {
	t.Helper()
	if _, stderr, code := peers.Run(t, bin, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*",
		"--server", rc.URL(), "--token", rc.Token()); code != 0 {
		t.Fatalf("create rule: %s", stderr)
	}
}

// pushRandomBlob pushes size random bytes as a layer of repo on the upstream.
func pushRandomBlob(t *testing.T, up *peers.Upstream, repo string, size int) ([]byte, string) {
	t.Helper()
	blob := make([]byte, size)
	rand.Read(blob)
	layer := static.NewLayer(blob, types.OCILayer)
	digest, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(up.Host+"/"+repo+":x", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(ref.Context(), layer, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	return blob, digest.String()
}

// blobPull is one client's request: the whole blob, or bytes start..end.
type blobPull struct {
	header     string // the Range header; "" for the whole blob
	start, end int
}

func (p blobPull) String() string {
	if p.header == "" {
		return "GET"
	}
	return "GET Range " + p.header
}

// faultPulls returns n requests: whole-blob GETs, or ranges that cover
// the start, the flipped byte, the gate and the end of the blob.
func faultPulls(n int, ranged bool, flip int) []blobPull {
	if !ranged {
		return make([]blobPull, n)
	}
	all := []blobPull{
		{fmt.Sprintf("bytes=%d-%d", flip-5, flip+5), flip - 5, flip + 5},
		{"bytes=0-99", 0, 99},
		{"bytes=-100", faultBlobSize - 100, faultBlobSize - 1},
		{fmt.Sprintf("bytes=%d-%d", faultHoldBytes-10, faultHoldBytes+10), faultHoldBytes - 10, faultHoldBytes + 10},
		{fmt.Sprintf("bytes=%d-", faultHoldBytes), faultHoldBytes, faultBlobSize - 1},
		{"bytes=4096-8191", 4096, 8191},
		{fmt.Sprintf("bytes=%d-%d", faultBlobSize-faultBlobSize/4-1, faultBlobSize-faultBlobSize/4), faultBlobSize - faultBlobSize/4 - 1, faultBlobSize - faultBlobSize/4},
		{"bytes=0-", 0, faultBlobSize - 1},
	}
	return all[:n]
}

// blobPullResult is what one client received.
type blobPullResult struct {
	status  int
	body    []byte
	err     error // the request or the body failed
	errCode string
	errMsg  string
}

// blobPulls are requests running concurrently.
type blobPulls struct {
	headers chan struct{} // one value per answer's headers (or failure)
	n       int
	wg      sync.WaitGroup
	results []blobPullResult
}

func startBlobPulls(client *http.Client, url string, ps []blobPull) *blobPulls {
	run := &blobPulls{headers: make(chan struct{}, len(ps)), n: len(ps), results: make([]blobPullResult, len(ps))}
	for i, p := range ps {
		run.wg.Add(1)
		go func() {
			defer run.wg.Done()
			r := &run.results[i]
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				r.err = err
				run.headers <- struct{}{}
				return
			}
			if p.header != "" {
				req.Header.Set("Range", p.header)
			}
			resp, err := client.Do(req)
			run.headers <- struct{}{}
			if err != nil {
				r.err = err
				return
			}
			defer resp.Body.Close()
			r.status = resp.StatusCode
			r.body, r.err = io.ReadAll(resp.Body)
			if r.status/100 != 2 {
				var e struct {
					Errors []struct{ Code, Message string } `json:"errors"`
				}
				if json.Unmarshal(r.body, &e) == nil && len(e.Errors) > 0 {
					r.errCode, r.errMsg = e.Errors[0].Code, e.Errors[0].Message
				}
			}
		}()
	}
	return run
}

// waitHeaders waits until every request has its answer's headers.
func (run *blobPulls) waitHeaders(t *testing.T) {
	t.Helper()
	timeout := time.After(time.Minute)
	for range run.n {
		select {
		case <-run.headers:
		case <-timeout:
			t.Fatalf("the clients got no answer headers within a minute")
		}
	}
}

// wait waits for every request to end and returns what each received.
func (run *blobPulls) wait() []blobPullResult {
	run.wg.Wait()
	return run.results
}

// verifyPull returns an error unless r is a complete answer to p with the
// blob's true bytes.
func verifyPull(p blobPull, r blobPullResult, blob []byte, digest string) error {
	switch {
	case r.err != nil:
		return fmt.Errorf("status %d, %d bytes, error %v", r.status, len(r.body), r.err)
	case p.header == "" && r.status != http.StatusOK, p.header != "" && r.status != http.StatusPartialContent:
		return fmt.Errorf("status %d (%s: %s), %d bytes", r.status, r.errCode, r.errMsg, len(r.body))
	case p.header == "":
		if sha(r.body) != digest {
			return fmt.Errorf("a complete body of %d bytes that does not hash to %s", len(r.body), digest)
		}
	case !bytes.Equal(r.body, blob[p.start:p.end+1]):
		return fmt.Errorf("%d bytes that are not the blob's bytes %d-%d", len(r.body), p.start, p.end)
	}
	return nil
}

// checkFaulted checks what a client got while the upstream failed: never
// a complete answer (least of all with wrong bytes); a body cut by an
// error only for a whole-blob GET (a Range answer is sent from verified
// bytes only); otherwise the expected status and code.
func checkFaulted(t *testing.T, p blobPull, r blobPullResult, blob []byte, digest string, status int, code string) {
	t.Helper()
	switch {
	case r.status/100 == 2 && r.err == nil:
		if err := verifyPull(p, r, blob, digest); err != nil {
			t.Errorf("%s: served bytes that fail verification without an error: %v", p, err)
		} else {
			t.Errorf("%s: a complete %d answer while the upstream fails", p, r.status)
		}
	case r.status/100 == 2:
		if p.header != "" {
			t.Errorf("%s: a %d answer began and was cut (%v): a Range answer must come from verified bytes only", p, r.status, r.err)
		}
		if p.header == "" && len(r.body) >= len(blob) {
			t.Errorf("%s: %d bytes, the whole blob's length, then %v", p, len(r.body), r.err)
		}
	case r.err != nil:
		t.Errorf("%s: no answer: %v", p, r.err)
	case r.status != status || r.errCode != code:
		t.Errorf("%s: %d %s (%s), want %d %s", p, r.status, r.errCode, r.errMsg, status, code)
	}
}

// checkStoreSound checks, once the clients are done, that the server
// holds nothing bad: its own fsck finds no problem in the blobs blobs
// committed, no fill's temporary file is left, and no blob file is open.
func checkStoreSound(t *testing.T, bin string, rc *peers.Regcache, blobs int) {
	t.Helper()
	tmp := filepath.Join(rc.DataDir, "blobs", "tmp")
	waitUntil(t, "the temporary directory is empty", func() string {
		entries, err := os.ReadDir(tmp)
		if err != nil || len(entries) == 0 {
			return ""
		}
		return fmt.Sprintf("%d files left in %s", len(entries), tmp)
	})
	waitUntil(t, "no blob file is open", func() string {
		return openDataFiles(rc)
	})
	stdout, stderr, code := peers.Run(t, bin, "fsck", "--server", rc.URL(), "--token", rc.Token(), "-o", "json")
	var r storage.CheckReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != 0 {
		t.Fatalf("fsck: exit %d, %v\n%s\n%s", code, err, stdout, stderr)
	}
	if len(r.Problems) != 0 || r.Blobs != blobs {
		t.Errorf("fsck: %d blobs, problems %+v; want %d blobs and no problem", r.Blobs, r.Problems, blobs)
	}
}

// openDataFiles lists the files under the server's blob store that the
// server process holds open, "" when none.
func openDataFiles(rc *peers.Regcache) string {
	fds := fmt.Sprintf("/proc/%d/fd", rc.PID())
	entries, err := os.ReadDir(fds)
	if err != nil {
		return "" // not Linux: nothing to look at
	}
	var open []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fds, e.Name()))
		if err == nil && strings.HasPrefix(target, filepath.Join(rc.DataDir, "blobs")) {
			open = append(open, target)
		}
	}
	if len(open) == 0 {
		return ""
	}
	return fmt.Sprintf("%d blob files open: %v", len(open), open)
}

// waitUntil polls check until it returns "" (the state was reached) or
// 30 s pass, then fails with what check last said.
func waitUntil(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s: %s", what, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/cluster"
	"github.com/regcache/regcache/e2e/peers"
)

// blobProxy sits in front of the real upstream: it counts the GETs of
// each blob, paces blob bodies so that clients overlap with fills, and
// can hold the first GET of one blob after some bytes until released.
type blobProxy struct {
	*httptest.Server

	mu     sync.Mutex
	gets   map[string]int      // by digest
	ranges map[string][]string // Range headers of the GETs, by digest
	hold   string              // digest whose first GET is held
	after  int                 // bytes sent before holding
	gate   chan struct{}
}

func newBlobProxy(t *testing.T, upstream string) *blobProxy {
	t.Helper()
	p := &blobProxy{gets: map[string]int{}, ranges: map[string][]string{}, gate: make(chan struct{})}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := strings.LastIndex(r.URL.Path, "/blobs/")
		isBlob := r.Method == http.MethodGet && i >= 0
		held := false
		if isBlob {
			d := r.URL.Path[i+len("/blobs/"):]
			p.mu.Lock()
			p.gets[d]++
			p.ranges[d] = append(p.ranges[d], r.Header.Get("Range"))
			held = d == p.hold && p.gets[d] == 1
			p.mu.Unlock()
		}
		resp, ok := relay(w, r, tr, upstream)
		if !ok {
			return
		}
		defer resp.Body.Close()
		if !isBlob {
			io.Copy(w, resp.Body)
			return
		}
		buf := make([]byte, 32<<10)
		sent := 0
		for {
			if held && sent >= p.after {
				select {
				case <-p.gate:
				case <-r.Context().Done():
					return
				}
				held = false
			}
			n, err := io.ReadFull(resp.Body, buf)
			w.Write(buf[:n])
			w.(http.Flusher).Flush()
			sent += n
			if err != nil {
				return
			}
			time.Sleep(time.Millisecond) // pacing only: the test waits on events
		}
	}))
	t.Cleanup(p.Close)
	t.Cleanup(p.release)
	return p
}

func (p *blobProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

func (p *blobProxy) count(digest string) (int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gets[digest], append([]string(nil), p.ranges[digest]...)
}

// replicas is a cluster of regcache processes on loopback.
type replicas struct {
	rc     []*peers.Regcache
	addrs  []string // peer addresses, in the order of rc
	secret []byte
}

// startReplicas starts n regcache processes with the same rule (the
// config file), each with its own data directory, knowing each other
// through a static --peers list and a shared secret, and waits until each
// sees every other one live.
func startReplicas(t *testing.T, n int, upstream string) *replicas {
	t.Helper()
	bin := peers.BuildRegcache(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "rules:\n  - name: hub-library\n    source: docker.io/library/*\n    target: hub/*\n")
	secret := make([]byte, 48)
	rand.Read(secret)
	secretFile := filepath.Join(dir, "peer.secret")
	writeFile(t, secretFile, hex.EncodeToString(secret))
	r := &replicas{secret: []byte(hex.EncodeToString(secret))}
	for range n {
		r.addrs = append(r.addrs, freeAddr(t))
	}
	for _, a := range r.addrs {
		r.rc = append(r.rc, peers.StartRegcache(t, bin, "--config", cfg, "--upstream", "docker.io="+upstream,
			"--peer-listen", a, "--peer-advertise", a, "--peers", strings.Join(r.addrs, ","), "--peer-secret-file", secretFile))
	}
	for i, rc := range r.rc {
		for j, a := range r.addrs {
			if i == j {
				continue
			}
			waitLogged(t, rc, fmt.Sprintf(`msg="cluster member up" component=cluster peer=%s`, a))
		}
	}
	return r
}

// freeAddr returns a 127.0.0.1 address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitLogged waits until rc logged want.
func waitLogged(t *testing.T, rc *peers.Regcache, want string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(rc.Logs(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("regcache %s did not log %q", rc.Addr, want)
		}
	}
}

// getVerified GETs url and checks that the body hashes to digest.
func getVerified(url, digest string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: after %d bytes: %w", url, n, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("GET %s: %d bytes hashing to %s", url, n, got)
	}
	return nil
}

// pullAtOnce has perReplica clients of each replica GET, all at once, the
// manifests and then the blobs of repo by digest, each checking the digest
// of what it read; every failure is an error of the test.
func pullAtOnce(t *testing.T, rcs []*peers.Regcache, perReplica int, repo string, digests []string, manifests ...string) {
	t.Helper()
	errs := make(chan error, len(rcs)*perReplica*(len(digests)+len(manifests)))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, rc := range rcs {
		for range perReplica {
			wg.Go(func() {
				<-start
				for _, d := range manifests {
					if err := getVerified(rc.URL()+"/v2/"+repo+"/manifests/"+d, d); err != nil {
						errs <- err
					}
				}
				for _, d := range digests {
					if err := getVerified(rc.URL()+"/v2/"+repo+"/blobs/"+d, d); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClusterOneFetchPerBlob: 16 clients on each of three replicas pull
// the same cold image at once; each blob leaves the upstream exactly
// once, and every client gets verified bytes.
func TestClusterOneFetchPerBlob(t *testing.T) {
	t.Parallel()
	up := peers.StartGGCR(t)
	img := peers.SeedImage(t, up.Host+"/library/app:v1", true)
	proxy := newBlobProxy(t, up.URL())
	r := startReplicas(t, 3, proxy.URL)

	pullAtOnce(t, r.rc, 16, "hub/app", img.Blobs())
	for _, d := range img.Blobs() {
		if n, _ := proxy.count(d); n != 1 {
			t.Errorf("blob %s: %d upstream GETs across the replicas, want exactly 1 (owner %s)", d, n, cluster.Owner(d, r.addrs))
		}
	}
	// The replicas that do not own a blob say they streamed it from its
	// owner (in the line logged once the fill committed, just after its
	// clients got the verified bytes).
	for _, d := range img.Blobs() {
		owner := cluster.Owner(d, r.addrs)
		for i, rc := range r.rc {
			if r.addrs[i] != owner {
				waitLogged(t, rc, fmt.Sprintf(`msg="cached blob" digest=%s`, d))
				if !strings.Contains(rc.Logs(), "peer "+owner) {
					t.Errorf("replica %s does not log %s as streamed from its owner %s", r.addrs[i], d, owner)
				}
			}
		}
	}
}

// TestClusterOwnerKilledMidBlob: the owner of a large blob is killed
// (SIGKILL) while the other replicas' fills stream it from the owner; the
// fills are taken over from the bytes they have, and every client of the
// other replicas gets the complete, verified blob.
func TestClusterOwnerKilledMidBlob(t *testing.T) {
	t.Parallel()
	up := peers.StartGGCR(t)
	blob := make([]byte, 6<<20)
	rand.Read(blob)
	layer := static.NewLayer(blob, types.OCILayer)
	digest, _ := layer.Digest()
	ref, _ := name.ParseReference(up.Host+"/library/big:v1", name.Insecure)
	if err := remote.WriteLayer(ref.Context(), layer, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	d := digest.String()
	proxy := newBlobProxy(t, up.URL())
	proxy.hold, proxy.after = d, 1<<20
	r := startReplicas(t, 3, proxy.URL)
	owner := cluster.Owner(d, r.addrs)

	// Clients of the two other replicas read until they have bytes the
	// owner streamed (the owner's upstream GET is held after 1 MiB).
	type client struct {
		resp *http.Response
		got  []byte
	}
	var clients []*client
	var others []*peers.Regcache
	var killed *peers.Regcache
	for i, rc := range r.rc {
		if r.addrs[i] == owner {
			killed = rc
			continue
		}
		others = append(others, rc)
		for range 4 {
			resp, err := http.Get(rc.URL() + "/v2/hub/big/blobs/" + d)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { resp.Body.Close() })
			first := make([]byte, 64<<10)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("client of %s: first bytes: %v", rc.Addr, err)
			}
			clients = append(clients, &client{resp: resp, got: first})
		}
	}
	if n, _ := proxy.count(d); n != 1 {
		t.Fatalf("upstream GETs before the kill = %d, want the owner's 1", n)
	}
	killed.Kill()
	proxy.release()

	for i, c := range clients {
		rest, err := io.ReadAll(c.resp.Body)
		if err != nil || c.resp.StatusCode != http.StatusOK || !bytes.Equal(append(c.got, rest...), blob) {
			t.Fatalf("client %d: status %d, %d bytes, err %v; want the %d blob bytes", i, c.resp.StatusCode, len(c.got)+len(rest), err, len(blob))
		}
	}
	resumed := false
	for _, rc := range others {
		resumed = resumed || strings.Contains(rc.Logs(), "blob stream from a peer broke: resuming")
		// Stored whole and verified: a later pull is a hit.
		if err := getVerified(rc.URL()+"/v2/hub/big/blobs/"+d, d); err != nil {
			t.Fatal(err)
		}
	}
	if !resumed {
		t.Fatal("no replica logged taking over a fill after the owner was killed")
	}
	if _, ranges := proxy.count(d); len(ranges) < 2 || ranges[0] != "" {
		t.Fatalf("upstream Range headers of the blob %q: want the owner's whole GET, then ranged resumes", ranges)
	} else {
		for _, rg := range ranges[1:] {
			if !strings.HasPrefix(rg, "bytes=") || rg == "bytes=0-"+fmt.Sprint(len(blob)-1) {
				t.Fatalf("a takeover asked the upstream for %q: want the rest after the bytes it had", rg)
			}
		}
	}
}

// TestClusterPeerChannelRefuses: the peer channel refuses requests
// without a token (401) or with a bad one (403), and serves nothing but
// the ping and blobs (404) even to a replica holding the secret.
func TestClusterPeerChannelRefuses(t *testing.T) {
	t.Parallel()
	up := peers.StartGGCR(t)
	img := peers.SeedImage(t, up.Host+"/library/app:v1", true)
	r := startReplicas(t, 2, up.URL())
	base := "http://" + r.addrs[0]
	blob := "/peer/v1/blobs/" + img.Layers[0] + "?repo=hub%2Fapp"
	for _, tc := range []struct {
		name, method, uri string
		secret            []byte
		status            int
	}{
		{"blob without a token", http.MethodGet, blob, nil, http.StatusUnauthorized},
		{"blob with another secret", http.MethodGet, blob, bytes.Repeat([]byte("x"), 40), http.StatusForbidden},
		{"ping with another secret", http.MethodGet, "/peer/v1/ping", bytes.Repeat([]byte("x"), 40), http.StatusForbidden},
		{"registry API", http.MethodGet, "/v2/", r.secret, http.StatusNotFound},
		{"manifest", http.MethodGet, "/v2/hub/app/manifests/v1", r.secret, http.StatusNotFound},
		{"admin API", http.MethodGet, "/admin/v1/rules", r.secret, http.StatusNotFound},
		{"push", http.MethodPut, blob, r.secret, http.StatusNotFound},
		{"ping", http.MethodGet, "/peer/v1/ping", r.secret, http.StatusNoContent},
		{"blob", http.MethodGet, blob, r.secret, http.StatusOK},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, base+tc.uri, nil)
		if tc.secret != nil {
			cluster.Sign(req, tc.secret, r.addrs[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %s %s = %d, want %d", tc.name, tc.method, tc.uri, resp.StatusCode, tc.status)
		}
	}
}

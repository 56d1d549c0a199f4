package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/cluster"
	"github.com/regcache/regcache/e2e/peers"
)

// haCluster is three regcache replicas sharing one S3 bucket (SeaweedFS)
// and one etcd, fetching each blob once through the peer channel, behind
// haproxy: the deployment of deploy/kubernetes-ha, on loopback.
type haCluster struct {
	bin   string
	rc    []*peers.Regcache
	addrs []string // peer addresses, in the order of rc
	lb    *peers.HAProxy
	token string
}

// startHA starts the replicas pulling docker.io from upstream and waits
// until each sees the others live and haproxy sees each up.
func startHA(t *testing.T, upstream string) *haCluster {
	t.Helper()
	h := &haCluster{bin: peers.BuildRegcache(t)}
	s3 := peers.StartS3(t)
	bucket := s3.Bucket(t)
	etcd := peers.StartEtcd(t)
	dir := t.TempDir()
	secret := make([]byte, 32)
	rand.Read(secret)
	secretFile := filepath.Join(dir, "peer.secret")
	writeFile(t, secretFile, hex.EncodeToString(secret))
	// One admin token for every replica, as a Kubernetes Secret gives them:
	// the admin API answers alike through the load balancer.
	h.token = hex.EncodeToString(secret[:16])
	tokenFile := filepath.Join(dir, "admin.token")
	writeFile(t, tokenFile, h.token)
	for range 3 {
		h.addrs = append(h.addrs, freeAddr(t))
	}
	common := append(s3.StoreArgs(bucket, "ha"), "--s3-part-size", "5MiB",
		"--meta", "etcd", "--etcd-endpoints", etcd.Endpoint, "--etcd-prefix", "/ha/",
		"--upstream", "docker.io="+upstream, "--admin-token-file", tokenFile,
		"--peers", strings.Join(h.addrs, ","), "--peer-secret-file", secretFile)
	var backends []string
	for _, a := range h.addrs {
		rc := peers.StartRegcacheWith(t, h.bin, peers.ServeOptions{Env: s3.Env()}, append(common, "--peer-listen", a, "--peer-advertise", a)...)
		h.rc = append(h.rc, rc)
		backends = append(backends, rc.Addr)
	}
	h.waitMembers(t)
	h.lb = peers.StartHAProxy(t, backends, peers.HAProxyOptions{})
	for _, b := range backends {
		h.lb.WaitBackend(t, b, true)
	}
	return h
}

// waitMembers waits until each replica logged every other one as up.
func (h *haCluster) waitMembers(t *testing.T) {
	t.Helper()
	for i, rc := range h.rc {
		for j, a := range h.addrs {
			if i != j {
				waitLogged(t, rc, fmt.Sprintf(`msg="cluster member up" component=cluster peer=%s`, a))
			}
		}
	}
}

// cli runs the admin CLI against one replica.
func (h *haCluster) cli(t *testing.T, rc *peers.Regcache, args ...string) string {
	t.Helper()
	stdout, stderr, code := peers.Run(t, h.bin, append(args, "--server", rc.URL(), "--token", h.token)...)
	if code != 0 {
		t.Fatalf("regcache %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// getRetrying GETs url until it answers the blob verified, as a client
// retrying through the load balancer does; it fails after a few tries.
func getRetrying(url, digest string) error {
	var err error
	for range 10 {
		if err = getVerified(url, digest); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// TestHA runs regcache as deploy/kubernetes-ha does, on loopback: three
// replicas on one S3 bucket and one etcd behind haproxy.
//
//   - A rule created through replica 1 is in force on replica 3 within
//     seconds.
//   - 16 clients on each replica pull a cold multi-layer image at once:
//     each blob leaves the upstream exactly once.
//   - The owner of a large blob is killed (SIGKILL) while clients pull it
//     through the load balancer: every client, retrying through it, gets
//     the complete verified blob.
//   - docker, containerd, skopeo and crane pull through the load balancer.
//   - Every replica restarted, the upstream gone: everything still served.
func TestHA(t *testing.T) {
	t.Parallel()
	up := peers.StartGGCR(t)
	img := peers.SeedImage(t, up.Host+"/library/app:v1", true)
	big := make([]byte, 6<<20)
	rand.Read(big)
	layer := static.NewLayer(big, types.OCILayer)
	bigDigest, _ := layer.Digest()
	bigRef, _ := name.ParseReference(up.Host+"/library/big:v1", name.Insecure)
	if err := remote.WriteLayer(bigRef.Context(), layer, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	proxy := newBlobProxy(t, up.URL())
	proxy.hold, proxy.after = bigDigest.String(), 1<<20
	h := startHA(t, proxy.URL)

	// A rule created through replica 1, used through replica 3.
	start := time.Now()
	h.cli(t, h.rc[0], "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*")
	for !strings.Contains(h.cli(t, h.rc[2], "cache", "list", "-o", "table"), "HubLibrary") {
		if time.Since(start) > 5*time.Second {
			t.Fatal("replica 3 does not list the rule created through replica 1 after 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("rule created on replica 1 in force on replica 3 after %v", time.Since(start).Round(time.Millisecond))

	// Cold pulls: 16 clients per replica, each blob fetched once.
	pullAtOnce(t, h.rc, 16, "hub/app", img.Blobs(), img.Digest)
	for _, d := range img.Blobs() {
		if n, _ := proxy.count(d); n != 1 {
			t.Errorf("blob %s: %d upstream GETs across the three replicas, want exactly 1", d, n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The owner of the big blob is killed while clients pull it through
	// the load balancer; its upstream GET is held after 1 MiB, so the kill
	// lands mid-blob.
	d := bigDigest.String()
	owner := cluster.Owner(d, h.addrs)
	var killed *peers.Regcache
	for i, a := range h.addrs {
		if a == owner {
			killed = h.rc[i]
		}
	}
	type client struct {
		resp *http.Response
		got  []byte
	}
	var clients []*client
	for range 6 { // two on each replica, round robin
		resp, err := http.Get(h.lb.URL() + "/v2/hub/big/blobs/" + d)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		first := make([]byte, 64<<10)
		if _, err := io.ReadFull(resp.Body, first); err != nil {
			t.Fatalf("first bytes of the big blob through the load balancer: %v", err)
		}
		clients = append(clients, &client{resp: resp, got: first})
	}
	if n, _ := proxy.count(d); n != 1 {
		t.Fatalf("upstream GETs of the big blob before the kill = %d, want the owner's 1", n)
	}
	killed.Kill()
	proxy.release()
	cut := 0
	for i, c := range clients {
		rest, err := io.ReadAll(c.resp.Body)
		if err == nil && bytes.Equal(append(c.got, rest...), big) {
			continue
		}
		// A client of the killed replica: it retries through the load
		// balancer, which sends it to a live replica.
		cut++
		if err := getRetrying(h.lb.URL()+"/v2/hub/big/blobs/"+d, d); err != nil {
			t.Errorf("client %d, retrying through the load balancer after its replica was killed: %v", i, err)
		}
	}
	if cut == 0 {
		t.Error("no client was cut by the kill: the test did not kill a replica mid-stream")
	}
	if t.Failed() {
		t.FailNow()
	}
	h.lb.WaitBackend(t, killed.Addr, false)
	killed.Restart()
	h.lb.WaitBackend(t, killed.Addr, true)

	// Real clients through the load balancer.
	pullEverywhere(t, wantImage(h.lb.Addr()+"/hub/app:v1", img))

	// Every replica restarted, the upstream gone: served from the bucket
	// and etcd.
	proxy.Close()
	for _, rc := range h.rc {
		rc.Restart()
	}
	for _, rc := range h.rc {
		h.lb.WaitBackend(t, rc.Addr, true)
	}
	for range 6 {
		if err := getRetrying(h.lb.URL()+"/v2/hub/big/blobs/"+d, d); err != nil {
			t.Errorf("after restarting every replica, upstream gone: %v", err)
		}
	}
	crane := peers.Require(t, "crane")
	pullCrane(t, crane, wantImage(h.lb.Addr()+"/hub/app:v1", img))
}

package e2e

import (
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
)

// TestOfflineMakesNoConnection: a regcache started with --offline, whose
// rule's upstream is a loopback listener counting connections, answers a
// pull of content it does not hold with an error saying it is offline
// (crane, and the raw API with its Warning), refuses a warm the same way,
// and says so on /healthz and in the admin status; the listener never
// sees a connection, the credential set's health check included (it
// reports that the upstream could not be reached because regcache is
// offline). TestAirGap serves imported content from an offline regcache.
func TestOfflineMakesNoConnection(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	crane := peers.Require(t, "crane")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	upstream := "http://" + l.Addr().String()
	secrets := t.TempDir()
	secret := secrets + "/token"
	writeFile(t, secret, "s3cret\n")
	rc := peers.StartRegcacheWith(t, bin, peers.ServeOptions{Env: []string{"REGCACHE_SECRET_USER=robot"}},
		"--offline", "--upstream", "docker.io="+upstream, "--secret-file-dir", secrets, "--credential-health-interval", "200ms")
	adminCLI(t, bin, rc, "credential-set", "create", "-n", "HubCreds", "-l", "docker.io", "-u", "env://REGCACHE_SECRET_USER", "-p", "file://"+secret)
	adminCLI(t, bin, rc, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*", "-c", "HubCreds")

	_, stderr, code := peers.Run(t, crane, "digest", "--insecure", rc.Addr+"/hub/app:v1")
	if code == 0 || !strings.Contains(stderr, "offline") {
		t.Fatalf("crane digest of uncached content offline: exit %d, %s; want an error saying the registry is offline", code, stderr)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, rc.URL()+"/v2/hub/app/blobs/sha256:"+strings.Repeat("a", 64), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Header.Get("Warning"), "offline") {
		t.Fatalf("uncached blob offline: %s, Warning %q", resp.Status, resp.Header.Get("Warning"))
	}
	stdout, stderr, code := adminCLIExit(t, bin, rc, "warm", "hub/app:v1")
	if code != 1 || !strings.Contains(stderr, "offline") {
		t.Fatalf("warm offline: exit %d\n%s\n%s", code, stdout, stderr)
	}
	body := peersGet(t, rc.URL()+"/healthz")
	if !strings.Contains(body, "offline") {
		t.Fatalf("/healthz offline: %q", body)
	}
	if st := statusOf(t, rc); !st.Offline {
		t.Fatal("the admin status does not say offline")
	}
	// The credential set's health check ran (it says why it could not
	// verify the secrets), and did not reach the upstream either.
	deadline := time.Now().Add(20 * time.Second)
	for {
		show := adminCLI(t, bin, rc, "credential-set", "show", "-n", "HubCreds")
		if strings.Contains(show, "offline") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the credential set was not checked within 20s: %s", show)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the upstream's listener saw %d connections from an offline regcache", n)
	}
}

// peersGet GETs url and returns the body.
func peersGet(t testing.TB, url string) string {
	t.Helper()
	_, b := getWithToken(t, url, "")
	return string(b)
}

package peers

import (
	"errors"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// TestHAProxy puts haproxy in front of two registries holding different
// images under the same tag, so that the digest of an answer says which
// backend gave it. Round robin spreads requests evenly; after one backend
// is stopped every request still succeeds, at once (a refused connection
// is retried on the other backend) and after the health checks took the
// stopped one out.
func TestHAProxy(t *testing.T) {
	t.Parallel()
	a, b := StartGGCR(t), StartGGCR(t)
	imgA := SeedImage(t, a.Host+"/app:v1", true)
	imgB := SeedImage(t, b.Host+"/app:v1", true)
	if imgA.Digest == imgB.Digest {
		t.Fatal("the two backends hold the same image: answers would not tell them apart")
	}
	// go-containerregistry's registry has no /readyz; /v2/ answers 200.
	lb := StartHAProxy(t, []string{a.Host, b.Host}, HAProxyOptions{CheckPath: "/v2/"})

	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	get := func() (digest string, err error) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodHead, lb.URL()+"/v2/app/manifests/v1", nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", errors.New(resp.Status)
		}
		return resp.Header.Get("Docker-Content-Digest"), nil
	}

	const n = 10
	seen := map[string]int{}
	for range n {
		d, err := get()
		if err != nil {
			t.Fatalf("HEAD through haproxy with both backends up: %v", err)
		}
		seen[d]++
	}
	if seen[imgA.Digest]+seen[imgB.Digest] != n || seen[imgA.Digest] < n/2-1 || seen[imgB.Digest] < n/2-1 {
		t.Errorf("%d requests reached backend a %d times, b %d times (other answers: %v): want them spread evenly",
			n, seen[imgA.Digest], seen[imgB.Digest], seen)
	}

	onlyB := func(when string) {
		t.Helper()
		for i := range 2 * n {
			d, err := get()
			if err != nil {
				t.Fatalf("request %d %s: %v", i, when, err)
			}
			if d != imgB.Digest {
				t.Fatalf("request %d %s: digest %s, want b's %s", i, when, d, imgB.Digest)
			}
		}
	}
	a.Stop()
	onlyB("right after backend a stopped")
	lb.WaitBackend(t, a.Host, false)
	onlyB("after the health checks took backend a out")

	lb.Stop()
	lb.Stop()
	conn, err := net.DialTimeout("tcp", lb.Addr(), time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", lb.Addr())
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s after Stop: %v, want connection refused", lb.Addr(), err)
	}
}

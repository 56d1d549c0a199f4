package registry_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/registry"
)

// serveLimited runs handler behind registry.Listen and registry.NewServer
// with limits, on 127.0.0.1, and returns its address.
func serveLimited(t *testing.T, handler http.Handler, limits registry.Limits) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := registry.Listen("127.0.0.1:0", limits, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := registry.NewServer(handler, limits, log)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

// dialFrom opens a TCP connection to addr from the loopback address from.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends one keep-alive GET on c and returns the status, or an error.
func get(c net.Conn, path string) (int, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// closedByServer waits (up to 5 s) for the server to close c and reports
// whether it did.
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// One address cannot hold more than MaxConnsPerAddress connections, and
// what it holds does not keep others out; a released slot is reusable.
func TestConnectionCapPerAddress(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, ok, registry.Limits{MaxConnsPerAddress: 4, MaxConns: 100}.WithDefaults(0))
	var held []net.Conn
	for range 4 {
		c := dialFrom(t, "127.0.0.2", addr)
		if status, err := get(c, "/"); err != nil || status != 200 {
			t.Fatalf("connection within the cap: %d, %v", status, err)
		}
		held = append(held, c)
	}
	over := dialFrom(t, "127.0.0.2", addr)
	if !closedByServer(over) {
		t.Fatalf("a fifth connection from 127.0.0.2 stayed open")
	}
	if status, err := get(dialFrom(t, "127.0.0.1", addr), "/"); err != nil || status != 200 {
		t.Fatalf("another address is refused while 127.0.0.2 is at its cap: %d, %v", status, err)
	}
	held[0].Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if status, err := get(dialFrom(t, "127.0.0.2", addr), "/"); err == nil && status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a closed connection was never given back")
		}
	}
}

// MaxConns caps the connections of every address together.
func TestConnectionCapTotal(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, ok, registry.Limits{MaxConnsPerAddress: -1, MaxConns: 3}.WithDefaults(0))
	for i, from := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		if status, err := get(dialFrom(t, from, addr), "/"); err != nil || status != 200 {
			t.Fatalf("connection %d: %d, %v", i, status, err)
		}
	}
	if !closedByServer(dialFrom(t, "127.0.0.6", addr)) {
		t.Fatalf("a fourth connection stayed open over MaxConns 3")
	}
}

// A connection that sends no request, or stays idle after one, is closed.
func TestIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, ok, registry.Limits{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond}.WithDefaults(0))
	silent := dialFrom(t, "127.0.0.1", addr)
	if !closedByServer(silent) {
		t.Errorf("a connection that sent nothing was not closed")
	}
	idle := dialFrom(t, "127.0.0.1", addr)
	if status, err := get(idle, "/"); err != nil || status != 200 {
		t.Fatalf("request: %d, %v", status, err)
	}
	if !closedByServer(idle) {
		t.Errorf("an idle keep-alive connection was not closed")
	}
}

// A client that stops reading is cut after the write idle timeout; one
// that keeps reading gets the whole blob. (That the deadline is pushed
// back on every write and sendfile section, so that a transfer of any
// length survives, is TestProgressDeadline's: deterministic, where this
// real-socket test could only show it with timing.)
func TestWriteIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	up := newUpstream(t)
	img, err := random.Image(12<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/app:v1", img)
	digest, layer := layerBytes(t, img)
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule},
		limits: registry.Limits{WriteIdleTimeout: idle}})
	if resp, body := do(t, "GET", s.url+"/v2/hub/app/blobs/"+digest, nil, nil); resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("first pull: %s", resp.Status)
	}
	waitStored(t, s, digest)

	// A small fixed receive buffer (no autotuning) keeps most of the blob
	// on the server's side, so that it must keep writing as the client
	// reads.
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
	}}).DialContext}}
	t.Run("reading reader", func(t *testing.T) {
		t.Parallel()
		resp, err := client.Get(s.url + "/v2/hub/app/blobs/" + digest)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(got, layer) {
			t.Fatalf("a reading client got %d of %d bytes: %v", len(got), len(layer), err)
		}
	})
	t.Run("stalled reader", func(t *testing.T) {
		t.Parallel()
		resp, err := client.Get(s.url + "/v2/hub/app/blobs/" + digest)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		time.Sleep(4 * idle)
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && n == int64(len(layer)) {
			t.Fatalf("a client that stopped reading for 4 idle timeouts still got the whole blob")
		}
	})
}

// waitStored waits until the fill of digest committed.
func waitStored(t *testing.T, s *stack, digest string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := s.blobs.Stat(t.Context(), digest); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob %s not stored", digest)
		}
	}
}

// A URL over the limit is answered 414 with the spec's error body; one
// within it is served.
func TestURLLimit(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{limits: registry.Limits{MaxURLBytes: 2048}})
	long := "/v2/" + strings.Repeat("a", 2100) + "/manifests/v1"
	resp, body := do(t, "GET", s.url+long, nil, nil)
	if resp.StatusCode != http.StatusRequestURITooLong || ociCode(t, body) != "UNSUPPORTED" || !strings.Contains(string(body), "maxURLBytes") {
		t.Errorf("a 2.1 KB URL: %s %s; want 414 naming the limit", resp.Status, body)
	}
	if resp, _ := do(t, "GET", s.url+"/v2/"+strings.Repeat("a", 200)+"/manifests/v1", nil, nil); resp.StatusCode == http.StatusRequestURITooLong {
		t.Errorf("a URL within the limit answered 414")
	}
}

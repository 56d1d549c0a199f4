package e2e

import (
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/e2e/peers"
)

// regcache started with a low soft open-files limit runs with the hard
// limit, and one address holding idle connections up to its cap neither
// gets more nor keeps other clients out.
func TestOpenFilesAndConnectionCaps(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	peers.SeedImage(t, u.Host+"/library/app:v1", true)

	// Start it through a shell that lowers the soft limit first.
	wrapper := filepath.Join(t.TempDir(), "regcache-low-nofile")
	writeFile(t, wrapper, "#!/bin/sh\nulimit -Sn 256 || exit 1\nexec "+bin+" \"$@\"\n")
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	rc := peers.StartRegcache(t, wrapper, "--upstream", "docker.io="+u.URL(), "--max-conns-per-address", "8")
	m := regexp.MustCompile(`openFiles=(\d+)`).FindStringSubmatch(rc.Logs())
	if m == nil {
		t.Fatalf("the start-up log names no openFiles limit:\n%s", rc.Logs())
	}
	if got, _ := strconv.ParseUint(m[1], 10, 64); got != lim.Max {
		t.Errorf("regcache runs with an open-files limit of %s, want the hard limit %d (started with a soft limit of 256)", m[1], lim.Max)
	}

	var held []net.Conn
	for range 8 {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", rc.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	over, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", rc.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Errorf("a ninth connection from 127.0.0.2 was not closed (err %v)", err)
	}
	peers.Run(t, bin, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*", "--server", rc.URL(), "--token", rc.Token())
	if _, err := crane.Digest(rc.Addr+"/hub/app:v1", crane.Insecure); err != nil {
		t.Errorf("a client on 127.0.0.1 cannot pull while 127.0.0.2 holds its cap: %v", err)
	}
}

// Rules may name only the well-known registries, upstreams given an
// endpoint and those allowed with --allow-upstream.
func TestAllowedUpstreamsEndToEnd(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	rc := peers.StartRegcacheWith(t, bin, peers.ServeOptions{Env: []string{"REGCACHE_ALLOW_UPSTREAM=*.apps.example"}},
		"--upstream", "mirror.internal:5000=http://127.0.0.1:1", "--allow-upstream", "registry.corp.example")
	create := func(name, source string) (string, int) {
		_, stderr, code := peers.Run(t, bin, "cache", "create", "-n", name, "-s", source, "-t", strings.ToLower(name)+"/*", "--server", rc.URL(), "--token", rc.Token())
		return stderr, code
	}
	for name, source := range map[string]string{"WellKnown": "ghcr.io/org/*", "Endpoint": "mirror.internal:5000/team/*",
		"FlagAllowed": "registry.corp.example/team/*", "EnvAllowed": "reg.apps.example/team/*"} {
		if stderr, code := create(name, source); code != 0 {
			t.Errorf("cache create -s %s: exit %d: %s", source, code, stderr)
		}
	}
	stderr, code := create("Attacker", "attacker.example/x/*")
	if code == 0 || !strings.Contains(stderr, "not allowed") || !strings.Contains(stderr, "--allow-upstream") {
		t.Errorf("cache create -s attacker.example/x/*: exit %d: %q; want a refusal saying how to allow it", code, stderr)
	}
	_, stderr, code = peers.Run(t, bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--allow-upstream", "*.com")
	if code == 0 || !strings.Contains(stderr, "allowedUpstreams") {
		t.Errorf("serve --allow-upstream '*.com': exit %d: %q; want a refusal", code, stderr)
	}
}

// A full disk is reported as such ("cache storage full", 507), not as an
// upstream failure or an internal error naming a temporary path, and
// stores nothing; once space is freed, pulls succeed.
func TestStorageFull(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dataDir).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dataDir).Run() })

	big := randomBytes(t, 12<<20) // more than the whole disk
	bigDigest := pushBlob(t, u.Host+"/library/app", big)
	img := peers.SeedImage(t, u.Host+"/library/small:v1", true)
	// quay.io is the same registry behind a proxy that sends blobs without
	// a length: regcache cannot refuse them before writing, and runs out
	// of room while it writes.
	target, _ := url.Parse(u.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		if strings.Contains(r.Request.URL.Path, "/blobs/") {
			r.Header.Del("Content-Length")
			r.ContentLength = -1
		}
		return nil
	}
	chunked := httptest.NewServer(proxy)
	t.Cleanup(chunked.Close)
	rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+u.URL(), "--upstream", "quay.io="+chunked.URL, "--data-dir", dataDir)
	peers.Run(t, bin, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*", "--server", rc.URL(), "--token", rc.Token())
	peers.Run(t, bin, "cache", "create", "-n", "QuayLibrary", "-s", "quay.io/library/*", "-t", "quay/*", "--server", rc.URL(), "--token", rc.Token())

	checkFull := func(what, path string) {
		t.Helper()
		resp, body := get(t, rc.URL()+path)
		if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(body, "cache storage full") {
			t.Errorf("%s: %d %.300q; want 507 saying the cache storage is full", what, resp.StatusCode, body)
		}
		for _, leak := range []string{dataDir, "/tmp/", "upstream unavailable"} {
			if strings.Contains(body, leak) {
				t.Errorf("%s: the answer says %q: %s", what, leak, body)
			}
		}
	}
	checkFull("a blob larger than the free space", "/v2/hub/app/blobs/"+bigDigest)
	checkFull("a blob of unknown size that fills the disk", "/v2/quay/app/blobs/"+bigDigest)
	if entries, err := os.ReadDir(filepath.Join(dataDir, "blobs", "tmp")); err != nil || len(entries) != 0 {
		t.Errorf("a failed fill left temporary files: %v %v", entries, err)
	}

	// Fill what is left, then ask for an uncached manifest.
	filler := filepath.Join(dataDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := make([]byte, 64<<10); ; {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	checkFull("a manifest on a full disk", "/v2/hub/small/manifests/v1")
	if !strings.Contains(rc.Logs(), "cache storage full") {
		t.Errorf("the log does not say the cache storage is full:\n%s", rc.Logs())
	}

	// Space freed: the same pull works, and nothing bad was kept.
	os.Remove(filler)
	checkImage(t, rc.Addr+"/hub/small:v1", img)
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushBlob uploads b as a blob of repo (host/path) and returns its digest.
func pushBlob(t *testing.T, repo string, b []byte) string {
	t.Helper()
	r, err := name.NewRepository(repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	layer := static.NewLayer(b, types.OCILayer)
	if err := remote.WriteLayer(r, layer, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push blob to %s: %v", repo, err)
	}
	d, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// regcache serves TLS from --tls-cert and --tls-key, loads a renewed
// certificate without a restart, and the CLI reaches it with --ca-cert.
func TestTLS(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/app:v1", true)
	ca := peers.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, dir, "first")
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, string(ca.PEM))
	rc := peers.StartRegcacheWith(t, bin, peers.ServeOptions{RootCAs: ca.Pool},
		"--upstream", "docker.io="+u.URL(), "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(rc.URL(), "https://") {
		t.Fatalf("URL %s", rc.URL())
	}
	if strings.Contains(rc.Logs(), "plain HTTP") {
		t.Errorf("a TLS server on loopback warns about plain HTTP:\n%s", rc.Logs())
	}
	// The CLI trusts the server's CA with --ca-cert, and only then.
	if _, stderr, code := peers.Run(t, bin, "cache", "list", "--server", rc.URL(), "--token", rc.Token()); code == 0 || !strings.Contains(stderr, "certificate") {
		t.Errorf("the CLI without --ca-cert: exit %d, %s; want a certificate error", code, stderr)
	}
	stdout, stderr, code := peers.Run(t, bin, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*",
		"--server", rc.URL(), "--token", rc.Token(), "--ca-cert", caFile)
	if code != 0 {
		t.Fatalf("cache create over https: exit %d: %s%s", code, stdout, stderr)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	ref, err := name.ParseReference(rc.Addr + "/hub/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(ref, remote.WithTransport(tr), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pull over TLS: %v", err)
	}
	if d, _ := got.Digest(); d.String() != img.Digest {
		t.Errorf("pulled %s, want %s", d, img.Digest)
	}

	served := func() string {
		conn, err := tls.Dial("tcp", rc.Addr, &tls.Config{RootCAs: ca.Pool})
		if err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "first" {
		t.Fatalf("serves %q", cn)
	}
	ca.Issue(t, dir, "renewed")
	for deadline := time.Now().Add(15 * time.Second); served() != "renewed"; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not served within 15s:\n%s", rc.Logs())
		}
	}
}

// get GETs url and returns the response with its whole body.
func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, b := send(t, http.MethodGet, url, nil, nil)
	return resp, string(b)
}

package e2e

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"

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

package peers

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// HAProxyOptions configures StartHAProxy.
type HAProxyOptions struct {
	// CheckPath is the path of the active health check, GET, expecting
	// 200 (default /readyz, regcache's readiness endpoint).
	CheckPath string
}

// HAProxy is a running HAProxy load balancer in front of a test's backends:
// one HTTP frontend on a 127.0.0.1 port, round-robin over the backends,
// each checked every 500ms (down after 2 failures, up after 1 success), and
// a request whose backend refuses the connection (or closes it without an
// answer) retried on another backend.
type HAProxy struct {
	addr     string
	backends []string
	out      *syncBuffer
	proc     *process
	once     sync.Once
}

// haproxyConfig is the configuration StartHAProxy (and the benchmark's ha
// servers, through HAProxyConfig) runs. The timeouts are
// inactivity timeouts: a blob streamed for an hour never idles for ten
// minutes, and a fill waiting on a slow upstream is answered within that.
const haproxyConfig = `global
	maxconn 4096

defaults
	mode http
	timeout connect 2s
	timeout client 10m
	timeout server 10m
	timeout http-request 30s
	timeout http-keep-alive 30s
	timeout queue 10s
	timeout check 2s
	# A connection refused or closed unanswered by a backend that died is
	# retried on another backend: redispatch on every retry, not only the
	# last. Only those failures: an answered request is never sent twice.
	retries 3
	option redispatch 1
	retry-on conn-failure empty-response

frontend regcache
	bind %s

	default_backend replicas

backend replicas
	balance roundrobin
	option httpchk GET %s
	http-check expect status 200
	default-server inter 500ms fall 2 rise 1
%s`

// HAProxyConfig is the haproxy configuration of a load balancer listening
// on listen, round-robin over backends (host:port each, named b0, b1, ...),
// each checked with GET checkPath every 500 ms (down after 2 failures, up
// after 1), a request a dead backend refused retried on another.
func HAProxyConfig(listen, checkPath string, backends []string) string {
	var servers strings.Builder
	for i, b := range backends {
		fmt.Fprintf(&servers, "\tserver b%d %s check\n", i, b)
	}
	return fmt.Sprintf(haproxyConfig, listen, checkPath, servers.String())
}

// StartHAProxy starts Debian's /usr/sbin/haproxy in the foreground with a
// generated configuration in a temporary directory, balancing over
// backends (host:port each), and returns once a request through it is
// answered with 200 on opts.CheckPath. The test is skipped (failed in CI)
// when haproxy is not installed; the process is stopped by t.Cleanup and
// its output logged when the test failed.
func StartHAProxy(t testing.TB, backends []string, opts HAProxyOptions) *HAProxy {
	t.Helper()
	bin := Require(t, "haproxy")
	if len(backends) == 0 {
		t.Fatal("start haproxy: no backends")
	}
	if opts.CheckPath == "" {
		opts.CheckPath = "/readyz"
	}
	if !strings.HasPrefix(opts.CheckPath, "/") || strings.ContainsAny(opts.CheckPath, " \t\n") {
		t.Fatalf("start haproxy: CheckPath %q: want an absolute path without spaces", opts.CheckPath)
	}
	for i, b := range backends {
		if b == "" || strings.ContainsAny(b, " \t\n") {
			t.Fatalf("start haproxy: backend %d is %q: want host:port", i, b)
		}
	}

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	h := &HAProxy{out: &syncBuffer{}, backends: backends}
	var lastErr error
	for attempt := 0; attempt < bindAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("start haproxy: %v", err)
		}
		h.addr = loopback(port)
		cfg := HAProxyConfig(h.addr, opts.CheckPath, backends)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatalf("start haproxy: write config: %v", err)
		}
		off := h.out.Len()
		// -db: foreground, no daemon, so the process is the proxy and
		// its exit is seen; -f the generated configuration only.
		h.proc, err = startProcess(bin, []string{"-db", "-f", cfgPath}, childEnv(nil), h.out)
		if err != nil {
			t.Fatalf("start haproxy: %v", err)
		}
		lastErr = waitReady(t.Context(), h.URL()+opts.CheckPath, nil, func(code int) bool { return code == http.StatusOK }, h.proc, readyTimeout)
		if lastErr == nil {
			break
		}
		h.proc.kill()
		if !errors.Is(lastErr, errExited) || !bindFailed(strings.ToLower(h.out.since(off))) {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start haproxy: %v\nconfig:\n%s\noutput:\n%s", lastErr, fileForMessage(t, cfgPath), h.out.String())
	}
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			t.Logf("haproxy %s output:\n%s", h.addr, h.out.String())
		}
	})
	return h
}

// Addr returns the frontend's "127.0.0.1:port".
func (h *HAProxy) Addr() string { return h.addr }

// URL returns the frontend's base URL, "http://" + Addr.
func (h *HAProxy) URL() string { return "http://" + h.addr }

// Logs returns what haproxy has written so far.
func (h *HAProxy) Logs() string { return h.out.String() }

// Stop stops haproxy (SIGTERM, killed after a grace period); afterwards
// connections to Addr are refused. It is safe to call more than once and
// is also run by t.Cleanup.
func (h *HAProxy) Stop() {
	h.once.Do(func() { h.proc.terminate(stopGrace) })
}

// backendStateTimeout bounds WaitBackend: two checks 500ms apart, with
// room for a loaded machine.
const backendStateTimeout = 15 * time.Second

// serverState matches haproxy's report of a health check changing a
// server's state, e.g. "Server replicas/b0 is DOWN, reason: ...".
var serverState = regexp.MustCompile(`Server replicas/(b\d+) is (UP|DOWN)\b`)

// WaitBackend waits until haproxy's health checks have taken backend (as
// given to StartHAProxy) out of the rotation (up false) or back in (up
// true), as haproxy reports on its output. A backend starts up.
func (h *HAProxy) WaitBackend(t testing.TB, backend string, up bool) {
	t.Helper()
	i := slices.Index(h.backends, backend)
	if i < 0 {
		t.Fatalf("haproxy %s: %s is not one of its backends %v", h.addr, backend, h.backends)
	}
	name, want := fmt.Sprintf("b%d", i), "DOWN"
	if up {
		want = "UP"
	}
	deadline := time.NewTimer(backendStateTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		state := "UP"
		for _, m := range serverState.FindAllStringSubmatch(h.out.String(), -1) {
			if m[1] == name {
				state = m[2]
			}
		}
		if state == want {
			return
		}
		select {
		case <-tick.C:
		case <-h.proc.done:
			t.Fatalf("haproxy %s exited waiting for backend %s to be %s: %v", h.addr, backend, want, h.proc.err)
		case <-deadline.C:
			t.Fatalf("haproxy %s: backend %s not %s after %v", h.addr, backend, want, backendStateTimeout)
		}
	}
}

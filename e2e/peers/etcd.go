package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// etcdReadyTimeout bounds etcd's start: a one-member cluster elects
// itself within about a second; a slow disk's first fsyncs add some.
const etcdReadyTimeout = 30 * time.Second

// Etcd is a one-member etcd cluster (the etcd binary on $PATH, Debian's
// etcd-server) with its data in a temporary directory, serving clients on
// a 127.0.0.1 port without TLS or authentication.
type Etcd struct {
	// Endpoint is the client URL, http://127.0.0.1:<port>.
	Endpoint string

	t          testing.TB
	bin        string
	dir        string
	clientPort int
	peerPort   int
	out        *syncBuffer
	proc       *process
}

// StartEtcd starts etcd on free loopback ports with a temporary data
// directory and waits until it reports itself healthy. The test is skipped
// (failed when CI=true) when etcd is not installed; the server is killed
// by t.Cleanup and its output logged when the test failed.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	e := &Etcd{t: t, bin: Require(t, "etcd"), dir: t.TempDir(), out: &syncBuffer{}}
	var lastErr error
	for attempt := 0; attempt < bindAttempts; attempt++ {
		var err error
		if e.clientPort, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if e.peerPort, err = freePort(); err != nil {
			t.Fatal(err)
		}
		e.Endpoint = "http://" + loopback(e.clientPort)
		off := e.out.Len()
		if lastErr = e.start(); lastErr == nil {
			break
		}
		if !bindFailed(e.out.since(off)) {
			t.Fatalf("start etcd: %v\noutput:\n%s", lastErr, e.out.since(off))
		}
	}
	if lastErr != nil {
		t.Fatalf("start etcd: no free ports after %d attempts: %v", bindAttempts, lastErr)
	}
	t.Cleanup(func() {
		e.Kill()
		if t.Failed() {
			t.Logf("etcd %s output:\n%s", e.Endpoint, e.out.String())
		}
	})
	return e
}

// start runs etcd on e's ports and data directory and waits until healthy.
func (e *Etcd) start() error {
	peer := "http://" + loopback(e.peerPort)
	args := []string{
		"--name", "regcache-test",
		"--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", e.Endpoint,
		"--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "regcache-test=" + peer,
		"--initial-cluster-state", "new",
		"--logger", "zap", "--log-outputs", "stderr",
	}
	// ETCD_* variables of the developer's shell would change the server.
	p, err := startProcess(e.bin, args, childEnv(nil, "ETCD"), e.out)
	if err != nil {
		return err
	}
	e.proc = p
	if err := e.waitHealthy(e.t.Context()); err != nil {
		p.kill()
		return err
	}
	return nil
}

// waitHealthy polls /health until it reports {"health":"true"}.
func (e *Etcd) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, etcdReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.Endpoint+"/health", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err != nil {
			last = err.Error()
		} else {
			var h struct{ Health string }
			err := json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err == nil && h.Health == "true" {
				return nil
			}
			last = fmt.Sprintf("status %s, health %q", resp.Status, h.Health)
		}
		select {
		case <-e.proc.done:
			return fmt.Errorf("%w (%v); last probe: %s", errExited, e.proc.err, last)
		case <-ctx.Done():
			return fmt.Errorf("etcd at %s not healthy after %v; last probe: %s", e.Endpoint, etcdReadyTimeout, last)
		case <-tick.C:
		}
	}
}

// Kill ends etcd at once (SIGKILL), as a crash would.
func (e *Etcd) Kill() {
	if e.proc != nil {
		e.proc.kill()
	}
}

// Stop ends etcd with SIGTERM, killing it when it takes longer than 10 s.
func (e *Etcd) Stop() {
	if e.proc != nil {
		e.proc.terminate(10 * time.Second)
	}
}

// Restart stops etcd and starts it again on the same ports and data
// directory, waiting until it is healthy again.
func (e *Etcd) Restart() {
	e.t.Helper()
	e.Stop()
	off := e.out.Len()
	if err := e.start(); err != nil {
		e.t.Fatalf("restart etcd: %v\noutput:\n%s", err, e.out.since(off))
	}
}

// Logs returns etcd's output so far.
func (e *Etcd) Logs() string { return e.out.String() }

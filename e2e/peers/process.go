package peers

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyTimeout bounds how long a started peer may take to answer /v2/.
const readyTimeout = 15 * time.Second

// bindAttempts is how many free ports a peer process is offered before giving
// up: a port found free can be taken by someone else before the process binds.
const bindAttempts = 3

// syncBuffer is an io.Writer safe for the concurrent writes of a process's
// stdout and stderr copiers and reads from the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Len returns the number of bytes written so far.
func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// since returns what was written after the first off bytes.
func (b *syncBuffer) since(off int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if off > b.buf.Len() {
		return ""
	}
	return string(b.buf.Bytes()[off:])
}

// freePort returns a loopback TCP port that was free a moment ago. The
// listener is closed so that a child process can bind the port; callers retry
// with another port if it was taken in between.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free loopback port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("release loopback port %d: %w", port, err)
	}
	return port, nil
}

// loopback returns "127.0.0.1:port".
func loopback(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// childEnv returns the environment for a child program: the test process's
// environment without variables starting with one of drop (so that a
// developer's REGCACHE_* or REGISTRY_* settings cannot change what a test
// runs), plus extra.
//
// A race-enabled Go binary sleeps one second at exit by default (GORACE
// atexit_sleep_ms=1000) to let racing goroutines report; every stop of a
// race-built regcache and every CLI call would pay it, so it is turned off
// unless GORACE already sets it.
func childEnv(extra []string, drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(drop, func(prefix string) bool { return strings.HasPrefix(kv, prefix) }) {
			env = append(env, kv)
		}
	}
	if gorace := os.Getenv("GORACE"); !strings.Contains(gorace, "atexit_sleep_ms") {
		env = append(env, "GORACE="+strings.TrimSpace(gorace+" atexit_sleep_ms=0"))
	}
	return append(env, extra...)
}

// process is a started child program whose output goes to a shared buffer.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait has returned
	err  error         // result of cmd.Wait, valid after done is closed
}

// startProcess starts bin with args and environment env (see childEnv),
// writing stdout and stderr to out.
func startProcess(bin string, args, env []string, out *syncBuffer) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	// A grandchild holding the output pipe must not block Wait forever.
	cmd.WaitDelay = 5 * time.Second
	configureChild(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be reaped.
func (p *process) kill() {
	if !p.exited() {
		// The process may exit between the check and the signal; the
		// error ("process already finished") carries no information.
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// terminate sends SIGTERM and waits up to grace for the process to exit.
// If it does not, it is killed and timedOut is true. err is the exit status.
func (p *process) terminate(grace time.Duration) (timedOut bool, err error) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return false, p.err
	case <-timer.C:
		p.kill()
		return true, p.err
	}
}

// errExited reports that a peer process exited before it became ready.
var errExited = errors.New("process exited before it was ready")

// waitReady polls GET url until ok accepts the status code, the process
// exits, or timeout passes.
func waitReady(ctx context.Context, url string, roots *x509.CertPool, ok func(status int) bool, p *process, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A probe can hang on a port someone else holds; the process exiting
	// (for example because it could not bind that port) ends it at once.
	probeCtx, cancelProbe := context.WithCancel(ctx)
	defer cancelProbe()
	go func() {
		select {
		case <-p.done:
			cancelProbe()
		case <-probeCtx.Done():
		}
	}()
	// No keep-alives: probing must not leave idle connections (and their
	// goroutines) behind in the test binary.
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots}},
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(probeCtx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("probe %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) && !p.exited() {
				return nil
			}
			last = "status " + resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("%w (%v); last probe of %s: %s", errExited, p.err, url, last)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v; last probe: %s", url, timeout, last)
		case <-tick.C:
		}
	}
}

// bindFailed reports whether output says the listen address was taken.
func bindFailed(output string) bool {
	return strings.Contains(output, "address already in use")
}

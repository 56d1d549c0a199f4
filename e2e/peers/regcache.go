package peers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// regcachePackage is the import path of the binary under test.
const regcachePackage = "github.com/regcache/regcache/cmd/regcache"

// stopGrace is how long regcache may take to shut down after SIGTERM.
const stopGrace = 10 * time.Second

// regcacheEnvPrefix starts the environment variables regcache reads; they
// are not inherited from the test process, so only what a test passes counts.
const regcacheEnvPrefix = "REGCACHE_"

// runTimeout bounds one CLI invocation made with Run.
const runTimeout = 2 * time.Minute

// build is the one regcache binary shared by every test of a test binary.
// It is the only package-level state: compiling once per test binary instead
// of once per test keeps the e2e suite fast.
var build struct {
	once sync.Once
	path string
	err  error
}

// BuildRegcache compiles cmd/regcache once per test binary, with the race
// detector when the tests run with -race, and returns the binary's path.
// A build error fails the test with the compiler's output.
//
// The binary outlives the test that first asked for it, so it is not in
// t.TempDir: it goes to a directory under $TMPDIR named after the checkout's
// go.mod, replaced atomically by every build. Test binaries of several
// packages may build concurrently, and repeated runs reuse one file instead
// of leaving a copy per run.
func BuildRegcache(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.path, build.err = compileRegcache()
	})
	if build.err != nil {
		t.Fatalf("build regcache: %v", build.err)
	}
	return build.path
}

// compileRegcache runs go build and returns the binary's path.
func compileRegcache() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("find go command: %w", err)
	}
	gomod, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	name := "regcache"
	if raceEnabled {
		name += "-race"
	}
	key := sha256.Sum256(bytes.TrimSpace(gomod))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("regcache-e2e-%d-%x", os.Getuid(), key[:6]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create build directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, name+"-*.tmp")
	if err != nil {
		return "", fmt.Errorf("create build output: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("create build output: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename below
	args := []string{"build", "-o", tmp.Name()}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, regcachePackage)
	if out, err := exec.Command(goBin, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	// Rename, not build in place: another test binary may be executing
	// the previous file right now.
	path := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("install built binary: %w", err)
	}
	return path, nil
}

// Regcache is a running `regcache serve` process on a 127.0.0.1 port.
// Its methods are meant to be called from the test's goroutine.
type Regcache struct {
	// Addr is "127.0.0.1:port", where the server listens.
	Addr string
	// DataDir is the server's --data-dir.
	DataDir string

	t       testing.TB
	bin     string
	args    []string // the caller's arguments, passed after ours
	env     []string // the server's whole environment
	ownData bool     // DataDir came from us, so --data-dir must be passed
	out     *syncBuffer
	proc    *process // nil while stopped
	raceOff int      // output already checked for race reports
	rootCAs *x509.CertPool
	// s3, bucket and prefix hold the server's blobs with
	// REGCACHE_E2E_STORE=s3.
	s3             *S3
	bucket, prefix string
}

// StartRegcache runs `bin serve --listen 127.0.0.1:<free port> --data-dir
// <dir> args...` and waits until GET /v2/ answers 200 (or 401, for servers
// started with client authentication). dir is a fresh t.TempDir unless args
// contain --data-dir. The process is stopped by t.Cleanup, and its output is
// logged when the test has failed.
func StartRegcache(t testing.TB, bin string, args ...string) *Regcache {
	t.Helper()
	return StartRegcacheWith(t, bin, ServeOptions{}, args...)
}

// ServeOptions adjusts a server started with StartRegcacheWith.
type ServeOptions struct {
	// Env is added to the server's environment (KEY=value entries), for
	// example the variables env:// secret references name. It is kept
	// across Restart. The test process's REGCACHE_* variables are never
	// inherited.
	Env []string
	// RootCAs, when set, says the server serves TLS (started with
	// --tls-cert and --tls-key) with a certificate these CAs trust: it is
	// probed over https, and URL answers https://.
	RootCAs *x509.CertPool
}

// StartRegcacheWith is StartRegcache with extra environment variables.
// Unlike t.Setenv, it works in parallel tests.
func StartRegcacheWith(t testing.TB, bin string, opts ServeOptions, args ...string) *Regcache {
	t.Helper()
	r := &Regcache{
		t:       t,
		bin:     bin,
		args:    slices.Clone(args),
		env:     childEnv(opts.Env, regcacheEnvPrefix),
		rootCAs: opts.RootCAs,
		out:     &syncBuffer{},
	}
	if dir, ok := dataDirArg(args); ok {
		r.DataDir = dir
	} else {
		r.DataDir = t.TempDir()
		r.ownData = true
	}
	r.sharedStore(t)
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("regcache %s output:\n%s", r.Addr, r.Logs())
		}
	})
	if err := r.start(0); err != nil {
		t.Fatalf("start regcache: %v (output logged below)", err)
	}
	return r
}

// dataDirArg returns the value of a --data-dir flag in args.
func dataDirArg(args []string) (string, bool) {
	for i, a := range args {
		switch {
		case a == "--data-dir" && i+1 < len(args):
			return args[i+1], true
		case strings.HasPrefix(a, "--data-dir="):
			return strings.TrimPrefix(a, "--data-dir="), true
		}
	}
	return "", false
}

// start launches the server, on port if it is not 0 and still free,
// otherwise on a fresh free port, and waits until it is ready.
func (r *Regcache) start(port int) error {
	var err error
	for attempt := 0; attempt < bindAttempts; attempt++ {
		if port == 0 || attempt > 0 {
			if port, err = freePort(); err != nil {
				return err
			}
		}
		addr := loopback(port)
		args := []string{"serve", "--listen", addr}
		if r.ownData {
			args = append(args, "--data-dir", r.DataDir)
		}
		args = append(args, r.args...)
		off := r.out.Len()
		var p *process
		if p, err = startProcess(r.bin, args, r.env, r.out); err != nil {
			return err
		}
		err = waitReady(r.t.Context(), r.scheme()+"://"+addr+"/v2/", r.rootCAs, func(code int) bool {
			return code == http.StatusOK || code == http.StatusUnauthorized
		}, p, readyTimeout)
		if err == nil {
			// The start-up lines go through regcache's asynchronous log
			// writer: ready may come before they are out. Tests read them.
			err = waitOutput(r.out, off, "regcache serving", readyTimeout)
			if err != nil {
				p.kill()
				return fmt.Errorf("%s %s: %w", r.bin, strings.Join(args, " "), err)
			}
			r.Addr, r.proc = addr, p
			return nil
		}
		p.kill()
		if !errors.Is(err, errExited) || !bindFailed(r.out.since(off)) {
			return fmt.Errorf("%s %s: %w", r.bin, strings.Join(args, " "), err)
		}
	}
	return fmt.Errorf("no free port after %d attempts: %w", bindAttempts, err)
}

// PID returns the process ID of the running server, 0 when it is stopped.
func (r *Regcache) PID() int {
	if r.proc == nil {
		return 0
	}
	return r.proc.cmd.Process.Pid
}

// URL returns the server's base URL, "http://" + Addr.
func (r *Regcache) URL() string { return r.scheme() + "://" + r.Addr }

func (r *Regcache) scheme() string {
	if r.rootCAs != nil {
		return "https"
	}
	return "http"
}

// Logs returns everything the process (and its earlier runs, across
// Restart) has written to stdout and stderr.
func (r *Regcache) Logs() string { return r.out.String() }

// Token reads the admin API token the server keeps in <DataDir>/admin.token.
func (r *Regcache) Token() string {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.DataDir, "admin.token"))
	if err != nil {
		r.t.Fatalf("read regcache admin token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// Stop sends SIGTERM and waits for the server to exit. A server that does not
// exit within 10 s, exits with a non-zero status, or reported a data race
// fails the test: shutting down cleanly is part of regcache's contract.
// Stop is idempotent and also run by t.Cleanup.
func (r *Regcache) Stop() {
	r.t.Helper()
	if r.proc == nil {
		return
	}
	p := r.proc
	r.proc = nil
	timedOut, err := p.terminate(stopGrace)
	switch {
	case timedOut:
		r.t.Errorf("regcache %s did not exit within %v of SIGTERM; killed", r.Addr, stopGrace)
	case err != nil:
		r.t.Errorf("regcache %s exited uncleanly after SIGTERM: %v", r.Addr, err)
	}
	r.checkRaces()
}

// Kill stops the server with SIGKILL, as a crash would: no shutdown code
// runs. Use it to test recovery of the data directory; Restart brings the
// server back.
func (r *Regcache) Kill() {
	r.t.Helper()
	if r.proc == nil {
		return
	}
	r.proc.kill()
	r.proc = nil
	r.checkRaces()
}

// Restart stops the server (if running) and starts it again with the same
// arguments and data directory, on the same port when it is still free.
// Addr changes only when it is not.
func (r *Regcache) Restart() {
	r.t.Helper()
	r.Stop()
	_, portText, err := net.SplitHostPort(r.Addr)
	if err != nil {
		r.t.Fatalf("restart regcache: address %q: %v", r.Addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		r.t.Fatalf("restart regcache: address %q: %v", r.Addr, err)
	}
	if err := r.start(port); err != nil {
		r.t.Fatalf("restart regcache: %v (output logged below)", err)
	}
}

// checkRaces fails the test if the race detector reported a data race in
// the server (a -race build keeps running after a report).
func (r *Regcache) checkRaces() {
	r.t.Helper()
	off := r.raceOff
	r.raceOff = r.out.Len()
	if strings.Contains(r.out.since(off), "WARNING: DATA RACE") {
		r.t.Errorf("regcache %s: the race detector reported a data race (see its output)", r.Addr)
	}
}

// RunOptions adjusts a CLI invocation made with RunWith.
type RunOptions struct {
	// Env is added to the test process's environment (KEY=value entries),
	// from which REGCACHE_* variables are removed.
	Env []string
	// Stdin is the command's standard input; empty when nil.
	Stdin io.Reader
}

// Run runs bin with args (a regcache CLI command such as `cache list`) to
// completion and returns its output and exit code. Failing to start it or
// a run longer than two minutes fails the test; a non-zero exit does not.
func Run(t testing.TB, bin string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	return RunWith(t, RunOptions{}, bin, args...)
}

// RunWith is Run with extra environment variables or standard input.
func RunWith(t testing.TB, opts RunOptions, bin string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv(opts.Env, regcacheEnvPrefix)
	cmd.Stdin = opts.Stdin
	cmd.WaitDelay = 5 * time.Second
	configureChild(cmd)
	var outBuf, errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	err := cmd.Run()
	stdout, stderr = outBuf.String(), errBuf.String()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: did not finish within %v: %v\nstdout:\n%s\nstderr:\n%s",
			bin, strings.Join(args, " "), runTimeout, err, stdout, stderr)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return stdout, stderr, 0
	case errors.As(err, &exitErr) && exitErr.Exited():
		return stdout, stderr, exitErr.ExitCode()
	default:
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", bin, strings.Join(args, " "), err, stdout, stderr)
		return "", "", -1
	}
}

// waitOutput waits until what out received since off contains want (a
// line a server always logs at the info level), at most timeout.
func waitOutput(out *syncBuffer, off int, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(out.since(off), want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("ready, but its output has no %q after %v (started with a log level above info?)", want, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

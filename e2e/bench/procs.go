package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The child programs, by import path; buildChildren compiles them into one
// directory, each binary named after the last path element.
var childPackages = []string{
	"github.com/regcache/regcache/cmd/regcache",
	"github.com/regcache/regcache/e2e/bench/upstream",
	"github.com/regcache/regcache/e2e/bench/static",
	"github.com/regcache/regcache/e2e/bench/distproxy",
}

// buildChildren runs one `go build` (no -race: the servers are measured) for
// every child program and returns the directory holding the binaries.
func buildChildren(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, childPackages...)
	cmd := exec.CommandContext(ctx, goCommand(), args...)
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// goCommand is the go command of the toolchain running us when known.
func goCommand() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goCommand(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run the benchmark from the regcache checkout")
	}
	return filepath.Dir(gomod), nil
}

// child is a started server process whose output goes to a log file.
type child struct {
	name string
	addr string
	log  string // path of the output file
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait returned
	err  error         // Wait's result, valid once done is closed
}

// URL returns "http://" + addr.
func (c *child) URL() string { return "http://" + c.addr }

// Pid returns the process id.
func (c *child) Pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to 10 s, then SIGKILL.
func (c *child) stop() {
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// tail returns the last n bytes of the child's output, for error messages.
func (c *child) tail(n int) string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", c.log, err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// procSet remembers every started child so that all are stopped on exit.
type procSet struct {
	mu   sync.Mutex
	list []*child
}

func (s *procSet) add(c *child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, c)
}

func (s *procSet) killAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.list {
		if !c.exited() {
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	s.list = nil
}

// childSpec says how to start one server.
type childSpec struct {
	name string
	bin  string
	args func(addr string) []string
	env  []string // added to the environment
	drop []string // prefixes of variables not inherited
	log  string   // output file (appended to)
}

// startChild starts spec on a free loopback port and waits until GET /v2/
// answers 200, retrying on another port if the first was taken meanwhile.
func startChild(ctx context.Context, procs *procSet, spec childSpec) (*child, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		out, err := os.OpenFile(spec.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(spec.bin, spec.args(addr)...)
		cmd.Env = append(filterEnv(os.Environ(), spec.drop), spec.env...)
		cmd.Stdout, cmd.Stderr = out, out
		// The kernel kills the child if we die without cleaning up.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		err = cmd.Start()
		out.Close()
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.name, err)
		}
		c := &child{name: spec.name, addr: addr, log: spec.log, cmd: cmd, done: make(chan struct{})}
		go func() {
			c.err = cmd.Wait()
			close(c.done)
		}()
		procs.add(c)
		if lastErr = waitReady(ctx, c); lastErr == nil {
			return c, nil
		}
		c.stop()
		if !strings.Contains(c.tail(4096), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// waitReady polls GET /v2/ until it answers 200, for at most 30 s.
func waitReady(ctx context.Context, c *child) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	last := ""
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL()+"/v2/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before it was ready (%v); output:\n%s", c.name, c.err, c.tail(4096))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready on %s: %s; output:\n%s", c.name, c.addr, last, c.tail(4096))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func filterEnv(env, drop []string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, p := range drop {
			keep = keep && !strings.HasPrefix(kv, p)
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds returns utime+stime of pid from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces: fields are counted
	// from the closing parenthesis. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return float64(utime+stime) / clockTicks, nil
}

// memStatus returns VmHWM and VmRSS of pid in bytes.
func memStatus(pid int) (hwm, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmHWM" && k != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		if k == "VmHWM" {
			hwm = kb << 10
		} else {
			rss = kb << 10
		}
	}
	return hwm, rss, nil
}

// resetPeak resets VmHWM of pid to its current RSS (Linux 4.0+).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// rssSampler records the largest VmRSS of a process, sampled every 50 ms: the
// fallback where VmHWM cannot be reset.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	max  int64
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if _, rss, err := memStatus(pid); err == nil && rss > s.max {
				s.max = rss
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Max stops sampling and returns the largest RSS seen.
func (s *rssSampler) Max() int64 {
	close(s.stop)
	<-s.done
	return s.max
}

// gitRevision describes the checkout: short commit, "+dirty" when the work
// tree has changes (the benchmark measures the work tree).
func gitRevision(ctx context.Context, dir string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	st, err := exec.CommandContext(ctx, "git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output()
	if err == nil && len(bytes.TrimSpace(st)) > 0 {
		rev += "+dirty"
	}
	return rev
}

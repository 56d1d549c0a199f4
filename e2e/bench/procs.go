package main

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/regcache/regcache/e2e/bench/probe"
)

// The child programs, by import path; buildChildren compiles them into one
// directory, each binary named after the last path element.
var childPackages = []string{
	regcachePackage,
	"github.com/regcache/regcache/e2e/bench/upstream",
	"github.com/regcache/regcache/e2e/bench/static",
	"github.com/regcache/regcache/e2e/bench/floor",
	"github.com/regcache/regcache/e2e/bench/distproxy",
}

const regcachePackage = "github.com/regcache/regcache/cmd/regcache"

// probeOverlay is added to regcache's main package for the benchmark's
// build only (go build -overlay): it starts the probe (e2e/bench/probe)
// when the benchmark sets its address, so that regcache's peak goroutines
// and allocations per request can be read without any benchmark code in
// regcache's source. An init function is the one way to hook a main
// package from outside it.
const probeOverlay = `package main

import (
	"fmt"
	"os"

	"github.com/regcache/regcache/e2e/bench/probe"
)

// Added by the benchmark's build (go build -overlay); not part of regcache.
func init() {
	if err := probe.Start(os.Getenv(probe.EnvAddr)); err != nil {
		fmt.Fprintln(os.Stderr, "benchmark probe:", err)
		os.Exit(1)
	}
}
`

// buildChildren runs one `go build` (no -race: the servers are measured) for
// every child program into dir, with the probe added to regcache through an
// overlay written under work.
func buildChildren(ctx context.Context, root, dir, work string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	probeFile := filepath.Join(work, "regcache_benchprobe.go")
	if err := os.WriteFile(probeFile, []byte(probeOverlay), 0o644); err != nil {
		return err
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(root, "cmd", "regcache", "zz_benchprobe.go"): probeFile,
	}})
	if err != nil {
		return err
	}
	overlayFile := filepath.Join(work, "overlay.json")
	if err := os.WriteFile(overlayFile, overlay, 0o644); err != nil {
		return err
	}
	args := append([]string{"build", "-overlay", overlayFile, "-o", dir + string(filepath.Separator)}, childPackages...)
	cmd := exec.CommandContext(ctx, goCommand(), args...)
	cmd.Dir = root
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
	name  string
	addr  string
	probe string // the probe's address; "" when the server has none
	group bool   // leads its own process group (a multi-process server)
	log   string // path of the output file
	cmd   *exec.Cmd
	done  chan struct{} // closed once Wait returned
	err   error         // Wait's result, valid once done is closed
	// members are the replicas behind this process when it is a load
	// balancer: part of the server, their processes counted with it.
	members []*child
	// backing are the services the server keeps its state in (object
	// store, metadata store), shared and measured apart from it.
	backing []*child
}

// URL returns "http://" + addr.
func (c *child) URL() string { return "http://" + c.addr }

// Pid returns the process id.
func (c *child) Pid() int { return c.cmd.Process.Pid }

// pids returns the processes that make up the server: the child itself
// and, for a multi-process server (nginx's master), its children; for a
// load balancer, those of its replicas too.
func (c *child) pids() []int {
	out := []int{c.Pid()}
	if c.group {
		out = append(out, childrenOf(c.Pid())...)
	}
	for _, m := range c.members {
		out = append(out, m.pids()...)
	}
	return out
}

// backingPids returns the processes of the services c keeps its state in.
func (c *child) backingPids() []int {
	var out []int
	for _, s := range c.backing {
		out = append(out, s.pids()...)
	}
	return out
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the child, or to its whole process group.
func (c *child) kill() {
	if c.group {
		_ = syscall.Kill(-c.Pid(), syscall.SIGKILL)
		return
	}
	_ = c.cmd.Process.Kill()
}

// stop sends SIGTERM (nginx's master then stops its workers), waits up to
// 10 s, then SIGKILL.
func (c *child) stop() {
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.kill()
		<-c.done
	}
	if c.group {
		_ = syscall.Kill(-c.Pid(), syscall.SIGKILL) // workers left behind, if any
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
			c.kill()
			<-c.done
		}
	}
	s.list = nil
}

// childSpec says how to start one server.
type childSpec struct {
	name string
	bin  string
	// args returns the command line for a server listening on addr; it may
	// write files the server reads (nginx's configuration).
	args  func(addr string) ([]string, error)
	env   []string // added to the environment
	drop  []string // prefixes of variables not inherited
	log   string   // output file (appended to)
	probe bool     // the server starts e2e/bench/probe at probe.EnvAddr
	// group starts the server as the leader of its own process group,
	// killed as a whole, and asks the kernel for SIGTERM rather than
	// SIGKILL if the benchmark dies, so that the server can stop the
	// processes it started itself (nginx's workers).
	group bool
	// ready waits until the started server answers (default: waitReady,
	// GET /v2/ answered 200).
	ready func(ctx context.Context, c *child) error
}

// startChild starts spec on a free loopback port and waits until GET /v2/
// answers 200, retrying on other ports if one was taken meanwhile.
func startChild(ctx context.Context, procs *procSet, spec childSpec) (*child, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args, err := spec.args(addr)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.name, err)
		}
		env := append(filterEnv(os.Environ(), append([]string{probe.EnvAddr + "="}, spec.drop...)), spec.env...)
		probeAddr := ""
		if spec.probe {
			if probeAddr, err = freeAddr(); err != nil {
				return nil, err
			}
			env = append(env, probe.EnvAddr+"="+probeAddr)
		}
		out, err := os.OpenFile(spec.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(spec.bin, args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = out, out
		// The kernel signals the child if we die without cleaning up.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if spec.group {
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
		}
		err = cmd.Start()
		out.Close()
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.name, err)
		}
		c := &child{name: spec.name, addr: addr, probe: probeAddr, group: spec.group, log: spec.log, cmd: cmd, done: make(chan struct{})}
		go func() {
			c.err = cmd.Wait()
			close(c.done)
		}()
		procs.add(c)
		ready := spec.ready
		if ready == nil {
			ready = waitReady
		}
		if lastErr = ready(ctx, c); lastErr == nil {
			return c, nil
		}
		c.stop()
		if tail := strings.ToLower(c.tail(4096)); !strings.Contains(tail, "address already in use") && !strings.Contains(tail, "cannot bind socket") {
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

// statFields returns the fields of /proc/<pid>/stat after the command name
// (which may contain spaces): field 3 (state) is the first.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return f, nil
}

// cpuSeconds returns utime+stime summed over pids, from /proc/<pid>/stat.
func cpuSeconds(pids []int) (float64, error) {
	var ticks int64
	for _, pid := range pids {
		f, err := statFields(pid)
		if err != nil {
			return 0, err
		}
		// utime and stime are fields 14 and 15.
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += utime + stime
	}
	return float64(ticks) / clockTicks, nil
}

// childrenOf returns the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// The parent's pid is field 4.
		if f, err := statFields(p); err == nil && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// memInfo is what /proc/<pid>/status says about memory and threads,
// summed over the processes of a server.
type memInfo struct {
	hwm, rss int64 // bytes
	threads  int
}

// memStatus returns VmHWM, VmRSS and Threads summed over pids.
func memStatus(pids []int) (memInfo, error) {
	var m memInfo
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return m, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || (k != "VmHWM" && k != "VmRSS" && k != "Threads") {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return m, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
			}
			switch k {
			case "VmHWM":
				m.hwm += n << 10
			case "VmRSS":
				m.rss += n << 10
			default:
				m.threads += int(n)
			}
		}
	}
	return m, nil
}

// resetPeak resets VmHWM of every pid to its current RSS (Linux 4.0+).
func resetPeak(pids []int) error {
	for _, pid := range pids {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			return err
		}
	}
	return nil
}

// rssSampler records the largest VmRSS (summed over a server's processes)
// and thread count, sampled every 50 ms: the RSS figure where VmHWM cannot
// be reset, and the thread figure always.
type rssSampler struct {
	stop    chan struct{}
	done    chan struct{}
	max     int64
	threads int
}

func sampleRSS(pids []int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if m, err := memStatus(pids); err == nil {
				s.max = max(s.max, m.rss)
				s.threads = max(s.threads, m.threads)
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

// Max stops sampling and returns the largest RSS and thread count seen.
func (s *rssSampler) Max() (rss int64, threads int) {
	close(s.stop)
	<-s.done
	return s.max, s.threads
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

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// regcacheProc is the regcache child process.
type regcacheProc struct {
	addr    string
	dataDir string
	logPath string
	token   string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // Wait's result, once done is closed
	probe   *http.Client
}

func (r *regcacheProc) url() string { return "http://" + r.addr }

// buildRegcache compiles cmd/regcache (no -race: it is measured) into dir.
func buildRegcache(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "regcache")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/regcache/regcache/cmd/regcache")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build regcache: %w\n%s", err, out)
	}
	return bin, nil
}

// startRegcache runs `regcache serve` on a free 127.0.0.1 port with one
// rule, docker.io/load/* -> load/*, whose upstream is upstreamURL, and
// waits until it answers.
func startRegcache(ctx context.Context, bin, work, upstreamURL string, perAddressCap int) (*regcacheProc, error) {
	cfg := filepath.Join(work, "regcache.yaml")
	yaml := fmt.Sprintf("upstreams:\n  docker.io: %s\nrules:\n  - name: load-test\n    source: docker.io/load/*\n    target: load/*\n", upstreamURL)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &regcacheProc{addr: addr, dataDir: filepath.Join(work, "data"), logPath: filepath.Join(work, "regcache.log"), done: make(chan struct{}),
		probe: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}}
	args := []string{"serve", "--config", cfg, "--listen", addr, "--data-dir", r.dataDir}
	if perAddressCap > 0 {
		args = append(args, "--max-conns-per-address", strconv.Itoa(perAddressCap))
	}
	out, err := os.Create(r.logPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	r.cmd = exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGCACHE_") {
			r.cmd.Env = append(r.cmd.Env, kv)
		}
	}
	r.cmd.Stdout, r.cmd.Stderr = out, out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start regcache: %w", err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := r.probe.Get(r.url() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("regcache exited before it was ready (%v); its log: %s", r.err, r.logPath)
		case <-ctx.Done():
			r.kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.kill()
			return nil, fmt.Errorf("regcache not ready on %s after 30s; its log: %s", addr, r.logPath)
		}
	}
	tok, err := os.ReadFile(filepath.Join(r.dataDir, "admin.token"))
	if err != nil {
		r.kill()
		return nil, fmt.Errorf("read regcache's admin token: %w", err)
	}
	r.token = strings.TrimSpace(string(tok))
	return r, nil
}

func (r *regcacheProc) kill() {
	r.cmd.Process.Kill()
	<-r.done
}

// stop sends SIGTERM and waits up to 10 s; regcache must exit cleanly.
func (r *regcacheProc) stop() error {
	r.probe.CloseIdleConnections()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		if r.err != nil {
			return fmt.Errorf("regcache exited uncleanly after SIGTERM: %w", r.err)
		}
		return nil
	case <-time.After(10 * time.Second):
		r.kill()
		return errors.New("regcache did not exit within 10s of SIGTERM; killed")
	}
}

// sample is regcache's resource use at one moment.
type sample struct {
	Goroutines int   `json:"goroutines"`
	OpenFiles  int   `json:"open_files"`
	Threads    int   `json:"threads"`
	RSSBytes   int64 `json:"rss_bytes"`
}

// sample reads regcache's goroutine count (through its debug endpoint),
// open files, threads and RSS.
func (r *regcacheProc) sample(ctx context.Context) (sample, error) {
	var s sample
	var err error
	if s.Goroutines, err = r.goroutines(ctx); err != nil {
		return s, err
	}
	pid := r.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.OpenFiles = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Threads":
			s.Threads, _ = strconv.Atoi(v)
		case "VmRSS":
			kb, _ := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
			s.RSSBytes = kb << 10
		}
	}
	return s, nil
}

// goroutines reads the first line of the goroutine profile:
// "goroutine profile: total N".
func (r *regcacheProc) goroutines(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url()+"/admin/v1/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.probe.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read regcache's goroutine count: %w", err)
	}
	defer func() {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if resp.StatusCode != http.StatusOK || !ok {
		return 0, fmt.Errorf("read regcache's goroutine count: %s %q", resp.Status, line)
	}
	return strconv.Atoi(n)
}

// logLevels counts the WARN and ERROR lines of regcache's log and returns
// the first few ERROR lines.
func (r *regcacheProc) logLevels() (warn, errs int, firstErrors []string) {
	f, err := os.Open(r.logPath)
	if err != nil {
		return 0, 0, []string{err.Error()}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "level=WARN"):
			warn++
		case strings.Contains(line, "level=ERROR"):
			errs++
			if len(firstErrors) < 5 {
				firstErrors = append(firstErrors, line)
			}
		}
	}
	return warn, errs, firstErrors
}

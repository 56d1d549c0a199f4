package e2e

// Helpers shared by the tests that pull through regcache with real container
// runtimes (runtimes_*_test.go) and check the files under deploy/
// (deploy_test.go): running commands, starting private containerd and dockerd
// daemons on temporary sockets, and reading what a runtime stored.
//
// The daemons run as root from temporary roots, state directories and
// sockets; the machine's own Docker daemon and its configuration are only
// used as a client (docker pull, build, run) and never reconfigured.

import (
	"bytes"
	"context"
	"encoding/json"
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
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regcache/regcache/e2e/peers"
)

// daemonReadyTimeout bounds how long a containerd or dockerd started by a
// test may take to answer on its socket.
const daemonReadyTimeout = 30 * time.Second

// daemonStopGrace is how long a daemon may take to exit after SIGTERM.
const daemonStopGrace = 15 * time.Second

// repoRoot returns the repository root (the e2e tests run in e2e/).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// deployFile returns the path of a file under deploy/.
func deployFile(t testing.TB, rel string) string {
	t.Helper()
	return filepath.Join(repoRoot(t), "deploy", filepath.FromSlash(rel))
}

// requireRoot skips the test when not run as root (fails it in CI, which
// runs as root): the containerd and dockerd daemons the tests start need it.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test starts containerd or dockerd and needs root; CI runs as root")
	}
	t.Skip("this test starts containerd or dockerd and needs root")
}

// requireDocker returns the docker client's path after checking that the
// machine's Docker Engine answers; a missing client or engine skips the test
// (fails it in CI).
func requireDocker(t testing.TB) string {
	t.Helper()
	docker := peers.Require(t, "docker")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the Docker Engine does not answer (CI requires it): %v\n%s", err, out)
		}
		t.Skipf("the Docker Engine does not answer: %v\n%s", err, out)
	}
	return docker
}

// runOK runs bin with args through peers.RunWith and fails the test on a
// non-zero exit, showing both output streams. It returns stdout.
func runOK(t testing.TB, opts peers.RunOptions, bin string, args ...string) string {
	t.Helper()
	stdout, stderr, code := peers.RunWith(t, opts, bin, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// freeLoopbackPort returns a 127.0.0.1 port that was free a moment ago.
func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// closedLoopbackAddr returns "127.0.0.1:port" for a port nothing listens on,
// used as a runtime's fallback registry so that a pull cannot bypass the
// mirror under test.
func closedLoopbackAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
}

// shortTempDir makes a directory directly under /tmp, removed by t.Cleanup.
// Unix socket paths are limited to 108 bytes, and daemons put sockets under
// their state and exec roots, so these cannot live under t.TempDir's longer
// paths.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "rce2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// writeFile writes content to path (creating parent directories) and fails
// the test on error.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceAll replaces old with new in s and fails the test when old does not
// occur: the tests rewrite the shipped deploy/ files, and a rewrite that no
// longer applies must not silently test something else.
func replaceAll(t testing.TB, what, s, old, repl string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%s: %q not found in:\n%s", what, old, s)
	}
	return strings.ReplaceAll(s, old, repl)
}

// lockedBuffer collects a daemon's output; safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemon is a long-running program a test started (containerd, dockerd).
type daemon struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
	once sync.Once
}

// startDaemon starts bin with args, its output collected, killed with the
// test binary if that dies (Pdeathsig), stopped by t.Cleanup, and its output
// logged if the test failed.
func startDaemon(t testing.TB, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: filepath.Base(bin), out: &lockedBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", d.name, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("%s %s output:\n%s", d.name, strings.Join(args, " "), tail(d.out.String(), 200))
		}
	})
	return d
}

// stop sends SIGTERM and waits, killing the daemon if it does not exit
// within daemonStopGrace. It is idempotent.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	d.once.Do(func() {
		select {
		case <-d.done:
			return
		default:
		}
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(daemonStopGrace):
			t.Errorf("%s did not exit within %v of SIGTERM; killed", d.name, daemonStopGrace)
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
}

// waitSocket waits until the daemon accepts connections on the unix socket
// at path and ready (if not nil) succeeds.
func (d *daemon) waitSocket(t testing.TB, path string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(daemonReadyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			t.Fatalf("%s exited before it was ready (%v):\n%s", d.name, d.err, tail(d.out.String(), 60))
		default:
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			if ready == nil {
				return
			}
			if last = ready(); last == nil {
				return
			}
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready on %s after %v: %v\n%s", d.name, path, daemonReadyTimeout, last, tail(d.out.String(), 60))
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// containerd is a containerd daemon of the test's own.
type containerd struct {
	// Socket is the daemon's gRPC socket, for ctr --address.
	Socket string
	ctr    string
	d      *daemon
}

// startContainerd runs containerd as root from a temporary root, state
// directory and socket, with the CRI plugin and the snapshotters the tests do
// not use disabled. Images are unpacked with the native snapshotter, which
// works on any filesystem.
func startContainerd(t testing.TB) *containerd {
	t.Helper()
	requireRoot(t)
	bin := peers.Require(t, "containerd")
	ctr := peers.Require(t, "ctr")
	short := shortTempDir(t)
	root := t.TempDir()
	sock := filepath.Join(short, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(root, "root"), filepath.Join(short, "state"), sock, sock+".ttrpc", filepath.Join(root, "opt"))
	cfgPath := filepath.Join(root, "config.toml")
	writeFile(t, cfgPath, cfg)
	c := &containerd{Socket: sock, ctr: ctr}
	c.d = startDaemon(t, bin, "--config", cfgPath, "--log-level", "info")
	c.d.waitSocket(t, sock, func() error {
		out, err := exec.CommandContext(t.Context(), ctr, "--address", sock, "version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr version: %v: %s", err, out)
		}
		return nil
	})
	return c
}

// Stop stops the daemon (also done by t.Cleanup).
func (c *containerd) Stop(t testing.TB) { c.d.stop(t) }

// Ctr runs `ctr --address <socket> --namespace e2e args...` and returns its
// output, failing the test on a non-zero exit.
func (c *containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	return runOK(t, peers.RunOptions{}, c.ctr, append([]string{"--address", c.Socket, "--namespace", "e2e"}, args...)...)
}

// ImageDigest returns the target digest containerd recorded for ref.
func (c *containerd) ImageDigest(t testing.TB, ref string) string {
	t.Helper()
	for _, line := range strings.Split(c.Ctr(t, "images", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	t.Fatalf("containerd has no image %s", ref)
	return ""
}

// Content returns the digests in containerd's content store.
func (c *containerd) Content(t testing.TB) map[string]bool {
	t.Helper()
	have := map[string]bool{}
	for _, d := range strings.Fields(c.Ctr(t, "content", "ls", "--quiet")) {
		have[d] = true
	}
	return have
}

// dockerd is a Docker daemon of the test's own, reached with `docker -H`.
type dockerd struct {
	// Host is the daemon's address for docker -H, "unix://...".
	Host   string
	docker string
	d      *daemon
}

// startDockerd runs a second dockerd, as root, that shares nothing with the
// machine's daemon: its own --data-root, --exec-root, --pidfile and socket,
// no bridge or iptables changes, the vfs storage driver (no mounts of
// layers), the containerd given (so that it neither reuses a system
// containerd nor starts one of its own), its own containerd namespaces, and
// configFile as --config-file instead of /etc/docker/daemon.json.
func startDockerd(t testing.TB, ctrd *containerd, configFile string) *dockerd {
	t.Helper()
	requireRoot(t)
	bin := peers.Require(t, "dockerd")
	docker := peers.Require(t, "docker")
	short := shortTempDir(t)
	dataRoot := t.TempDir()
	sock := filepath.Join(short, "docker.sock")
	d := &dockerd{Host: "unix://" + sock, docker: docker}
	d.d = startDaemon(t, bin,
		"--config-file", configFile,
		"--data-root", dataRoot,
		"--exec-root", filepath.Join(short, "exec"),
		"--pidfile", filepath.Join(short, "docker.pid"),
		"--host", d.Host,
		"--containerd", ctrd.Socket,
		"--containerd-namespace", "e2e-dockerd",
		"--containerd-plugins-namespace", "e2e-dockerd-plugins",
		"--storage-driver", "vfs",
		"--bridge", "none",
		"--iptables=false",
		"--ip6tables=false",
		"--ip-masq=false",
		"--userland-proxy=false",
		"--log-level", "info",
	)
	// dockerd makes its data root a private bind mount of itself and
	// unmounts it on a clean exit; after a kill the mount would stay and
	// t.TempDir could not remove the directory. This cleanup runs before
	// TempDir's (cleanups run last-registered first) and after the stop
	// registered by startDaemon.
	t.Cleanup(func() { _ = syscall.Unmount(dataRoot, syscall.MNT_DETACH) })
	t.Cleanup(func() { d.d.stop(t) })
	d.d.waitSocket(t, sock, func() error {
		out, err := exec.CommandContext(t.Context(), docker, "-H", d.Host, "version", "--format", "{{.Server.Version}}").CombinedOutput()
		if err != nil {
			return fmt.Errorf("docker version: %v: %s", err, out)
		}
		return nil
	})
	return d
}

// Docker runs the docker client against this daemon.
func (d *dockerd) Docker(t testing.TB, args ...string) string {
	t.Helper()
	return runOK(t, peers.RunOptions{}, d.docker, append([]string{"-H", d.Host}, args...)...)
}

// dockerImage is what `docker image inspect` reports about an image.
type dockerImage struct {
	ID           string   `json:"Id"`
	RepoTags     []string `json:"RepoTags"`
	RepoDigests  []string `json:"RepoDigests"`
	Architecture string   `json:"Architecture"`
	Config       struct {
		User         string              `json:"User"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Volumes      map[string]struct{} `json:"Volumes"`
	} `json:"Config"`
}

// inspectImage runs `docker [args...] image inspect ref` with the docker
// client; pre holds global flags such as -H.
func inspectImage(t testing.TB, docker string, pre []string, ref string) dockerImage {
	t.Helper()
	out := runOK(t, peers.RunOptions{}, docker, append(pre, "image", "inspect", ref)...)
	var imgs []dockerImage
	if err := json.Unmarshal([]byte(out), &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("docker image inspect %s: %v\n%s", ref, err, out)
	}
	return imgs[0]
}

// checkDockerImage asserts that Docker stored ref with the image ID (config
// digest) and a RepoDigests entry with the manifest (or index) digest that
// the upstream has.
func checkDockerImage(t testing.TB, img dockerImage, ref, configDigest, manifestDigest string) {
	t.Helper()
	if img.ID != configDigest {
		t.Errorf("docker image %s: Id %s, want the upstream config digest %s", ref, img.ID, configDigest)
	}
	found := false
	for _, rd := range img.RepoDigests {
		found = found || strings.HasSuffix(rd, "@"+manifestDigest)
	}
	if !found {
		t.Errorf("docker image %s: RepoDigests %v, want one ending in @%s", ref, img.RepoDigests, manifestDigest)
	}
}

// removeDockerImages registers a cleanup that removes refs from the machine's
// Docker Engine, together with untagged images left in their repositories
// (a pull that moved a tag leaves the previous image with only a digest).
// Refs already gone are ignored.
func removeDockerImages(t testing.TB, docker string, refs ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		targets := slices.Clone(refs)
		for _, ref := range refs {
			repo := ref
			if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
				repo = ref[:i]
			}
			out, err := exec.CommandContext(ctx, docker, "image", "ls", "--quiet", "--no-trunc", "--filter", "reference="+repo+"@*").Output()
			if err != nil {
				t.Logf("docker image ls %s@*: %v", repo, err)
			}
			targets = append(targets, strings.Fields(string(out))...)
		}
		slices.Sort(targets)
		args := append([]string{"image", "rm", "--force"}, slices.Compact(targets)...)
		if out, err := exec.CommandContext(ctx, docker, args...).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "No such image") {
			t.Logf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
}

// waitHTTP polls url until it answers 200 or timeout passes.
func waitHTTP(t testing.TB, url string, timeout time.Duration, alive func() error) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		last = err
		if alive != nil {
			if err := alive(); err != nil {
				t.Fatalf("waiting for %s: %v", url, err)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %v: %v", url, timeout, last)
}

// checkSameImage asserts that ref, pulled through regcache with
// go-containerregistry, has the upstream's manifest digest and that every
// blob read through regcache hashes to its digest (the reader verifies).
func checkSameImage(t testing.TB, upstreamRef, ref string) {
	t.Helper()
	get := func(r string) *remote.Descriptor {
		t.Helper()
		nr, err := name.ParseReference(r, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(nr, remote.WithContext(t.Context()))
		if err != nil {
			t.Fatalf("get %s: %v", r, err)
		}
		return desc
	}
	want, got := get(upstreamRef), get(ref)
	if got.Digest != want.Digest || !bytes.Equal(got.Manifest, want.Manifest) {
		t.Fatalf("%s: digest %s, want the upstream's %s (%s)", ref, got.Digest, want.Digest, upstreamRef)
	}
	img, err := got.Image()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: read layer through regcache: %v", ref, err)
		}
	}
	if _, err := img.RawConfigFile(); err != nil {
		t.Fatalf("%s: config: %v", ref, err)
	}
}

// request selects lines of regcache's access log (text format); empty
// fields match anything, Agent matches a prefix of the user agent.
type request struct {
	Path, Query, Status, Agent string
}

// logged reports whether regcache's output logs has an access log line
// ("msg=request") matching want.
func logged(logs string, want request) bool {
	for _, line := range strings.Split(logs, "\n") {
		kv := logFields(line)
		if kv["msg"] != "request" {
			continue
		}
		if (want.Path == "" || kv["path"] == want.Path) &&
			(want.Query == "" || kv["query"] == want.Query) &&
			(want.Status == "" || kv["status"] == want.Status) &&
			strings.HasPrefix(kv["userAgent"], want.Agent) {
			return true
		}
	}
	return false
}

// logFields parses one log/slog text line (key=value pairs, values quoted
// with Go syntax when they need it).
func logFields(line string) map[string]string {
	kv := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		key, rest, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsRune(key, ' ') {
			return kv
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(rest) {
				return kv
			}
			v, err := strconv.Unquote(rest[:end+1])
			if err != nil {
				return kv
			}
			val, line = v, rest[end+1:]
		} else {
			val, line, _ = strings.Cut(rest, " ")
		}
		kv[key] = val
	}
	return kv
}

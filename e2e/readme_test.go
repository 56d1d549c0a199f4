package e2e

// Tests that keep README.md true. Its commands run as a reader runs them,
// in a copy of the checkout (the files git tracks or would track, as they
// are now), so that nothing a README command does can reach the reader's
// own checkout, build output or data. The other changes keep a test off
// the reader's machine: ports 5000 and 5001 become free loopback ports (a
// command still naming them after that fails the test before it runs),
// programs the README installs go to a temporary GOBIN, and the reader's
// REGCACHE_* settings are dropped. The output the README shows is compared
// with what the commands print.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
)

// readmeCommandTimeout bounds one README command; a cold build of regcache
// or crane on two cores takes about a minute.
const readmeCommandTimeout = 5 * time.Minute

var (
	// readmePortRE finds the README's ports after a loopback host.
	readmePortRE = regexp.MustCompile(`\b(127\.0\.0\.1|localhost):(5000|5001)\b`)
	// readerPortRE finds any mention of the README's ports.
	readerPortRE = regexp.MustCompile(`\b500[01]\b`)
	// listenFlagRE finds the address a server command listens on.
	listenFlagRE = regexp.MustCompile(`--(?:listen|address)[ =](\S+)`)
	// shellCommentRE finds a trailing shell comment.
	shellCommentRE = regexp.MustCompile(`\s+#.*$`)
)

// mdBlock is a fenced code block of README.md.
type mdBlock struct {
	lang  string   // the info string: "sh", or "" for output
	lines []string // without the fences and the list item's indentation
	line  int      // line number of the opening fence
}

// readmeSection returns the fenced blocks of README.md under the heading
// (e.g. "## Five-minute walkthrough") up to the next heading of the same or
// a higher level; "" is the introduction before the first "## " heading.
func readmeSection(t testing.TB, heading string) []mdBlock {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	start, level := 0, 2
	if heading != "" {
		start = slices.Index(lines, heading)
		if start < 0 {
			t.Fatalf("README.md has no heading %q", heading)
		}
		level = len(heading) - len(strings.TrimLeft(heading, "#"))
		start++
	}
	var blocks []mdBlock
	var cur *mdBlock
	indent := 0
	for i := start; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		if cur == nil && strings.HasPrefix(line, "#") {
			l := len(line) - len(strings.TrimLeft(line, "#"))
			if l <= level && (heading != "" || l == 2) { // the introduction follows the "# " title
				break
			}
		}
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			indent = len(line) - len(strings.TrimLeft(line, " "))
			cur = &mdBlock{lang: strings.TrimPrefix(trimmed, "```"), line: i + 1}
		case cur != nil && trimmed == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line[min(indent, len(line)-len(strings.TrimLeft(line, " "))):])
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("README.md section %q has no code blocks", heading)
	}
	return blocks
}

// copyCheckout copies the checkout's files (tracked, or untracked and not
// ignored, as `git ls-files` lists them; without git, everything but .git,
// bin and regcache-data) to a temporary directory and returns it.
func copyCheckout(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	var files []string
	if out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output(); err == nil {
		files = strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	} else {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			if d.IsDir() && (rel == ".git" || rel == "bin" || rel == "regcache-data") {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() {
				files = append(files, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "checkout")
	for _, f := range files {
		src := filepath.Join(root, f)
		fi, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted, not yet staged
		}
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		raw, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dst, f), string(raw))
		if err := os.Chmod(filepath.Join(dst, f), fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// readmeCommands returns the commands of a sh block: one per line, lines
// ending in a backslash joined, blank and comment lines dropped.
func readmeCommands(b mdBlock) []string {
	var cmds []string
	cur := ""
	for _, l := range b.lines {
		if s := strings.TrimSpace(l); cur == "" && (s == "" || strings.HasPrefix(s, "#")) {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			cur += strings.TrimSuffix(l, `\`) + " "
			continue
		}
		cmds = append(cmds, strings.TrimSpace(cur+l))
		cur = ""
	}
	return cmds
}

// readmePorts are the free loopback addresses standing for the README's
// 127.0.0.1:5000 (regcache) and 127.0.0.1:5001 (the upstream).
type readmePorts struct {
	regcache, upstream string
}

func newReadmePorts(t testing.TB) readmePorts {
	t.Helper()
	p := readmePorts{regcache: closedLoopbackAddr(t), upstream: closedLoopbackAddr(t)}
	for p.upstream == p.regcache {
		p.upstream = closedLoopbackAddr(t)
	}
	return p
}

func (p readmePorts) port(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// rewrite moves the README's ports in a command to the test's, and fails
// the test if the command still names 5000 or 5001 in any other way.
func (p readmePorts) rewrite(t testing.TB, cmd string) string {
	t.Helper()
	out := readmePortRE.ReplaceAllStringFunc(cmd, func(m string) string {
		host, port, _ := net.SplitHostPort(m)
		if port == "5000" {
			return net.JoinHostPort(host, p.port(p.regcache))
		}
		return net.JoinHostPort(host, p.port(p.upstream))
	})
	if readerPortRE.MatchString(out) {
		t.Fatalf("README command %q names port 5000 or 5001 in a way the test cannot move to a free port; it never runs a command on the reader's ports", cmd)
	}
	return out
}

// restore maps the test's ports in output back to the README's.
func (p readmePorts) restore(s string) string {
	s = strings.ReplaceAll(s, ":"+p.port(p.regcache), ":5000")
	return strings.ReplaceAll(s, ":"+p.port(p.upstream), ":5001")
}

// readerEnv is the environment of README commands: the test's, without
// REGCACHE_* variables, plus extra (later entries win).
func readerEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		// Nor does the reader's shell run inside make (make test would
		// hand MAKELEVEL and MAKEFLAGS down, and a nested make prints
		// "Entering directory" first).
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "REGCACHE_") && k != "MAKELEVEL" && k != "MAKEFLAGS" && k != "MFLAGS" {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// readmeProcess is a README command started in the background with
// `bash -c`, in a process group of its own so that the test can kill
// whatever it leaves behind. bash runs a single command by exec, so the
// process's PID is the command's, as for a reader who started it.
type readmeProcess struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // the result of Wait, once done is closed
}

func startReadmeProcess(t testing.TB, bash, dir string, env []string, command string) *readmeProcess {
	t.Helper()
	p := &readmeProcess{out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bash, "-c", command)
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", command, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// The whole group: a child that outlived the command, too.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%q output:\n%s", command, tail(p.out.String(), 60))
		}
	})
	return p
}

// waitReady waits until url answers 200, failing the test if the process
// exits first.
func (p *readmeProcess) waitReady(t testing.TB, url string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(readmeCommandTimeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%q exited (%v) before %s answered:\n%s", p.cmd.Args[2], p.err, url, tail(p.out.String(), 40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within %v: %v", url, readmeCommandTimeout, err)
		}
	}
}

// stop sends SIGTERM to the command's PID, as `kill PID` does, and requires
// a clean exit (status 0) within 30 s.
func (p *readmeProcess) stop(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("kill %d: %v", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%q (pid %d) did not exit within 30 s of SIGTERM", p.cmd.Args[2], p.cmd.Process.Pid)
	}
	if p.err != nil {
		t.Errorf("%q did not shut down cleanly on SIGTERM: %v", p.cmd.Args[2], p.err)
	}
}

// runReadmeCommand runs command with `bash -c` to completion and returns
// its combined output and exit status.
func runReadmeCommand(t testing.TB, bash, dir string, env []string, command string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), readmeCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "-c", command)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exitErr) && exitErr.Exited():
		return string(out), exitErr.ExitCode()
	}
	t.Fatalf("%q: %v\n%s", command, err, out)
	return "", -1
}

// waitClosed waits until nothing accepts connections on addr.
func waitClosed(t testing.TB, addr string, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReadmeRun runs the README's first commands (build, then serve) as
// written, in a copy of the checkout, and stops the server as a person
// would: by its PID. The first command must say, before it compiles for a
// minute, that it does; the server must shut down cleanly and let go of its
// port and data directory (a second start works); a second server on the
// same data directory is refused with a message naming the first one's PID.
func TestReadmeRun(t *testing.T) {
	t.Parallel()
	bash := peers.Require(t, "bash")
	blocks := readmeSection(t, "")
	i := slices.IndexFunc(blocks, func(b mdBlock) bool { return b.lang == "sh" })
	if i < 0 {
		t.Fatal("README.md's introduction has no sh block")
	}
	cmds := readmeCommands(blocks[i])
	if len(cmds) == 0 {
		t.Fatalf("README.md:%d: the block has no command", blocks[i].line)
	}
	dir := copyCheckout(t)
	ports := newReadmePorts(t)
	// The server's default address, :5000, moved.
	env := readerEnv("REGCACHE_LISTEN=" + ports.regcache)

	var firstOutput string
	for i, c := range cmds[:len(cmds)-1] {
		output, status := runReadmeCommand(t, bash, dir, env, ports.rewrite(t, c))
		if status != 0 {
			t.Fatalf("README command %q: exit status %d\n%s", c, status, output)
		}
		if i == 0 {
			firstOutput = output
		}
	}
	serveCmd := ports.rewrite(t, cmds[len(cmds)-1])
	server := startReadmeProcess(t, bash, dir, env, serveCmd)
	server.waitReady(t, "http://"+ports.regcache+"/readyz")
	if len(cmds) == 1 {
		firstOutput = server.out.String()
	}
	if first, _, _ := strings.Cut(strings.TrimSpace(firstOutput), "\n"); !strings.Contains(first, "minute") {
		t.Errorf("README command %q compiles regcache (about a minute the first time) without saying so first; its first line of output is %q", cmds[0], first)
	}

	// A second server on the same data directory is refused, naming the
	// first by the PID the reader knows.
	output, status := runReadmeCommand(t, bash, dir, env, serveCmd+" --listen "+closedLoopbackAddr(t))
	want := fmt.Sprintf("locked by regcache (pid %d); stop it or use another --data-dir", server.cmd.Process.Pid)
	if status != 1 || !strings.Contains(output, want) {
		t.Errorf("a second %q on the same data directory: exit status %d, want 1 and %q:\n%s", serveCmd, status, want, output)
	}

	server.stop(t)
	if !waitClosed(t, ports.regcache, 10*time.Second) {
		t.Fatalf("%s still accepts connections after the README's server (pid %d) was stopped by its PID: a process it started outlived it", ports.regcache, server.cmd.Process.Pid)
	}
	// The port and the data directory are free again.
	again := startReadmeProcess(t, bash, dir, env, serveCmd)
	again.waitReady(t, "http://"+ports.regcache+"/readyz")
	again.stop(t)
}

// readmeShell is one bash session into which the walkthrough's commands are
// typed one by one, as a reader types them: cd and background jobs carry
// over from one command to the next.
type readmeShell struct {
	cmd    *exec.Cmd
	stdin  interface{ Write([]byte) (int, error) }
	lines  chan string
	stderr *lockedBuffer
	steps  int
}

// lineWriter sends every complete line written to it on lines.
type lineWriter struct {
	mu      sync.Mutex
	partial []byte
	lines   chan<- string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := slices.Index(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
}

func startReadmeShell(t testing.TB, bash, dir string, env []string) *readmeShell {
	t.Helper()
	lines := make(chan string, 4096)
	s := &readmeShell{lines: lines, stderr: &lockedBuffer{}}
	s.cmd = exec.Command(bash, "--noprofile", "--norc")
	s.cmd.Dir, s.cmd.Env = dir, env
	s.cmd.Stdout, s.cmd.Stderr = &lineWriter{lines: lines}, s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.cmd.WaitDelay = 5 * time.Second
	stdin, err := s.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.stdin = stdin
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		s.cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		// Background jobs the walkthrough left running, too.
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("walkthrough shell's standard error:\n%s", tail(s.stderr.String(), 100))
		}
	})
	return s
}

// run types command and returns what it printed on standard output and its
// exit status.
func (s *readmeShell) run(t testing.TB, command string) (string, int) {
	t.Helper()
	s.steps++
	marker := fmt.Sprintf("@@readme-step-%d ", s.steps)
	// The marker starts on a line of its own even if the output did not
	// end with a newline.
	if _, err := fmt.Fprintf(s.stdin, "%s\nprintf '\\n%s%%d\\n' $?\n", command, marker); err != nil {
		t.Fatalf("type %q: %v", command, err)
	}
	var out []string
	timeout := time.NewTimer(readmeCommandTimeout)
	defer timeout.Stop()
	for {
		select {
		case line := <-s.lines:
			rest, ok := strings.CutPrefix(line, marker)
			if !ok {
				out = append(out, line)
				continue
			}
			status, err := strconv.Atoi(rest)
			if err != nil {
				t.Fatalf("bad step marker %q", line)
			}
			if len(out) > 0 && out[len(out)-1] == "" {
				out = out[:len(out)-1]
			}
			return strings.Join(out, "\n"), status
		case <-timeout.C:
			t.Fatalf("%q did not finish within %v; output so far:\n%s\nstderr:\n%s", command, readmeCommandTimeout, strings.Join(out, "\n"), tail(s.stderr.String(), 40))
		}
	}
}

// readmeStep is a walkthrough command and, when the README shows it, its
// output.
type readmeStep struct {
	command string
	line    int      // of the command's block
	want    *mdBlock // the output block that follows the command's block
}

// readmeSteps pairs each output block (one without a language) with the
// last command of the sh block before it.
func readmeSteps(blocks []mdBlock) []readmeStep {
	var steps []readmeStep
	for i, b := range blocks {
		switch b.lang {
		case "sh":
			for _, c := range readmeCommands(b) {
				steps = append(steps, readmeStep{command: c, line: b.line})
			}
		case "", "text":
			if i > 0 && blocks[i-1].lang == "sh" && len(steps) > 0 {
				steps[len(steps)-1].want = &blocks[i]
			}
		}
	}
	return steps
}

// trimLines drops trailing spaces of each line and trailing empty lines.
func trimLines(lines []string) []string {
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		out = append(out, strings.TrimRight(l, " \t"))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// checkoutFiles lists the paths under root, .git excluded.
func checkoutFiles(t testing.TB, root string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		files[rel] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestReadmeWalkthrough types the README's five-minute walkthrough into one
// shell session, from a copy of the checkout, and checks that every command succeeds,
// that the tables it shows are what the commands print, that it stops every
// server it started, and that it leaves no file in the checkout.
func TestReadmeWalkthrough(t *testing.T) {
	t.Parallel()
	bash := peers.Require(t, "bash")
	for _, p := range []string{"go", "tar", "skopeo"} {
		peers.Require(t, p)
	}
	steps := readmeSteps(readmeSection(t, "## Five-minute walkthrough"))
	root := copyCheckout(t)
	tmp := t.TempDir()
	ports := newReadmePorts(t)
	gobin, tmpdir := filepath.Join(tmp, "gobin"), filepath.Join(tmp, "tmp")
	for _, d := range []string{gobin, tmpdir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := readerEnv(
		"GOBIN="+gobin, "PATH="+gobin+string(os.PathListSeparator)+os.Getenv("PATH"), // go install puts crane and regcache here
		"TMPDIR="+tmpdir, // mktemp -d
		// The CLI's and the server's default address, :5000, moved.
		"REGCACHE_SERVER=http://"+ports.regcache, "REGCACHE_LISTEN="+ports.regcache,
	)
	before := checkoutFiles(t, root)
	sh := startReadmeShell(t, bash, root, env)
	compared := 0
	for _, s := range steps {
		command := ports.rewrite(t, s.command)
		output, status := sh.run(t, command)
		if status != 0 {
			t.Fatalf("README.md:%d: %q: exit status %d\noutput:\n%s\nstderr:\n%s", s.line, s.command, status, output, tail(sh.stderr.String(), 40))
		}
		if strings.HasSuffix(shellCommentRE.ReplaceAllString(command, ""), "&") {
			addr := ports.regcache
			if m := listenFlagRE.FindStringSubmatch(command); m != nil {
				addr = m[1]
			}
			waitListening(t, addr, sh)
		}
		if s.want == nil {
			continue
		}
		compared++
		got, want := trimLines(strings.Split(ports.restore(output), "\n")), trimLines(s.want.lines)
		if !slices.Equal(got, want) {
			t.Errorf("README.md:%d shows what %q prints as\n%s\nbut it prints\n%s", s.want.line, s.command, strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
	}
	if compared == 0 {
		t.Error("the walkthrough shows no output to compare")
	}
	for _, addr := range []string{ports.upstream, ports.regcache} {
		if !waitClosed(t, addr, 30*time.Second) {
			t.Errorf("the walkthrough ends with a server still running on %s (the README's port %s)", addr, ports.restore(addr))
		}
	}
	after := checkoutFiles(t, root)
	var left []string
	for f := range after {
		if !before[f] {
			left = append(left, f)
		}
	}
	slices.Sort(left)
	if len(left) > 0 {
		t.Errorf("the walkthrough left files in the checkout: %q", left)
	}
}

// waitListening waits until a server accepts connections on addr.
func waitListening(t testing.TB, addr string, sh *readmeShell) {
	t.Helper()
	deadline := time.Now().Add(readmeCommandTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s %v after the command that should start it:\n%s", addr, readmeCommandTimeout, tail(sh.stderr.String(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCIScriptReferences: the documents the CI scripts and the Makefile
// point readers to exist in the repository.
func TestCIScriptReferences(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	mdRE := regexp.MustCompile(`[A-Za-z0-9_./-]+\.md\b`)
	for _, f := range []string{".ci/install-peers", ".ci/run", "Makefile"} {
		raw, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(raw), "\n") {
			for _, doc := range mdRE.FindAllString(line, -1) {
				if _, err := os.Stat(filepath.Join(root, doc)); err != nil {
					t.Errorf("%s:%d points to %s, which is not in the repository", f, i+1, doc)
				}
			}
		}
	}
}

// TestReadmeNoSudo: the parts of README.md a reader follows as themselves
// (running regcache, the walkthrough, building and running the image) do
// not assume sudo: the reader may be root, or may have no sudo at all.
func TestReadmeNoSudo(t *testing.T) {
	t.Parallel()
	sudoRE := regexp.MustCompile(`(^|[|;&(]\s*)sudo\b`)
	for _, heading := range []string{"", "## Five-minute walkthrough", "### 1. Build the image"} {
		for _, b := range readmeSection(t, heading) {
			if b.lang != "sh" {
				continue
			}
			for _, c := range readmeCommands(b) {
				if sudoRE.MatchString(c) {
					t.Errorf("README.md:%d (section %q): %q uses sudo", b.line, heading, c)
				}
			}
		}
	}
}

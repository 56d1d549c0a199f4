package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// verdict is the outcome of one mutation.
type verdict string

const (
	caught   verdict = "CAUGHT"
	missed   verdict = "MISSED"
	notFound verdict = "NOT FOUND" // the original text is gone or ambiguous
	broken   verdict = "BROKEN"    // the mutated source does not compile
	skipped  verdict = "SKIPPED"   // the tests skipped (a missing peer, not root)
	failure  verdict = "ERROR"     // the check itself could not run
)

type result struct {
	verdict verdict
	detail  string
	output  string // go test's output, shown when something went wrong
	took    time.Duration
}

// runner runs go test for the baseline and for each mutation.
type runner struct {
	goBin   string
	work    string // temporary directory: overlays and each run's TMPDIR
	count   int
	verbose bool
	out     io.Writer
	runs    int // go test runs so far, naming their temporary directories
}

// baseline runs every distinct set of tests once without mutation; they
// must pass, and must run at least one test.
func (r *runner) baseline(ctx context.Context, muts []mutation) bool {
	type key struct{ pkg, run string }
	seen := map[key]bool{}
	ok := true
	for _, m := range muts {
		k := key{m.Package, m.Run}
		if seen[k] {
			continue
		}
		seen[k] = true
		start := time.Now()
		tr := r.goTest(ctx, m.Package, m.Run, m.Timeout, 1, "")
		if ctx.Err() != nil {
			return false
		}
		took := time.Since(start).Round(100 * time.Millisecond)
		switch {
		case tr.err != nil:
			fmt.Fprintf(r.out, "BASELINE ERROR   %s -run '%s': %v\n", m.Package, m.Run, tr.err)
			ok = false
		case tr.exit != 0:
			fmt.Fprintf(r.out, "BASELINE FAILED  %s -run '%s' fails without any mutation (%s):\n%s\n", m.Package, m.Run, took, indent(tr.output))
			ok = false
		case len(tr.skipped) > 0:
			fmt.Fprintf(r.out, "BASELINE SKIPPED %s -run '%s': the tests skip here, so they cannot catch anything (they need root and the test peers: make peers):\n%s\n", m.Package, m.Run, indent(tr.output))
			ok = false
		case len(tr.runs) == 0:
			fmt.Fprintf(r.out, "BASELINE EMPTY   %s -run '%s' matches no test (mutation %s)\n", m.Package, m.Run, m.Name)
			ok = false
		default:
			if r.verbose {
				fmt.Fprintf(r.out, "%s\n", indent(tr.output))
			}
			fmt.Fprintf(r.out, "baseline ok      %s -run '%s' (%s)\n", m.Package, m.Run, took)
		}
	}
	return ok
}

// mutation applies m as an overlay and runs its tests.
func (r *runner) mutation(ctx context.Context, m mutation) result {
	start := time.Now()
	res := r.try(ctx, m)
	res.took = time.Since(start)
	return res
}

func (r *runner) try(ctx context.Context, m mutation) result {
	src, err := os.ReadFile(filepath.FromSlash(m.File))
	if err != nil {
		return result{verdict: notFound, detail: err.Error()}
	}
	mutated, err := m.apply(string(src))
	if err != nil {
		return result{verdict: notFound, detail: err.Error()}
	}
	overlay, err := r.writeOverlay(m, mutated)
	if err != nil {
		return result{verdict: failure, detail: err.Error()}
	}
	tr := r.goTest(ctx, m.Package, m.Run, m.Timeout, r.count, overlay)
	if r.verbose {
		fmt.Fprintf(r.out, "%s\n", indent(tr.output))
	}
	switch {
	case tr.err != nil:
		return result{verdict: failure, detail: tr.err.Error(), output: tr.output}
	case tr.buildFailed:
		return result{verdict: broken, detail: "the mutated source does not compile", output: tr.output}
	case len(tr.failed) > 0:
		return result{verdict: caught, detail: tr.summary()}
	case tr.exit != 0:
		return result{verdict: caught, detail: "the package failed (panic, timeout or TestMain): " + tr.summary()}
	case len(tr.skipped) > 0:
		return result{verdict: skipped, detail: "the tests skipped: " + tr.summary(), output: tr.output}
	default:
		return result{verdict: missed, detail: tr.summary(), output: tr.output}
	}
}

// writeOverlay writes the mutated file and the go command's overlay
// description naming it, and returns the description's path.
func (r *runner) writeOverlay(m mutation, mutated string) (string, error) {
	abs, err := absPath(m.File)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(r.work, "overlay-")
	if err != nil {
		return "", err
	}
	file := filepath.Join(dir, filepath.Base(abs))
	if err := os.WriteFile(file, []byte(mutated), 0o644); err != nil {
		return "", err
	}
	desc, err := json.Marshal(map[string]map[string]string{"Replace": {abs: file}})
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "overlay.json")
	return path, os.WriteFile(path, desc, 0o644)
}

// testRun is what one go test -json run reported.
type testRun struct {
	exit        int
	err         error          // go test could not be run at all
	runs        map[string]int // top-level test -> runs finished
	failed      map[string]int // top-level test -> runs failed
	skipped     map[string]int // top-level test -> runs skipped
	buildFailed bool
	output      string
}

// summary lists each top-level test with its failed runs, e.g.
// "TestA 30/30 failed, TestB 0/30 failed".
func (t testRun) summary() string {
	names := make([]string, 0, len(t.runs))
	for n := range t.runs {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d/%d failed", n, t.failed[n], t.runs[n]))
	}
	if len(parts) == 0 {
		return "no test finished"
	}
	return strings.Join(parts, ", ")
}

// event is one line of go test -json.
type event struct {
	Action string
	Test   string
	Output string
}

// goTest runs the tests of pkg matching pattern, count times, with the
// overlay (when not "") in GOFLAGS so that nested go builds see it too, and
// a TMPDIR of their own, removed afterwards.
func (r *runner) goTest(ctx context.Context, pkg, pattern string, timeout time.Duration, count int, overlay string) testRun {
	r.runs++
	tmp := filepath.Join(r.work, fmt.Sprintf("tmp-%d", r.runs))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return testRun{err: err}
	}
	defer os.RemoveAll(tmp)
	total := timeout * time.Duration(count)
	// The hard limit leaves room to compile and to report a test timeout.
	ctx, cancel := context.WithTimeout(ctx, total+2*time.Minute)
	defer cancel()
	args := []string{"test", "-json", "-count", fmt.Sprint(count), "-timeout", total.String(), "-run", pattern, pkg}
	cmd := exec.CommandContext(ctx, r.goBin, args...)
	env := append(os.Environ(), "TMPDIR="+tmp)
	if overlay != "" {
		env = append(env, "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -overlay="+overlay))
	}
	cmd.Env = env
	ownProcessGroup(cmd)
	cmd.WaitDelay = 10 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return testRun{err: err}
	}
	if err := cmd.Start(); err != nil {
		return testRun{err: fmt.Errorf("%s %s: %w", r.goBin, strings.Join(args, " "), err)}
	}
	tr := testRun{runs: map[string]int{}, failed: map[string]int{}, skipped: map[string]int{}}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var ev event
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			out.WriteString(sc.Text() + "\n")
			continue
		}
		out.WriteString(ev.Output)
		if ev.Action == "build-fail" || strings.Contains(ev.Output, "[build failed]") || strings.Contains(ev.Output, "[setup failed]") {
			tr.buildFailed = true
		}
		if ev.Test == "" || strings.Contains(ev.Test, "/") {
			continue
		}
		switch ev.Action {
		case "pass":
			tr.runs[ev.Test]++
		case "fail":
			tr.runs[ev.Test]++
			tr.failed[ev.Test]++
		case "skip":
			tr.skipped[ev.Test]++
		}
	}
	err = cmd.Wait()
	out.WriteString(stderr.String())
	if strings.Contains(stderr.String(), "[build failed]") || strings.Contains(stderr.String(), "[setup failed]") {
		tr.buildFailed = true
	}
	tr.output = out.String()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && ctx.Err() == nil:
		tr.exit = exitErr.ExitCode()
	default:
		tr.err = fmt.Errorf("%s %s: %w", r.goBin, strings.Join(args, " "), err)
	}
	return tr
}

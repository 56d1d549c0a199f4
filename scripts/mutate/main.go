// Command mutate checks that the tests keep their promises: it applies each
// mutation of a committed list (a small change that breaks one promise of
// the code) one at a time, runs the tests that must catch it, and prints
// CAUGHT or MISSED per mutation. It exits non-zero when any mutation is
// missed, no longer applies (its original text is NOT FOUND: a refactor
// must update the list, not silently disable the check), does not compile,
// or when the tests fail without any mutation.
//
// The checkout is never modified: each mutated file is handed to the go
// command as a build overlay (GOFLAGS=-overlay=..., which also reaches the
// go build that end-to-end tests run), so an interrupt, a crash or an edit
// made meanwhile cannot leave a mutation behind.
//
// Usage, from the repository root (make mutate):
//
//	go run ./scripts/mutate [-list scripts/mutations.txt] [-only a,b] [-count N] [-v]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command-line settings of one check.
type options struct {
	list    string
	only    []string
	count   int
	verbose bool
	goBin   string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mutate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var only string
	fs.StringVar(&o.list, "list", "scripts/mutations.txt", "the mutation list, relative to the repository root (the current directory)")
	fs.StringVar(&only, "only", "", "comma-separated names of the mutations to check (default: all)")
	fs.IntVar(&o.count, "count", 1, "go test -count: how many times each mutation's tests run; the per-test failure counts show how reliably they catch it")
	fs.BoolVar(&o.verbose, "v", false, "print go test's output of every run (by default only of runs that went wrong)")
	fs.StringVar(&o.goBin, "go", "go", "the go command")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./scripts/mutate [flags]\n\n"+
			"Applies each mutation of the list alone (as a build overlay; the checkout\n"+
			"is never modified), runs the tests that must catch it and prints CAUGHT\n"+
			"or MISSED. Exits 1 when a mutation is missed, NOT FOUND in its file,\n"+
			"does not compile, or when its tests fail without it.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mutate: unexpected arguments %q (see -h)\n", fs.Args())
		return 2
	}
	if o.count < 1 {
		fmt.Fprintf(stderr, "mutate: -count %d: want 1 or more\n", o.count)
		return 2
	}
	if only != "" {
		o.only = strings.Split(only, ",")
	}
	if _, err := os.Stat("go.mod"); err != nil {
		fmt.Fprintln(stderr, "mutate: run from the repository root (no go.mod here)")
		return 2
	}
	ok, err := check(ctx, o, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "mutate: %v\n", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

// check runs every selected mutation and reports whether all were caught.
func check(ctx context.Context, o options, stdout io.Writer) (bool, error) {
	f, err := os.Open(o.list)
	if err != nil {
		return false, err
	}
	all, err := parseList(f)
	f.Close()
	if err != nil {
		return false, fmt.Errorf("%s: %w", o.list, err)
	}
	muts := all
	if len(o.only) > 0 {
		muts = nil
		for _, name := range o.only {
			i := slices.IndexFunc(all, func(m mutation) bool { return m.Name == name })
			if i < 0 {
				return false, fmt.Errorf("-only: no mutation %q in %s", name, o.list)
			}
			muts = append(muts, all[i])
		}
	}
	work, err := os.MkdirTemp("", "regcache-mutate-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(work)
	r := &runner{goBin: o.goBin, work: work, count: o.count, verbose: o.verbose, out: stdout}

	start := time.Now()
	fmt.Fprintf(stdout, "mutate: %d mutations from %s, each test run %d time(s)\n", len(muts), o.list, o.count)
	// The tests must pass without any mutation, or a failure proves nothing.
	if !r.baseline(ctx, muts) {
		if ctx.Err() != nil {
			return false, errors.New("interrupted during the baseline (the checkout was not modified)")
		}
		fmt.Fprintln(stdout, "mutate: the tests above fail, skip or match nothing without any mutation: fix that first")
		return false, nil
	}
	width := 0
	for _, m := range muts {
		width = max(width, len(m.Name))
	}
	failed := 0
	for _, m := range muts {
		res := r.mutation(ctx, m)
		if ctx.Err() != nil {
			return false, fmt.Errorf("interrupted during %s (the checkout was not modified)", m.Name)
		}
		if res.verdict != caught {
			failed++
		}
		fmt.Fprintf(stdout, "%-9s  %-*s  %6s  %s\n", res.verdict, width, m.Name, res.took.Round(100*time.Millisecond), res.detail)
		if res.verdict != caught {
			fmt.Fprintf(stdout, "    promise: %s\n    file: %s; tests: go test %s -run '%s'\n", m.Promise, m.File, m.Package, m.Run)
			if res.output != "" {
				fmt.Fprintf(stdout, "%s\n", indent(res.output))
			}
		}
	}
	fmt.Fprintf(stdout, "mutate: %d of %d caught, %d not, in %s\n", len(muts)-failed, len(muts), failed, time.Since(start).Round(time.Second))
	return failed == 0, nil
}

// absPath resolves a list path against the repository root (the current
// directory), as the go command's overlay wants absolute paths.
func absPath(p string) (string, error) {
	return filepath.Abs(filepath.FromSlash(p))
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	const keep = 60
	if len(lines) > keep {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-keep)}, lines[len(lines)-keep:]...)
	}
	return "    | " + strings.Join(lines, "\n    | ")
}

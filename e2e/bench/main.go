// Command bench measures regcache against distribution's proxy mode, a direct
// pull from the upstream, and a plain static file server, all on loopback in
// one run:
//
//	go run ./e2e/bench                 # default sizes, prints a table, writes JSON
//	go run ./e2e/bench --write-md      # also updates BENCHMARKS.md
//	go run ./e2e/bench --layers 2 --layer-size 1MiB --clients 4 --big-blob-size 8MiB   # smoke run
//
// It builds and starts, as child processes: an upstream registry
// (go-containerregistry's pkg/registry with a counting layer, e2e/bench/upstream),
// regcache (cmd/regcache), distribution/v3 in proxy mode (e2e/bench/distproxy)
// and a static file server (e2e/bench/static). An image of --layers random
// layers of --layer-size bytes and a one-layer image of --big-blob-size bytes
// are put in the upstream once. Then every scenario runs against every server
// it applies to, with a fresh data directory (a new process) for each cold
// scenario:
//
//	cold-1          one client pulls the image (manifest, config, layers)
//	cold-16         --clients clients start the same pull together
//	warm-16         the same, once the cache holds the image
//	ttfb-cold-1GiB  one client pulls the big image; its layer's time to
//	                first byte is the figure
//	cold-16-1GiB    --clients clients pull the big image together; regcache's
//	                peak RSS is the figure (--big-cold=false skips it)
//	evict           --clients clients pull --evict-total of images in a loop
//	                from regcache with --max-size --evict-limit, then without
//	                a limit (evict.go)
//
// Figures are meant to be read as ratios between servers of the same run,
// which BENCHMARKS.md lists against the targets of the benchmark's issue.
// Children get SIGKILL if this process dies (Pdeathsig), and the whole run is
// bounded by --timeout.
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
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Options are the benchmark's flags.
type Options struct {
	Layers      int
	LayerSize   int64
	Clients     int
	BigBlobSize int64
	BigCold     bool
	Timeout     time.Duration
	JSONPath    string
	WriteMD     bool
	MDPath      string
	WorkDir     string
	Keep        bool
	Verify      bool
	Servers     []string
	Scenarios   []string
	Evict       evictOptions
}

func parseFlags(args []string, stderr io.Writer) (Options, error) {
	o := Options{LayerSize: 64 << 20, BigBlobSize: 1 << 30}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.Layers, "layers", 4, "layers in the benchmark image")
	fs.Var((*sizeFlag)(&o.LayerSize), "layer-size", "size of each layer (bytes, or with KiB, MiB, GiB)")
	fs.IntVar(&o.Clients, "clients", 16, "concurrent clients in the cold-16, warm-16 and cold-16-1GiB scenarios")
	fs.Var((*sizeFlag)(&o.BigBlobSize), "big-blob-size", "size of the big blob of the ttfb-cold-1GiB and cold-16-1GiB scenarios")
	fs.BoolVar(&o.BigCold, "big-cold", true, "run cold-16-1GiB (--clients clients on a cold big-blob image: peak RSS)")
	fs.DurationVar(&o.Timeout, "timeout", 20*time.Minute, "bound on the whole run; children are killed when it passes")
	fs.StringVar(&o.JSONPath, "json", filepath.Join(os.TempDir(), "regcache-bench.json"), "where to write the JSON result")
	fs.BoolVar(&o.WriteMD, "write-md", false, "write the table, ratios and machine description into the file named by --md")
	fs.StringVar(&o.MDPath, "md", "", "markdown file updated by --write-md (default BENCHMARKS.md at the module root)")
	fs.StringVar(&o.WorkDir, "work-dir", "", "directory for binaries, blobs and data directories (default: a new temporary directory, removed at the end)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory (with the servers' logs) at the end")
	fs.BoolVar(&o.Verify, "verify", true, "clients check the size and sha256 digest of every body they read")
	servers := fs.String("servers", "", "comma-separated subset of servers to run: "+strings.Join(allServers, ","))
	scenarios := fs.String("scenarios", "", "comma-separated subset of scenarios to run: "+strings.Join(allScenarios, ","))
	evictFlags(fs, &o.Evict)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Layers < 1 || o.LayerSize < 1 || o.Clients < 1 || o.BigBlobSize < 1 {
		return o, errors.New("--layers, --layer-size, --clients and --big-blob-size must be positive")
	}
	var err error
	if o.Servers, err = subset("server", *servers, allServers); err != nil {
		return o, err
	}
	if o.Scenarios, err = subset("scenario", *scenarios, allScenarios); err != nil {
		return o, err
	}
	return o, nil
}

// subset parses a comma-separated list of names from all; empty means all.
func subset(what, list string, all []string) ([]string, error) {
	if list == "" {
		return all, nil
	}
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		ok := false
		for _, a := range all {
			ok = ok || a == s
		}
		if !ok {
			return nil, fmt.Errorf("unknown %s %q: want one of %s", what, s, strings.Join(all, ", "))
		}
		out = append(out, s)
	}
	return out, nil
}

// sizeFlag is a byte count written as 1048576, 1MiB, 64MiB, 1GiB or 512KiB.
type sizeFlag int64

func (s *sizeFlag) String() string { return formatSize(int64(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSpace(v)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSuffix(num, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a byte count such as 1048576, 512KiB, 64MiB or 1GiB", v)
	}
	return n * mult, nil
}

// formatSize writes n as the largest binary unit that divides it.
func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	work := opts.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "regcache-bench-*"); err != nil {
			return err
		}
		if !opts.Keep {
			defer os.RemoveAll(work)
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}
	logf("work directory %s", work)

	b := &bench{opts: opts, work: work, logf: logf, procs: &procSet{}}
	defer b.procs.killAll()
	report, runErr := b.run(ctx)
	if report == nil {
		if ctx.Err() != nil && runErr != nil {
			return fmt.Errorf("%w (stopped by --timeout %v or a signal)", runErr, opts.Timeout)
		}
		return runErr
	}
	printTable(stdout, report)
	if err := writeJSON(opts.JSONPath, report); err != nil {
		return err
	}
	logf("JSON written to %s", opts.JSONPath)
	if opts.WriteMD {
		path := opts.MDPath
		if path == "" {
			root, err := moduleRoot(ctx)
			if err != nil {
				return err
			}
			path = filepath.Join(root, "BENCHMARKS.md")
		}
		if err := writeMarkdown(path, report); err != nil {
			return err
		}
		logf("%s updated", path)
	}
	if runErr != nil {
		if errors.Is(runErr, context.DeadlineExceeded) {
			return fmt.Errorf("stopped by --timeout %v; the results above are partial", opts.Timeout)
		}
		return runErr
	}
	if n := report.errorCount(); n > 0 {
		return fmt.Errorf("%d client errors (see the errors column and the JSON)", n)
	}
	return nil
}

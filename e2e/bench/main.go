// Command bench measures regcache against the pull-through caches people
// deploy instead (distribution's proxy mode, nginx with proxy_cache) and
// against what the machine allows (a direct pull from the upstream, the
// bare cold pipeline "floor", a static file server), all on loopback in
// one run:
//
//	go run ./e2e/bench                 # default sizes, prints the tables, writes JSON
//	go run ./e2e/bench --write-md      # also updates BENCHMARKS.md
//	go run ./e2e/bench --smoke         # every scenario and server, tiny sizes (CI)
//	go run ./e2e/bench -h              # every server, scenario and flag
//
// It builds and starts, as child processes: an upstream registry
// (go-containerregistry's pkg/registry with a counting layer,
// e2e/bench/upstream), regcache (cmd/regcache, with the probe of
// e2e/bench/probe added to its build), distribution/v3 in proxy mode
// (e2e/bench/distproxy), Debian's nginx with a generated proxy_cache
// configuration (nginx.go), the floor (e2e/bench/floor) and a static file
// server (e2e/bench/static). The images (scenarios.go names them) are put
// in the upstream once. Then the scenarios run group by group, each
// against every server it applies to; a cache server gets a fresh process
// and data directory per group, so that a group's first scenario is a cold
// one. Before each cold scenario, memory of twice its bytes is touched and
// freed (memtemp.go).
//
// Then, unless --scenarios leaves it out, the eviction run (evict.go):
// --clients clients pull --evict-total of images in a loop from regcache
// with --max-size --evict-limit, then from a fresh regcache without a
// limit.
//
// Figures are meant to be read as ratios between servers of the same run,
// which BENCHMARKS.md lists against their targets. Children are signalled
// if this process dies (Pdeathsig), and the whole run is bounded by
// --timeout.
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
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Options are the benchmark's flags.
type Options struct {
	Layers          int
	LayerSize       int64
	Clients         int
	BigBlobSize     int64
	BigCold         bool
	SmallLayers     int
	SmallMin        int64
	SmallMax        int64
	FanoutClients   int
	FanoutLayers    int
	FanoutLayerSize int64
	ManifestClients int
	Duration        time.Duration
	Tags            int
	TagTTL          time.Duration
	PageSize        int
	PreTouch        bool
	Micro           bool
	MicroBenchtime  string
	Smoke           bool
	Timeout         time.Duration
	JSONPath        string
	WriteMD         bool
	MDPath          string
	WorkDir         string
	Keep            bool
	Verify          bool
	// RegcacheMetrics runs regcache with its metrics on (the default) or
	// off (--metrics=false), to measure what they cost.
	RegcacheMetrics bool
	// HAReplicas and HAClients size the ha scenarios.
	HAReplicas int
	HAClients  int
	Servers    []string
	Scenarios  []string
	Evict      evictOptions
}

// smokeSizes are the flag values --smoke sets, unless given explicitly:
// every scenario against every server in well under a minute.
var smokeSizes = map[string]string{
	"layers": "2", "layer-size": "1MiB", "clients": "4", "big-blob-size": "8MiB",
	"small-layers": "12", "small-min": "16KiB", "small-max": "64KiB",
	"fanout-clients": "24", "fanout-layers": "2", "fanout-layer-size": "256KiB",
	"manifest-clients": "8", "duration": "1s", "tags": "250", "page-size": "100",
	"micro-benchtime": "100x", "timeout": "5m",
	"evict-total": "16MiB", "evict-limit": "6MiB", "evict-layer-size": "1MiB",
	"ha-clients": "6",
}

func parseFlags(args []string, stderr io.Writer) (Options, error) {
	o := Options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs) }
	o.LayerSize, o.BigBlobSize = 64<<20, 1<<30
	o.SmallMin, o.SmallMax, o.FanoutLayerSize = 16<<10, 256<<10, 2<<20
	fs.IntVar(&o.Layers, "layers", 4, "layers in the main image (cold-1, warm-16, cold-16, manifests)")
	fs.Var((*sizeFlag)(&o.LayerSize), "layer-size", "size of each layer of the main image (bytes, or with KiB, MiB, GiB)")
	fs.IntVar(&o.Clients, "clients", 16, "concurrent clients of cold-16, warm-16, cold-16-1GiB, small-blobs-* and the revalidating clients of many-tags (an eighth as many walk its tag list)")
	fs.Var((*sizeFlag)(&o.BigBlobSize), "big-blob-size", "size of the big blob of ttfb-cold-1GiB and cold-16-1GiB")
	fs.BoolVar(&o.BigCold, "big-cold", true, "run cold-16-1GiB (--clients clients on a cold big-blob image: peak RSS)")
	fs.IntVar(&o.SmallLayers, "small-layers", 200, "layers of the small-blobs image")
	fs.Var((*sizeFlag)(&o.SmallMin), "small-min", "smallest layer of the small-blobs image (sizes are uniform between --small-min and --small-max)")
	fs.Var((*sizeFlag)(&o.SmallMax), "small-max", "largest layer of the small-blobs image")
	fs.IntVar(&o.FanoutClients, "fanout-clients", 500, "concurrent clients of fanout")
	fs.IntVar(&o.FanoutLayers, "fanout-layers", 4, "layers of the fanout image")
	fs.Var((*sizeFlag)(&o.FanoutLayerSize), "fanout-layer-size", "size of each layer of the fanout image")
	fs.IntVar(&o.ManifestClients, "manifest-clients", 64, "keep-alive clients of manifests")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "how long manifests loads each server, and the most many-tags revalidates for")
	fs.IntVar(&o.Tags, "tags", 10000, "tags of the many-tags repository")
	fs.DurationVar(&o.TagTTL, "tag-ttl", time.Second, "tag TTL of the many-tags repository in regcache's rule and nginx's configuration (whole seconds)")
	fs.IntVar(&o.PageSize, "page-size", 100, "n of the tags/list pages many-tags walks")
	fs.BoolVar(&o.PreTouch, "pre-touch", true, "before each cold scenario, touch and free memory of twice its bytes, so that it does not pay for fresh pages (see BENCHMARKS.md); false: take memory as found")
	fs.BoolVar(&o.Micro, "micro", true, "also run the micro-benchmarks (go test -bench of the path parser, rule matcher and manifest hit path) and report them")
	fs.StringVar(&o.MicroBenchtime, "micro-benchtime", "1s", "-benchtime of the micro-benchmarks")
	fs.BoolVar(&o.Smoke, "smoke", false, "tiny sizes for a quick check that every scenario runs against every server (what CI runs); flags given explicitly still apply")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "bound on the whole run; children are killed when it passes")
	fs.StringVar(&o.JSONPath, "json", filepath.Join(os.TempDir(), "regcache-bench.json"), "where to write the JSON result")
	fs.BoolVar(&o.WriteMD, "write-md", false, "write the tables and machine description into the file named by --md")
	fs.StringVar(&o.MDPath, "md", "", "markdown file updated by --write-md (default BENCHMARKS.md at the module root)")
	fs.StringVar(&o.WorkDir, "work-dir", "", "directory for binaries, blobs, data directories and logs (default: a new temporary directory, removed at the end)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory (with the servers' logs) at the end")
	fs.BoolVar(&o.Verify, "verify", true, "clients check the size and sha256 digest of every body they read")
	fs.BoolVar(&o.RegcacheMetrics, "regcache-metrics", true, "run regcache with its Prometheus metrics on; false measures what they cost (serve --metrics=false)")
	fs.IntVar(&o.HAReplicas, "ha-replicas", 3, "replicas of regcache-ha and distribution-ha, behind one haproxy each")
	fs.IntVar(&o.HAClients, "ha-clients", 48, "concurrent clients of ha-cold and ha-warm, pulling through haproxy")
	servers := fs.String("servers", "", "comma-separated subset of servers to run (default all): "+strings.Join(allServers, ","))
	scenarios := fs.String("scenarios", "", "comma-separated subset of scenarios to run (default all; small-blobs means both small-blobs scenarios, ha both ha scenarios): "+strings.Join(append(scenarioNames(), scEvict), ","))
	evictFlags(fs, &o.Evict)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Smoke {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for name, v := range smokeSizes {
			if !given[name] {
				if err := fs.Set(name, v); err != nil {
					return o, fmt.Errorf("--smoke: %s=%s: %w", name, v, err)
				}
			}
		}
	}
	if err := o.validate(); err != nil {
		return o, err
	}
	var err error
	if o.Servers, err = subset("server", *servers, allServers, nil); err != nil {
		return o, err
	}
	if o.Scenarios, err = subset("scenario", *scenarios, append(scenarioNames(), scEvict), map[string][]string{aliasSmall: {scSmallCold, scSmallWarm}, aliasHA: {scHACold, scHAWarm}}); err != nil {
		return o, err
	}
	return o, nil
}

// validate checks the sizes and counts.
func (o Options) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"layers", int64(o.Layers)}, {"layer-size", o.LayerSize}, {"clients", int64(o.Clients)}, {"big-blob-size", o.BigBlobSize},
		{"small-layers", int64(o.SmallLayers)}, {"small-min", o.SmallMin}, {"fanout-clients", int64(o.FanoutClients)},
		{"fanout-layers", int64(o.FanoutLayers)}, {"fanout-layer-size", o.FanoutLayerSize}, {"manifest-clients", int64(o.ManifestClients)},
		{"tags", int64(o.Tags)}, {"page-size", int64(o.PageSize)}, {"ha-clients", int64(o.HAClients)},
	} {
		if f.v < 1 {
			return fmt.Errorf("--%s %d: must be at least 1", f.name, f.v)
		}
	}
	if o.HAReplicas < 2 {
		return fmt.Errorf("--ha-replicas %d: must be at least 2 (replicas sharing one store)", o.HAReplicas)
	}
	if o.SmallMax < o.SmallMin {
		return fmt.Errorf("--small-max %s is below --small-min %s", formatSize(o.SmallMax), formatSize(o.SmallMin))
	}
	if o.Duration <= 0 {
		return fmt.Errorf("--duration %v: must be positive, e.g. 30s", o.Duration)
	}
	if o.TagTTL < time.Second || o.TagTTL%time.Second != 0 {
		return fmt.Errorf("--tag-ttl %v: must be whole seconds, at least 1s (nginx counts cache validity in seconds)", o.TagTTL)
	}
	return nil
}

// usage prints what the benchmark runs, its servers and scenarios, then
// the flags.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprint(w, `Usage: go run ./e2e/bench [flags]

Measures regcache against the caches people deploy instead (distribution's
proxy mode, nginx with proxy_cache) and against what the machine allows (a
direct pull from the upstream, the bare cold pipeline "floor", a static
file server), all on loopback in one run, and prints the figures as tables
of ratios between servers of the same run (and writes them as JSON). See
BENCHMARKS.md for how to read them.

Servers:
`)
	for _, s := range allServers {
		fmt.Fprintf(w, "  %-15s %s\n", s, serverDocs[s])
	}
	fmt.Fprint(w, "\nScenarios (in the order they run; each against the servers listed):\n")
	for _, sc := range scenarioList {
		fmt.Fprintf(w, "  %-17s %s\n  %-17s servers: %s\n", sc.name, sc.doc, "", strings.Join(sc.servers, ", "))
	}
	fmt.Fprintf(w, "  %-17s %s\n  %-17s servers: %s\n", scEvict, "--clients clients pull --evict-total of images in a loop from regcache with --max-size --evict-limit, then without a limit: throughput and blob p99 of the limited run against the unlimited one, errors (must be 0)", "", srvRegcache)
	fmt.Fprint(w, `
Cold scenarios run on a fresh instance of each cache (new process, empty
data directory); warm ones on the instance the group's cold scenario
filled. Every server's CPU, peak RSS and threads come from /proc (summed
over nginx's processes, and over the replicas and haproxy of an ha server;
SeaweedFS and etcd are reported apart); the Go servers' peak goroutines
and allocations per request from a probe in the process (e2e/bench/probe,
summed over replicas). The ha servers need SeaweedFS, etcd and haproxy
(.ci/install-peers). Default sizes take under 10 minutes on two cores (8
on a busy one) without the ha group, which adds a few more (48 pulls of
the image per server, cold and warm); --smoke takes seconds once the
servers are built.

Examples:
  go run ./e2e/bench                                  # default sizes; table + JSON
  go run ./e2e/bench --write-md                       # and update BENCHMARKS.md
  go run ./e2e/bench --smoke                          # every scenario and server, tiny sizes
  go run ./e2e/bench --servers regcache,nginx,static --scenarios manifests --duration 10s
  go run ./e2e/bench --scenarios ha --micro=false      # the replicas: regcache-ha, distribution-ha, one regcache

Flags:
`)
	fs.PrintDefaults()
}

// subset parses a comma-separated list of names from all (or aliases of
// several); empty means all.
func subset(what, list string, all []string, aliases map[string][]string) ([]string, error) {
	if list == "" {
		return all, nil
	}
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if names, ok := aliases[s]; ok {
			out = append(out, names...)
			continue
		}
		if !slices.Contains(all, s) {
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
		return fmt.Errorf("%d errors (see the errors columns, the messages under the tables and the JSON)", n)
	}
	return nil
}

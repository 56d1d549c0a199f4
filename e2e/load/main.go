// Command load puts regcache under load on loopback and checks that it
// holds: real clients see no error while an attacker holds idle
// connections, and regcache's goroutines and open files come back to
// their baseline afterwards.
//
//	go run ./e2e/load                       # 200 clients for 60 s, 20,000 idle connections
//	go run ./e2e/load --duration 5s --clients 8 --idle-conns 300 --per-address-cap 100   # smoke run
//
// It builds regcache (cmd/regcache, no -race) and runs it as a child
// process with a config-file rule docker.io/load/* -> load/* pointing at an
// upstream it serves itself on 127.0.0.1: go-containerregistry's registry
// with blobs in memory, closing idle keep-alive connections after 3 s (so
// that regcache's pooled upstream connections end, as they do against
// real registries and load balancers). The upstream holds --warm-images
// images of --layer-sizes layers, pulled once through regcache before the
// measurement (warm), and receives new images all along (cold: each is
// handed to --cold-fanout clients, as a new tag rolled out to several
// nodes at once).
//
// The load:
//   - --clients real clients on 127.0.0.1, each with its own connection
//     pool, pull for --duration: a warm image (the manifest by tag or by
//     digest, then every blob, a --range-ratio of them as a Range request
//     of part of the blob), or with --cold-ratio a new image. Every body
//     is checked: status, size and sha256 digest, range bytes against the
//     source. Any failure is an error, printed, and the program exits 1.
//   - an attacker on --attacker-addr (127.0.0.2) opens --idle-conns
//     connections at once and sends nothing; when regcache closes one (at
//     once when over its per-address cap, after its header timeout
//     otherwise) it dials again, at most --attacker-rate dials a second.
//
// regcache's goroutines (GET /admin/v1/debug/pprof/goroutine?debug=1),
// open files (/proc/<pid>/fd), threads and RSS (/proc/<pid>/status) are
// read at baseline (after the warm-up, once the upstream closed regcache's
// idle connections), every second under load (peak), and after the load
// (from the same point on) until they are back within
// --tolerance-goroutines and --tolerance-fds of the baseline, for at most
// --settle; not coming back is an error.
//
// Everything listens on and dials loopback addresses only. The attacker
// runs in child processes of this program, as many as the open-files hard
// limit needs (one descriptor per connection: 20,000 do not fit in one
// process where the hard limit is 20,000), each raising its own soft
// limit; every child gets SIGKILL if the program dies (Pdeathsig), and the
// whole run is bounded by --timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
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
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// options are the program's flags.
type options struct {
	duration      time.Duration
	clients       int
	idleConns     int
	attackerAddr  string
	attackerRate  int
	perAddressCap int
	warmImages    int
	layerSizes    []int64
	coldRatio     float64
	coldFanout    int
	coldLayerSize int64
	rangeRatio    float64
	settle        time.Duration
	tolGoroutines int
	tolFDs        int
	timeout       time.Duration
	workDir       string
	keep          bool
	jsonPath      string
	// attackerChild runs the program as one of the attacker's processes,
	// holding idleConns connections to attackerTarget.
	attackerChild  bool
	attackerTarget string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long the clients pull")
	fs.IntVar(&o.clients, "clients", 200, "concurrent real clients (127.0.0.1), each with its own connection pool")
	fs.IntVar(&o.idleConns, "idle-conns", 20000, "idle connections the attacker tries to hold open (0: no attacker)")
	fs.StringVar(&o.attackerAddr, "attacker-addr", "127.0.0.2", "loopback address the attacker connects from")
	fs.IntVar(&o.attackerRate, "attacker-rate", 1000, "dials per second the attacker makes after its first burst, to replace connections regcache closed")
	fs.IntVar(&o.perAddressCap, "per-address-cap", 0, "regcache's --max-conns-per-address (0: its default)")
	fs.IntVar(&o.warmImages, "warm-images", 4, "images pulled once before the load and then warm")
	layers := fs.String("layer-sizes", "256KiB,2MiB,6MiB", "sizes of the layers of each warm image (bytes, or with KiB, MiB)")
	fs.Float64Var(&o.coldRatio, "cold-ratio", 0.1, "share of the pulls that are of a new (cold) image")
	fs.IntVar(&o.coldFanout, "cold-fanout", 4, "clients handed each new image")
	coldLayer := fs.String("cold-layer-size", "512KiB", "layer size of the new images")
	fs.Float64Var(&o.rangeRatio, "range-ratio", 0.25, "share of the warm blob reads that are Range requests")
	fs.DurationVar(&o.settle, "settle", 150*time.Second, "how long goroutines and open files may take to come back to the baseline after the load")
	fs.IntVar(&o.tolGoroutines, "tolerance-goroutines", 10, "goroutines above the baseline still counted as back")
	fs.IntVar(&o.tolFDs, "tolerance-fds", 5, "open files above the baseline still counted as back")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound on the whole run; children are killed when it passes")
	fs.StringVar(&o.workDir, "work-dir", "", "directory for the regcache binary, its data and its log (default: a new temporary directory, removed at the end)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (with regcache's log) at the end")
	fs.StringVar(&o.jsonPath, "json", "", "also write the figures as JSON to this file")
	fs.BoolVar(&o.attackerChild, "attacker-child", false, "internal: run as one of the attacker's processes (the program starts them itself)")
	fs.StringVar(&o.attackerTarget, "attacker-target", "", "internal: the address an attacker process connects to")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.layerSizes, err = parseSizes(*layers); err != nil {
		return o, fmt.Errorf("--layer-sizes: %w", err)
	}
	if o.coldLayerSize, err = parseSize(*coldLayer); err != nil {
		return o, fmt.Errorf("--cold-layer-size: %w", err)
	}
	switch {
	case o.duration <= 0 || o.clients < 1 || o.warmImages < 1 || o.coldFanout < 1:
		return o, errors.New("--duration, --clients, --warm-images and --cold-fanout must be positive")
	case o.idleConns < 0 || o.attackerRate < 1 || o.perAddressCap < 0:
		return o, errors.New("--idle-conns and --per-address-cap must not be negative, --attacker-rate must be positive")
	case o.coldRatio < 0 || o.coldRatio > 1 || o.rangeRatio < 0 || o.rangeRatio > 1:
		return o, errors.New("--cold-ratio and --range-ratio must be between 0 and 1")
	}
	if ip := net.ParseIP(o.attackerAddr); ip == nil || !ip.IsLoopback() {
		return o, fmt.Errorf("--attacker-addr %q: want a loopback address such as 127.0.0.2", o.attackerAddr)
	}
	return o, nil
}

// parseSizes parses a comma-separated list of sizes.
func parseSizes(list string) ([]int64, error) {
	var out []int64
	for _, s := range strings.Split(list, ",") {
		n, err := parseSize(s)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// parseSize parses a byte count written as 1048576, 512KiB or 6MiB.
func parseSize(v string) (int64, error) {
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if s, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = s, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("size %q: want a positive byte count such as 1048576, 512KiB or 6MiB", v)
	}
	return n * mult, nil
}

// raiseOpenFiles makes the soft open-files limit at least need: up to the
// hard limit, and beyond it when the process may raise that (root).
func raiseOpenFiles(need uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open-files limit: %w", err)
	}
	if lim.Cur >= need {
		return lim.Cur, nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return want.Cur, nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise the open-files limit to %d: %w", lim.Max, err)
	}
	return lim.Cur, fmt.Errorf("the open-files limit is %d and may not be raised to the %d this run needs: lower --idle-conns, or raise the hard limit (ulimit -Hn, or run as root)", lim.Max, need)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if opts.attackerChild {
		return runAttackerChild(ctx, opts, stdout)
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}
	// A descriptor per client connection, the upstream's connections and
	// some to spare; the attacker's connections are held by processes of
	// their own.
	limit, err := raiseOpenFiles(uint64(2*opts.clients + 1024))
	if err != nil {
		return err
	}
	logf("open-files limit %d", limit)
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	work := opts.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "regcache-load-*"); err != nil {
			return err
		}
		if !opts.keep {
			defer os.RemoveAll(work)
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	logf("work directory %s", work)
	l := &loadRun{opts: opts, work: work, logf: logf}
	rep, runErr := l.run(ctx)
	if rep != nil {
		rep.print(stdout)
		if opts.jsonPath != "" {
			if err := rep.writeJSON(opts.jsonPath); err != nil {
				return err
			}
			logf("JSON written to %s", opts.jsonPath)
		}
	}
	if runErr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (stopped by --timeout %v or a signal)", runErr, opts.timeout)
		}
		return runErr
	}
	return rep.verdict()
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// MicroResult is one go test -bench result: regcache's code in process,
// with allocations per operation.
type MicroResult struct {
	Name        string  `json:"name"`
	Package     string  `json:"package"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
	Error       string  `json:"error"` // the go test failure, on a result named "go test"
}

// microPattern selects the micro-benchmarks: the path parser and the
// manifest hit path of package registry (the in-process handler), and the
// rule matcher of package cache.
const microPattern = "^Benchmark(ParsePath|ManifestHit|RuleMatch)$"

var microPackages = []string{"./registry", "./cache"}

// benchLine matches a go test -bench result line with -benchmem figures.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op\s+([\d.]+) B/op\s+([\d.]+) allocs/op`)

// runMicro runs the micro-benchmarks from the module root with
// -benchtime benchtime. A failing go test is returned as a result named
// "go test" with the end of its output as the error.
func runMicro(ctx context.Context, root, benchtime string, logf func(string, ...any)) ([]MicroResult, error) {
	args := append([]string{"test", "-run", "^$", "-bench", microPattern, "-benchmem", "-benchtime", benchtime, "-count", "1"}, microPackages...)
	logf("micro-benchmarks: go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, goCommand(), args...)
	cmd.Dir = root
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	results := parseMicro(out)
	if err != nil || len(results) == 0 {
		tail := out[max(0, len(out)-2000):]
		return append(results, MicroResult{Name: "go test", Error: strings.TrimSpace("go " + strings.Join(args, " ") + ": " + errString(err) + "\n" + string(tail))}), nil
	}
	return results, nil
}

func errString(err error) string {
	if err == nil {
		return "no benchmark results"
	}
	return err.Error()
}

// parseMicro reads go test -bench output.
func parseMicro(out []byte) []MicroResult {
	var results []MicroResult
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		r := MicroResult{Name: m[1], Package: pkg}
		r.NsPerOp, _ = strconv.ParseFloat(m[2], 64)
		r.BytesPerOp, _ = strconv.ParseFloat(m[3], 64)
		r.AllocsPerOp, _ = strconv.ParseFloat(m[4], 64)
		results = append(results, r)
	}
	return results
}

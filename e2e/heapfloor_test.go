package e2e

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

// gogcPercent reads go_gc_gogc_percent, the collector's percent, from
// regcache's /metrics.
func gogcPercent(t *testing.T, rc *peers.Regcache) int {
	t.Helper()
	resp, err := http.Get(rc.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_gc_gogc_percent "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("go_gc_gogc_percent %q: %v", v, err)
			}
			return int(n)
		}
	}
	t.Fatalf("no go_gc_gogc_percent on /metrics (%v)", sc.Err())
	return 0
}

// The heap floor is on by default in `regcache serve` (the collector's
// percent is raised over a small live heap), --heap-floor 0 turns it off,
// and an operator's GOGC wins over it.
func TestHeapFloor(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want func(int) bool
		what string
	}{
		{name: "default", want: func(p int) bool { return p > 100 }, what: "above 100 (a 32MiB floor over a small live heap)"},
		{name: "off", args: []string{"--heap-floor", "0"}, want: func(p int) bool { return p == 100 }, what: "100 (Go's default)"},
		{name: "GOGC wins", env: []string{"GOGC=300"}, want: func(p int) bool { return p == 300 }, what: "300 (GOGC)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			rc := peers.StartRegcacheWith(t, bin, peers.ServeOptions{Env: c.env}, c.args...)
			if p := gogcPercent(t, rc); !c.want(p) {
				t.Errorf("the collector's percent: %d, want %s", p, c.what)
			}
			if c.name == "GOGC wins" && !strings.Contains(rc.Logs(), "GOGC is set: no heap floor") {
				t.Errorf("no log line saying GOGC turned the floor off:\n%s", rc.Logs())
			}
		})
	}
}

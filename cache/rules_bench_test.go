package cache

import (
	"fmt"
	"testing"
)

// BenchmarkRuleMatch measures the rule matcher every request goes through
// (Match for a local name, MatchSource for containerd's ?ns= requests), on
// a registry with 40 static and 11 wildcard rules, with its allocations
// (the benchmark program reports them: go run ./e2e/bench, BENCHMARKS.md).
func BenchmarkRuleMatch(b *testing.B) {
	var rules []Rule
	for i := range 40 {
		rules = append(rules, Rule{Name: fmt.Sprintf("static-%02d", i), Source: fmt.Sprintf("docker.io/library/app%02d", i), Target: fmt.Sprintf("app%02d", i)})
	}
	for i := range 10 {
		rules = append(rules, Rule{Name: fmt.Sprintf("wildcard-%02d", i), Source: fmt.Sprintf("ghcr.io/org%02d/*", i), Target: fmt.Sprintf("ghcr/org%02d/*", i)})
	}
	rules = append(rules, Rule{Name: "hub-all", Source: "docker.io/*", Target: "hub/*"})
	rs, err := NewRuleSet(rules)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, repo string
		source     bool   // MatchSource instead of Match
		want       string // rule name; "" for no match
	}{
		{"static", "app17", false, "static-17"},
		{"wildcard", "ghcr/org07/tools/builder", false, "wildcard-07"},
		{"hub wildcard", "hub/library/nginx", false, "hub-all"},
		{"no rule", "team/app", false, ""},
		{"by source", "docker.io/library/nginx", true, "hub-all"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var m Match
				var ok bool
				if bc.source {
					m, _, ok = rs.MatchSource(bc.repo)
				} else {
					m, ok = rs.Match(bc.repo)
				}
				if ok != (bc.want != "") || m.Rule.Name != bc.want {
					b.Fatalf("match %q: rule %q, %v; want %q", bc.repo, m.Rule.Name, ok, bc.want)
				}
			}
		})
	}
}

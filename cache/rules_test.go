package cache

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// validRule is a rule every test in this file may start from and change one
// field of.
var validRule = Rule{Name: "ubuntu-rule", Source: "docker.io/library/ubuntu", Target: "ubuntu"}

func withRule(f func(*Rule)) Rule {
	r := validRule
	f(&r)
	return r
}

func TestNormalizeRefuses(t *testing.T) {
	t.Parallel()
	digest := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name  string
		rule  Rule
		field string
		value string // the value the error must name
	}{
		{"name of 4 characters", withRule(func(r *Rule) { r.Name = "abcd" }), "name", "abcd"},
		{"name of 51 characters", withRule(func(r *Rule) { r.Name = strings.Repeat("a", 51) }), "name", strings.Repeat("a", 51)},
		{"name with underscore", withRule(func(r *Rule) { r.Name = "my_rule" }), "name", "my_rule"},
		{"name with space", withRule(func(r *Rule) { r.Name = "my rule" }), "name", "my rule"},
		{"name with slash", withRule(func(r *Rule) { r.Name = "my/rule" }), "name", "my/rule"},
		{"empty name", withRule(func(r *Rule) { r.Name = "" }), "name", ""},

		{"source with tag", withRule(func(r *Rule) { r.Source = "docker.io/library/ubuntu:22.04" }), "sourceRepository", "docker.io/library/ubuntu:22.04"},
		{"source with port and tag", withRule(func(r *Rule) { r.Source = "localhost:5000/foo:1" }), "sourceRepository", "localhost:5000/foo:1"},
		{"source with digest", withRule(func(r *Rule) { r.Source = "docker.io/library/ubuntu@" + digest }), "sourceRepository", "docker.io/library/ubuntu@" + digest},
		{"source with tag and digest", withRule(func(r *Rule) { r.Source = "docker.io/library/ubuntu:22.04@" + digest }), "sourceRepository", "docker.io/library/ubuntu:22.04@" + digest},
		{"source without host, two segments", withRule(func(r *Rule) { r.Source = "library/ubuntu" }), "sourceRepository", "library/ubuntu"},
		{"source without host, one segment", withRule(func(r *Rule) { r.Source = "ubuntu" }), "sourceRepository", "ubuntu"},
		{"source with scheme", withRule(func(r *Rule) { r.Source = "https://docker.io/x" }), "sourceRepository", "https://docker.io/x"},
		{"empty source", withRule(func(r *Rule) { r.Source = "" }), "sourceRepository", ""},
		{"source host only", withRule(func(r *Rule) { r.Source = "docker.io/" }), "sourceRepository", "docker.io/"},
		{"source with invalid host", withRule(func(r *Rule) { r.Source = "bad_host.io/x" }), "sourceRepository", "bad_host.io/x"},
		{"source with a bracketed host that is no IPv6 address", withRule(func(r *Rule) { r.Source = "[0]/x" }), "sourceRepository", "[0]/x"},
		{"source with an IPv4 address in brackets", withRule(func(r *Rule) { r.Source = "[1.2.3.4]:5000/x" }), "sourceRepository", "[1.2.3.4]:5000/x"},
		{"source with uppercase path", withRule(func(r *Rule) { r.Source = "docker.io/Library/Ubuntu" }), "sourceRepository", "docker.io/Library/Ubuntu"},
		{"source with uppercase one-segment hub path", withRule(func(r *Rule) { r.Source = "docker.io/Ubuntu" }), "sourceRepository", "docker.io/Ubuntu"},
		{"source with invalid character", withRule(func(r *Rule) { r.Source = "ghcr.io/org/app!" }), "sourceRepository", "ghcr.io/org/app!"},
		{"source with trailing slash", withRule(func(r *Rule) { r.Source = "docker.io/library/ubuntu/" }), "sourceRepository", "docker.io/library/ubuntu/"},
		{"source wildcard in the middle", withRule(func(r *Rule) { r.Source = "docker.io/*/foo"; r.Target = "hub/*" }), "sourceRepository", "docker.io/*/foo"},
		{"source wildcard glued to a segment", withRule(func(r *Rule) { r.Source = "ghcr.io/org/app*"; r.Target = "app" }), "sourceRepository", "ghcr.io/org/app*"},
		{"source wildcard glued to a hub segment", withRule(func(r *Rule) { r.Source = "docker.io/foo*"; r.Target = "foo" }), "sourceRepository", "docker.io/foo*"},
		{"source wildcard after slash then more", withRule(func(r *Rule) { r.Source = "docker.io/library/*/"; r.Target = "hub/*" }), "sourceRepository", "docker.io/library/*/"},

		{"target with tag", withRule(func(r *Rule) { r.Target = "ubuntu:22.04" }), "targetRepository", "ubuntu:22.04"},
		{"target with digest", withRule(func(r *Rule) { r.Target = "ubuntu@" + digest }), "targetRepository", "ubuntu@" + digest},
		{"target uppercase", withRule(func(r *Rule) { r.Target = "Ubuntu" }), "targetRepository", "Ubuntu"},
		{"empty target", withRule(func(r *Rule) { r.Target = "" }), "targetRepository", ""},
		{"bare wildcard target", withRule(func(r *Rule) { r.Source = "docker.io/library/*"; r.Target = "*" }), "targetRepository", "*"},
		{"target wildcard without prefix", withRule(func(r *Rule) { r.Source = "docker.io/library/*"; r.Target = "/*" }), "targetRepository", "/*"},
		{"target wildcard in the middle", withRule(func(r *Rule) { r.Source = "docker.io/library/*"; r.Target = "hub/*/x" }), "targetRepository", "hub/*/x"},
		{"target wildcard glued to a segment", withRule(func(r *Rule) { r.Target = "hub*" }), "targetRepository", "hub*"},

		{"wildcard on source only", withRule(func(r *Rule) { r.Source = "docker.io/library/*"; r.Target = "hub" }), "targetRepository", "hub"},
		{"wildcard on target only", withRule(func(r *Rule) { r.Target = "hub/*" }), "targetRepository", "hub/*"},
		{"whole-host wildcard with static target", withRule(func(r *Rule) { r.Source = "docker.io/*"; r.Target = "hub" }), "targetRepository", "hub"},

		{"tag TTL not a duration", withRule(func(r *Rule) { r.TagTTL = "forever" }), "tagTTL", "forever"},
		{"tag TTL over a week", withRule(func(r *Rule) { r.TagTTL = "200h" }), "tagTTL", "200h"},
		{"max stale not a duration", withRule(func(r *Rule) { r.MaxStale = "a day" }), "maxStale", "a day"},
		{"max stale zero", withRule(func(r *Rule) { r.MaxStale = "0s" }), "maxStale", "0s"},
		{"deleted tags unknown", withRule(func(r *Rule) { r.DeletedTags = "delete" }), "deletedTags", "delete"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Normalize(tt.rule)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Normalize(%+v) = %+v, %v; want a *FieldError", tt.rule, got, err)
			}
			if fe.Field != tt.field || fe.Value != tt.value {
				t.Errorf("FieldError names %s %q, want %s %q (%v)", fe.Field, fe.Value, tt.field, tt.value, err)
			}
			if fe.Reason == "" {
				t.Errorf("FieldError has no reason: %v", err)
			}
		})
	}
}

func TestNormalizeAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		rule       Rule
		wantSource string
		wantTarget string
	}{
		{"canonical hub source", validRule, "docker.io/library/ubuntu", "ubuntu"},
		{"one-segment hub source gets library/", withRule(func(r *Rule) { r.Source = "docker.io/ubuntu" }), "docker.io/library/ubuntu", "ubuntu"},
		{"index.docker.io alias", withRule(func(r *Rule) { r.Source = "index.docker.io/library/x" }), "docker.io/library/x", "ubuntu"},
		{"registry-1.docker.io alias", withRule(func(r *Rule) { r.Source = "registry-1.docker.io/library/x" }), "docker.io/library/x", "ubuntu"},
		{"registry.hub.docker.com alias", withRule(func(r *Rule) { r.Source = "registry.hub.docker.com/library/x" }), "docker.io/library/x", "ubuntu"},
		{"alias with one segment gets library/", withRule(func(r *Rule) { r.Source = "index.docker.io/x" }), "docker.io/library/x", "ubuntu"},
		{"alias in mixed case", withRule(func(r *Rule) { r.Source = "Docker.IO/ubuntu" }), "docker.io/library/ubuntu", "ubuntu"},
		{"hub organisation kept", withRule(func(r *Rule) { r.Source = "docker.io/bitnami/redis" }), "docker.io/bitnami/redis", "ubuntu"},
		{"whole hub wildcard stays", withRule(func(r *Rule) { r.Source = "docker.io/*"; r.Target = "hub/*" }), "docker.io/*", "hub/*"},
		{"hub library wildcard", withRule(func(r *Rule) { r.Source = "docker.io/library/*"; r.Target = "hub/*" }), "docker.io/library/*", "hub/*"},
		{"hub organisation wildcard gets no library/", withRule(func(r *Rule) { r.Source = "docker.io/bitnami/*"; r.Target = "bitnami/*" }), "docker.io/bitnami/*", "bitnami/*"},
		{"aliased hub wildcard", withRule(func(r *Rule) { r.Source = "registry-1.docker.io/library/*"; r.Target = "hub/*" }), "docker.io/library/*", "hub/*"},
		{"localhost with port", withRule(func(r *Rule) { r.Source = "localhost:5000/team/app" }), "localhost:5000/team/app", "ubuntu"},
		{"localhost without port", withRule(func(r *Rule) { r.Source = "localhost/app" }), "localhost/app", "ubuntu"},
		{"IPv4 with port", withRule(func(r *Rule) { r.Source = "127.0.0.1:5001/a" }), "127.0.0.1:5001/a", "ubuntu"},
		{"IPv6 with port", withRule(func(r *Rule) { r.Source = "[::1]:5000/a" }), "[::1]:5000/a", "ubuntu"},
		{"ghcr unchanged", withRule(func(r *Rule) { r.Source = "ghcr.io/org/app" }), "ghcr.io/org/app", "ubuntu"},
		{"one segment outside hub gets no library/", withRule(func(r *Rule) { r.Source = "ghcr.io/app" }), "ghcr.io/app", "ubuntu"},
		{"ghcr wildcard", withRule(func(r *Rule) { r.Source = "ghcr.io/org/*"; r.Target = "gh/org/*" }), "ghcr.io/org/*", "gh/org/*"},
		{"separators in repository", withRule(func(r *Rule) { r.Source = "quay.io/my-org/my.app__x"; r.Target = "my.app_x-y" }), "quay.io/my-org/my.app__x", "my.app_x-y"},
		{"nested target", withRule(func(r *Rule) { r.Target = "hub/library/ubuntu" }), "docker.io/library/ubuntu", "hub/library/ubuntu"},
		{"name of 5 characters", withRule(func(r *Rule) { r.Name = "abcde" }), "docker.io/library/ubuntu", "ubuntu"},
		{"name of 50 characters", withRule(func(r *Rule) { r.Name = strings.Repeat("a", 50) }), "docker.io/library/ubuntu", "ubuntu"},
		{"name with uppercase, digits and dashes", withRule(func(r *Rule) { r.Name = "Hub-Rule-01" }), "docker.io/library/ubuntu", "ubuntu"},
		{"credential set and origin kept", withRule(func(r *Rule) { r.CredentialSet = "hub-creds"; r.Origin = OriginAPI }), "docker.io/library/ubuntu", "ubuntu"},
		{"tag TTL never, max stale, forget deleted tags", withRule(func(r *Rule) { r.TagTTL = TagTTLNever; r.MaxStale = "72h0m0s"; r.DeletedTags = DeletedTagsForget }), "docker.io/library/ubuntu", "ubuntu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Normalize(tt.rule)
			if err != nil {
				t.Fatalf("Normalize(%+v): %v", tt.rule, err)
			}
			want := tt.rule
			want.Source, want.Target = tt.wantSource, tt.wantTarget
			if got != want {
				t.Errorf("Normalize(%+v) = %+v, want %+v", tt.rule, got, want)
			}
			again, err := Normalize(got)
			if err != nil || again != got {
				t.Errorf("Normalize is not idempotent: Normalize(%+v) = %+v, %v", got, again, err)
			}
		})
	}
}

func TestRuleSetMatch(t *testing.T) {
	t.Parallel()
	hub := Rule{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}
	special := Rule{Name: "hub-special", Source: "ghcr.io/special/*", Target: "hub/special/*"}
	// Named so that sorting by name puts the shorter prefix first: the
	// longest-prefix order must not come from the names.
	aShort := Rule{Name: "a-short", Source: "docker.io/library/*", Target: "hub/*"}
	zLong := Rule{Name: "z-long", Source: "ghcr.io/special/*", Target: "hub/special/*"}
	pinned := Rule{Name: "nginx-pinned", Source: "docker.io/bitnami/nginx", Target: "hub/nginx"}
	ubuntu := Rule{Name: "ubuntu-rule", Source: "docker.io/ubuntu", Target: "ubuntu"}
	local := Rule{Name: "local-team", Source: "localhost:5000/team/*", Target: "team/*"}
	tests := []struct {
		name         string
		rules        []Rule
		repo         string
		wantOK       bool
		wantRule     string
		wantHost     string
		wantUpstream string
	}{
		{"static exact match", []Rule{ubuntu}, "ubuntu", true, "ubuntu-rule", "docker.io", "library/ubuntu"},
		{"static does not match below itself", []Rule{ubuntu}, "ubuntu/sub", false, "", "", ""},
		{"static does not match a longer name", []Rule{ubuntu}, "ubuntu2", false, "", "", ""},
		{"wildcard one segment", []Rule{hub}, "hub/nginx", true, "hub-library", "docker.io", "library/nginx"},
		{"wildcard several segments", []Rule{hub}, "hub/a/b", true, "hub-library", "docker.io", "library/a/b"},
		{"wildcard prefix alone", []Rule{hub}, "hub", false, "", "", ""},
		{"wildcard prefix with slash only", []Rule{hub}, "hub/", false, "", "", ""},
		{"wildcard needs a segment boundary", []Rule{hub}, "hubx/nginx", false, "", "", ""},
		{"static beats wildcard", []Rule{hub, pinned}, "hub/nginx", true, "nginx-pinned", "docker.io", "bitnami/nginx"},
		{"static beats wildcard, listed first", []Rule{pinned, hub}, "hub/nginx", true, "nginx-pinned", "docker.io", "bitnami/nginx"},
		{"wildcard still serves beside static", []Rule{hub, pinned}, "hub/redis", true, "hub-library", "docker.io", "library/redis"},
		{"longest wildcard prefix wins", []Rule{hub, special}, "hub/special/x", true, "hub-special", "ghcr.io", "special/x"},
		{"longest wildcard prefix wins, listed first", []Rule{special, hub}, "hub/special/x", true, "hub-special", "ghcr.io", "special/x"},
		{"longest prefix wins regardless of names", []Rule{aShort, zLong}, "hub/special/x/y", true, "z-long", "ghcr.io", "special/x/y"},
		{"shorter prefix outside the longer", []Rule{hub, special}, "hub/x", true, "hub-library", "docker.io", "library/x"},
		{"shorter prefix on a lookalike segment", []Rule{hub, special}, "hub/specialx", true, "hub-library", "docker.io", "library/specialx"},
		{"nested prefix alone falls to the shorter", []Rule{hub, special}, "hub/special", true, "hub-library", "docker.io", "library/special"},
		{"host with port", []Rule{local}, "team/app", true, "local-team", "localhost:5000", "team/app"},
		{"no rule covers the name", []Rule{hub, ubuntu, local}, "other/x", false, "", "", ""},
		{"no rules", nil, "ubuntu", false, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rs, err := NewRuleSet(tt.rules)
			if err != nil {
				t.Fatal(err)
			}
			m, ok := rs.Match(tt.repo)
			if ok != tt.wantOK {
				t.Fatalf("Match(%q) ok = %v, want %v (%+v)", tt.repo, ok, tt.wantOK, m)
			}
			if m.Rule.Name != tt.wantRule || m.Host != tt.wantHost || m.Upstream != tt.wantUpstream {
				t.Errorf("Match(%q) = rule %q host %q upstream %q, want rule %q host %q upstream %q",
					tt.repo, m.Rule.Name, m.Host, m.Upstream, tt.wantRule, tt.wantHost, tt.wantUpstream)
			}
			if ok {
				want, _ := rs.Get(tt.wantRule)
				if m.Rule != want {
					t.Errorf("Match(%q).Rule = %+v, want the normalised rule %+v", tt.repo, m.Rule, want)
				}
			}
		})
	}
}

func TestRuleSetMatchSource(t *testing.T) {
	t.Parallel()
	hub := Rule{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}
	mirror := Rule{Name: "hub-mirror", Source: "docker.io/*", Target: "mirror/*"}
	alpine := Rule{Name: "alpine-pinned", Source: "docker.io/library/alpine", Target: "alpine"}
	gh := Rule{Name: "ghcr-org", Source: "ghcr.io/org/*", Target: "gh/*"}
	local := Rule{Name: "local-team", Source: "localhost:5000/team/*", Target: "team/*"}
	// Named so that sorting by name puts the rule that must lose first, and
	// sized so that length alone does not decide: the static source
	// docker.io/library/a is as long as docker.io/library/*.
	aWild := Rule{Name: "a-wild", Source: "docker.io/library/*", Target: "hub/*"}
	zStatic := Rule{Name: "z-static", Source: "docker.io/library/a", Target: "a"}
	aMirror := Rule{Name: "a-mirror", Source: "docker.io/*", Target: "mirror/*"}
	zLibrary := Rule{Name: "z-library", Source: "docker.io/library/*", Target: "lib/*"}
	// Local names a wildcard would give that another rule owns: a static
	// target, a nested wildcard target.
	redis := Rule{Name: "bitnami-redis", Source: "docker.io/bitnami/redis", Target: "hub/redis"}
	special := Rule{Name: "hub-special", Source: "docker.io/special/*", Target: "hub/special/*"}
	tests := []struct {
		name         string
		rules        []Rule
		source       string
		wantOK       bool
		wantRule     string
		wantLocal    string
		wantHost     string
		wantUpstream string
	}{
		{"one-segment hub name", []Rule{hub}, "docker.io/alpine", true, "hub-library", "hub/alpine", "docker.io", "library/alpine"},
		{"library hub name", []Rule{hub}, "docker.io/library/alpine", true, "hub-library", "hub/alpine", "docker.io", "library/alpine"},
		{"index.docker.io alias", []Rule{hub}, "index.docker.io/library/alpine", true, "hub-library", "hub/alpine", "docker.io", "library/alpine"},
		{"registry-1.docker.io alias, one segment", []Rule{hub}, "registry-1.docker.io/alpine", true, "hub-library", "hub/alpine", "docker.io", "library/alpine"},
		{"nested path below the wildcard", []Rule{hub}, "docker.io/library/a/b", true, "hub-library", "hub/a/b", "docker.io", "library/a/b"},
		{"hub organisation outside library/*", []Rule{hub}, "docker.io/bitnami/redis", false, "", "", "", ""},
		{"static source beats wildcard", []Rule{hub, alpine}, "docker.io/alpine", true, "alpine-pinned", "alpine", "docker.io", "library/alpine"},
		{"static source beats wildcard, listed first", []Rule{alpine, hub}, "docker.io/library/alpine", true, "alpine-pinned", "alpine", "docker.io", "library/alpine"},
		{"wildcard beside static", []Rule{hub, alpine}, "docker.io/busybox", true, "hub-library", "hub/busybox", "docker.io", "library/busybox"},
		{"longest source prefix wins", []Rule{mirror, hub}, "docker.io/library/alpine", true, "hub-library", "hub/alpine", "docker.io", "library/alpine"},
		{"longest source prefix wins, listed first", []Rule{hub, mirror}, "docker.io/alpine", true, "hub-library", "hub/alpine", "docker.io", "library/alpine"},
		{"static beats an equally long wildcard", []Rule{aWild, zStatic}, "docker.io/a", true, "z-static", "a", "docker.io", "library/a"},
		{"longest source prefix wins regardless of names", []Rule{aMirror, zLibrary}, "docker.io/library/alpine", true, "z-library", "lib/alpine", "docker.io", "library/alpine"},
		{"shorter source prefix outside the longer", []Rule{mirror, hub}, "docker.io/bitnami/redis", true, "hub-mirror", "mirror/bitnami/redis", "docker.io", "bitnami/redis"},
		{"local name owned by a static rule", []Rule{hub, redis}, "docker.io/library/redis", false, "", "", "", ""},
		{"local name owned by a static rule, one-segment", []Rule{hub, redis}, "docker.io/redis", false, "", "", "", ""},
		{"local name owned by a static rule, a broader rule serves it", []Rule{hub, redis, mirror}, "docker.io/library/redis", true, "hub-mirror", "mirror/library/redis", "docker.io", "library/redis"},
		{"the static rule's own source", []Rule{hub, redis}, "docker.io/bitnami/redis", true, "bitnami-redis", "hub/redis", "docker.io", "bitnami/redis"},
		{"local name inside a nested wildcard target", []Rule{hub, special}, "docker.io/library/special/x", false, "", "", "", ""},
		{"the nested wildcard's own source", []Rule{hub, special}, "docker.io/special/x", true, "hub-special", "hub/special/x", "docker.io", "special/x"},
		{"other registry", []Rule{gh}, "ghcr.io/org/app", true, "ghcr-org", "gh/app", "ghcr.io", "org/app"},
		{"no library/ outside the hub", []Rule{gh}, "ghcr.io/app", false, "", "", "", ""},
		{"wildcard prefix alone", []Rule{gh}, "ghcr.io/org", false, "", "", "", ""},
		{"host with port", []Rule{local}, "localhost:5000/team/app", true, "local-team", "team/app", "localhost:5000", "team/app"},
		{"unknown host", []Rule{hub, mirror, alpine, gh}, "quay.io/org/app", false, "", "", "", ""},
		{"no path", []Rule{hub, mirror}, "docker.io", false, "", "", "", ""},
		{"no rules", nil, "docker.io/alpine", false, "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rs, err := NewRuleSet(tt.rules)
			if err != nil {
				t.Fatal(err)
			}
			m, local, ok := rs.MatchSource(tt.source)
			if ok != tt.wantOK {
				t.Fatalf("MatchSource(%q) ok = %v, want %v (%+v, %q)", tt.source, ok, tt.wantOK, m, local)
			}
			if m.Rule.Name != tt.wantRule || local != tt.wantLocal || m.Host != tt.wantHost || m.Upstream != tt.wantUpstream {
				t.Errorf("MatchSource(%q) = rule %q local %q host %q upstream %q, want rule %q local %q host %q upstream %q",
					tt.source, m.Rule.Name, local, m.Host, m.Upstream, tt.wantRule, tt.wantLocal, tt.wantHost, tt.wantUpstream)
			}
			if !ok {
				return
			}
			// Mirror mode hands the local name to the pull path: it must
			// resolve back to the same rule and upstream repository.
			back, ok := rs.Match(local)
			if !ok || back.Rule.Name != m.Rule.Name || back.Host != m.Host || back.Upstream != m.Upstream {
				t.Errorf("Match(%q) = %+v, %v; want rule %q host %q upstream %q", local, back, ok, m.Rule.Name, m.Host, m.Upstream)
			}
		})
	}
}

func TestRuleConflicts(t *testing.T) {
	t.Parallel()
	ubuntu := Rule{Name: "ubuntu-rule", Source: "docker.io/library/ubuntu", Target: "ubuntu"}
	hub := Rule{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}
	gh := Rule{Name: "ghcr-org", Source: "ghcr.io/org/*", Target: "gh/*"}
	tests := []struct {
		name      string
		existing  []Rule
		candidate Rule
		wantRule  string // the existing rule named in the conflict; "" when allowed
	}{
		{"same name", []Rule{ubuntu}, Rule{Name: "ubuntu-rule", Source: "ghcr.io/org/other", Target: "other"}, "ubuntu-rule"},
		{"same static target", []Rule{ubuntu}, Rule{Name: "ubuntu-ghcr", Source: "ghcr.io/org/ubuntu", Target: "ubuntu"}, "ubuntu-rule"},
		{"same wildcard target", []Rule{hub}, Rule{Name: "hub-ghcr", Source: "ghcr.io/org/*", Target: "hub/*"}, "hub-library"},
		{"same static source", []Rule{ubuntu}, Rule{Name: "ubuntu-again", Source: "docker.io/library/ubuntu", Target: "ubuntu2"}, "ubuntu-rule"},
		{"same static source after normalising", []Rule{ubuntu}, Rule{Name: "ubuntu-again", Source: "docker.io/ubuntu", Target: "ubuntu2"}, "ubuntu-rule"},
		{"same static source through an alias", []Rule{ubuntu}, Rule{Name: "ubuntu-again", Source: "index.docker.io/library/ubuntu", Target: "ubuntu2"}, "ubuntu-rule"},
		{"same wildcard source", []Rule{hub}, Rule{Name: "hub-again", Source: "docker.io/library/*", Target: "lib/*"}, "hub-library"},
		{"same wildcard source through an alias", []Rule{hub}, Rule{Name: "hub-again", Source: "registry-1.docker.io/library/*", Target: "lib/*"}, "hub-library"},
		{"names the rule collided with", []Rule{ubuntu, hub, gh}, Rule{Name: "gh-again", Source: "ghcr.io/org/*", Target: "gh2/*"}, "ghcr-org"},

		{"nested wildcard targets", []Rule{hub}, Rule{Name: "hub-special", Source: "ghcr.io/special/*", Target: "hub/special/*"}, ""},
		{"nested wildcard sources", []Rule{hub}, Rule{Name: "hub-mirror", Source: "docker.io/*", Target: "mirror/*"}, ""},
		{"static target inside wildcard space", []Rule{hub}, Rule{Name: "nginx-pinned", Source: "docker.io/bitnami/nginx", Target: "hub/nginx"}, ""},
		{"static source inside wildcard space", []Rule{hub}, Rule{Name: "nginx-direct", Source: "docker.io/library/nginx", Target: "nginx"}, ""},
		{"static target equal to wildcard prefix", []Rule{hub}, Rule{Name: "hub-static", Source: "ghcr.io/org/hub", Target: "hub"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			existing, err := NewRuleSet(tt.existing)
			if err != nil {
				t.Fatal(err)
			}
			candidate, err := Normalize(tt.candidate)
			if err != nil {
				t.Fatal(err)
			}
			checkErr := existing.Check(candidate, "")
			_, setErr := NewRuleSet(append(append([]Rule(nil), tt.existing...), tt.candidate))
			for how, err := range map[string]error{"Check": checkErr, "NewRuleSet": setErr} {
				if tt.wantRule == "" {
					if err != nil {
						t.Errorf("%s: %v, want the rule allowed", how, err)
					}
					continue
				}
				var ce *ConflictError
				if !errors.As(err, &ce) {
					t.Errorf("%s: %v, want a *ConflictError", how, err)
					continue
				}
				if ce.Rule != tt.wantRule {
					t.Errorf("%s: conflict names rule %q, want %q (%v)", how, ce.Rule, tt.wantRule, err)
				}
			}
		})
	}
}

func TestRuleSetRefusesInvalidRule(t *testing.T) {
	t.Parallel()
	_, err := NewRuleSet([]Rule{validRule, {Name: "bad-target", Source: "ghcr.io/org/app", Target: "App"}})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "targetRepository" {
		t.Fatalf("NewRuleSet = %v, want a *FieldError on targetRepository", err)
	}
	if !strings.Contains(err.Error(), "bad-target") {
		t.Errorf("error %q does not name the rule", err)
	}
}

func TestRuleSetMaxRules(t *testing.T) {
	t.Parallel()
	rules := make([]Rule, MaxRules+1)
	for i := range rules {
		rules[i] = Rule{Name: fmt.Sprintf("rule-%04d", i), Source: fmt.Sprintf("docker.io/team/app%d", i), Target: fmt.Sprintf("app%d", i)}
	}
	rs, err := NewRuleSet(rules[:MaxRules])
	if err != nil {
		t.Fatalf("NewRuleSet(%d rules): %v", MaxRules, err)
	}
	if got := len(rs.Rules()); got != MaxRules {
		t.Errorf("%d rules, want %d", got, MaxRules)
	}
	if _, err := NewRuleSet(rules); err == nil {
		t.Errorf("NewRuleSet(%d rules) succeeded", len(rules))
	}

	extra, err := Normalize(rules[MaxRules])
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Check(extra, ""); !errors.Is(err, ErrTooManyRules) {
		t.Errorf("Check(rule %d) = %v, want ErrTooManyRules", MaxRules+1, err)
	}
	// Replacing a rule keeps the count.
	if err := rs.Check(withName(extra, "rule-0000"), "rule-0000"); err != nil {
		t.Errorf("Check(replacement of rule-0000) = %v", err)
	}
}

func withName(r Rule, name string) Rule {
	r.Name = name
	return r
}

func TestRuleSetRulesAndGet(t *testing.T) {
	t.Parallel()
	rs, err := NewRuleSet([]Rule{
		{Name: "zeta-rule", Source: "ghcr.io/org/*", Target: "gh/*"},
		{Name: "alpha-rule", Source: "docker.io/ubuntu", Target: "ubuntu"},
	})
	if err != nil {
		t.Fatal(err)
	}
	rules := rs.Rules()
	if len(rules) != 2 || rules[0].Name != "alpha-rule" || rules[1].Name != "zeta-rule" {
		t.Fatalf("Rules() = %+v, want alpha-rule then zeta-rule", rules)
	}
	rules[0].Name = "changed"
	if again := rs.Rules(); again[0].Name != "alpha-rule" {
		t.Errorf("Rules() shares its slice with the set: %+v", again)
	}
	r, ok := rs.Get("alpha-rule")
	if !ok || r.Source != "docker.io/library/ubuntu" {
		t.Errorf("Get(alpha-rule) = %+v, %v; want the normalised rule", r, ok)
	}
	if r, ok := rs.Get("missing"); ok {
		t.Errorf("Get(missing) = %+v, true", r)
	}
}

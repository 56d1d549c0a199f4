package cache

import (
	"errors"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/storage"
)

// Fuzz targets of the names a request or a rule carries: the reference
// grammar, rule normalisation and matching, and routing. Each asserts the
// property the rest of regcache relies on, not only that nothing panics:
// a name that passes reaches no upstream repository outside the rule that
// matched it.

// FuzzReferenceGrammar holds ValidRepository, ValidTag and ValidHost to
// grammars written out by hand, and checks what parsePath and the puller
// rely on: a tag is never mistaken for a digest, a digest the store accepts
// is always taken for one, and a valid host stays the host of an URL built
// from it.
func FuzzReferenceGrammar(f *testing.F) {
	for _, s := range []string{
		"ubuntu", "library/ubuntu", "hub/library/ubuntu", "a", "a.b", "a_b", "a__b", "a---b",
		"a..b", "a._b", "a___b", "a/", "/a", "a//b", "a/../b", "..", ".", "A", "a:b", "a@b",
		"latest", "_tag", ".tag", "-tag", "v1.2.3-rc.1_x", strings.Repeat("t", 128), strings.Repeat("t", 129),
		strings.Repeat("a/", 127) + "a", strings.Repeat("a/", 128) + "a",
		"sha256:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("AB", 32), "sha512:abc",
		"docker.io", "localhost:5000", "[::1]:5000", "registry.example.com:65535", "a_b.io", "-a.io",
		"host/path", "user@host", "host:port", "host:123456", "[::1", "a.io#x", "a.io?x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidRepository(s), refRepository(s); got != want {
			t.Fatalf("ValidRepository(%q) = %v, want %v", s, got, want)
		}
		// The grammars as the distribution spec writes them.
		if got, want := ValidRepository(s), len(s) <= 255 && specRepository.MatchString(s); got != want {
			t.Fatalf("ValidRepository(%q) = %v, the spec's expression says %v", s, got, want)
		}
		if got, want := ValidTag(s), specTag.MatchString(s); got != want {
			t.Fatalf("ValidTag(%q) = %v, the spec's expression says %v", s, got, want)
		}
		if ValidRepository(s) {
			for _, seg := range strings.Split(s, "/") {
				if seg == "" || seg == "." || seg == ".." {
					t.Fatalf("ValidRepository(%q) accepted a %q segment", s, seg)
				}
			}
		}
		if got, want := ValidTag(s), refTag(s); got != want {
			t.Fatalf("ValidTag(%q) = %v, want %v", s, got, want)
		}
		if ValidTag(s) && IsDigest(s) {
			t.Fatalf("%q is both a valid tag and a digest", s)
		}
		if _, err := storage.ParseDigest(s); err == nil && !IsDigest(s) {
			t.Fatalf("%q is a valid digest that IsDigest takes for a tag", s)
		}
		if ValidHost(s) {
			u, err := url.Parse("https://" + s + "/v2/")
			if err != nil {
				t.Fatalf("ValidHost(%q), but https://%s/v2/ is no URL: %v", s, s, err)
			}
			if u.Host != s || u.Path != "/v2/" || u.User != nil {
				t.Fatalf("ValidHost(%q), but https://%s/v2/ parses to host %q path %q", s, s, u.Host, u.Path)
			}
			if c := CanonicalHost(s); !ValidHost(c) || CanonicalHost(c) != c {
				t.Fatalf("CanonicalHost(%q) = %q: not a valid, canonical host", s, c)
			}
		}
	})
}

var (
	specRepository = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	specTag        = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// refRepository is the OCI repository grammar written out by hand: at most
// 255 bytes of '/'-separated components, each a run of [a-z0-9] joined by
// exactly ".", "_", "__" or one or more "-".
func refRepository(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for _, comp := range strings.Split(s, "/") {
		if comp == "" || !isLowerAlnum(comp[0]) || !isLowerAlnum(comp[len(comp)-1]) {
			return false
		}
		for i := 0; i < len(comp); {
			if isLowerAlnum(comp[i]) {
				i++
				continue
			}
			j := i
			for j < len(comp) && !isLowerAlnum(comp[j]) {
				j++
			}
			sep := comp[i:j]
			if sep != "." && sep != "_" && sep != "__" && strings.Trim(sep, "-") != "" {
				return false
			}
			i = j
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') }

// refTag is the OCI tag grammar written out by hand:
// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func refTag(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		word := isLowerAlnum(c) || (c >= 'A' && c <= 'Z') || c == '_'
		if !word && (i == 0 || (c != '.' && c != '-')) {
			return false
		}
	}
	return true
}

// fuzzRuleSet is a rule set with every kind of overlap the rules allow: a
// static target inside a wildcard's namespace, nested wildcard targets, a
// catch-all source beside a narrower one, a same-named mirror and a host
// with a port.
var fuzzRuleSet = []Rule{
	{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"},
	{Name: "hub-bitnami-redis", Source: "docker.io/bitnami/redis", Target: "hub/redis"},
	{Name: "hub-special", Source: "docker.io/special/*", Target: "hub/special/*"},
	{Name: "hub-everything", Source: "docker.io/*", Target: "dockerhub/*"},
	{Name: "ghcr-app", Source: "ghcr.io/org/app", Target: "app"},
	{Name: "quay-mirror", Source: "quay.io/*", Target: "quay.io/*"},
	{Name: "private-team", Source: "registry.example.com:5000/team/*", Target: "team/*"},
}

func mustRuleSet(t testing.TB, rules []Rule) *RuleSet {
	t.Helper()
	rs, err := NewRuleSet(rules)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// checkUnderRule fails unless m names an upstream repository inside its
// rule's source: the source itself for a static rule, a valid repository
// strictly under the source prefix for a wildcard rule.
func checkUnderRule(t *testing.T, what string, m Match) {
	t.Helper()
	full := m.Host + "/" + m.Upstream
	if !ValidRepository(m.Upstream) {
		t.Fatalf("%s: upstream repository %q breaks the repository grammar", what, m.Upstream)
	}
	if !m.Rule.Wildcard() {
		if full != m.Rule.Source {
			t.Fatalf("%s: static rule %s (%s) reaches %s", what, m.Rule.Name, m.Rule.Source, full)
		}
		return
	}
	if rest, ok := strings.CutPrefix(full, prefix(m.Rule.Source)); !ok || rest == "" {
		t.Fatalf("%s: wildcard rule %s (%s) reaches %s, outside its source", what, m.Rule.Name, m.Rule.Source, full)
	}
}

// FuzzRuleMatch: Match and MatchSource reach only repositories inside the
// matched rule's source, pick the rule the documented precedence names,
// and agree with each other: the local name MatchSource gives resolves,
// through Match, to the very upstream repository it was asked for (or a
// client asking for one image through ns or a path-prefixed mirror would
// be served another).
func FuzzRuleMatch(f *testing.F) {
	for _, s := range []string{
		"hub/alpine", "hub/redis", "hub/special/x", "hub/special", "dockerhub/library/alpine", "dockerhub/alpine",
		"app", "quay.io/org/x", "team/tool", "hub/../private/secret", "hub/", "hub", "hub//x", "hub/x/",
		"docker.io/library/redis", "docker.io/bitnami/redis", "docker.io/library/special/x", "docker.io/redis",
		"index.docker.io/library/alpine", "Docker.IO/library/alpine", "ghcr.io/org/app", "quay.io/org/x",
		"registry.example.com:5000/team/tool", "docker.io/library/..", "docker.io/library/../private/secret",
	} {
		f.Add(s)
	}
	rs := mustRuleSet(f, fuzzRuleSet)
	f.Fuzz(func(t *testing.T, s string) {
		if m, ok := rs.Match(s); ok {
			if !ValidRepository(s) {
				t.Fatalf("Match(%q) matched a name outside the repository grammar", s)
			}
			checkUnderRule(t, "Match("+s+")", m)
			if static, isStatic := rs.static[s]; isStatic && m.Rule != static {
				t.Fatalf("Match(%q) = rule %s, want the static rule %s", s, m.Rule.Name, static.Name)
			}
			if m.Rule.Wildcard() {
				if !strings.HasPrefix(s, prefix(m.Rule.Target)) {
					t.Fatalf("Match(%q) = rule %s, whose target %s does not cover it", s, m.Rule.Name, m.Rule.Target)
				}
				for _, r := range rs.wildcard {
					if len(r.Target) > len(m.Rule.Target) && strings.HasPrefix(s, prefix(r.Target)) && len(s) > len(prefix(r.Target)) {
						t.Fatalf("Match(%q) = rule %s, but %s has a longer target prefix", s, m.Rule.Name, r.Name)
					}
				}
			}
		}
		if m, local, ok := rs.MatchSource(s); ok {
			checkUnderRule(t, "MatchSource("+s+")", m)
			if !ValidRepository(local) {
				t.Fatalf("MatchSource(%q) gives local name %q outside the repository grammar", s, local)
			}
			back, ok := rs.Match(local)
			if !ok || back.Rule.Name != m.Rule.Name || back.Host != m.Host || back.Upstream != m.Upstream {
				t.Fatalf("MatchSource(%q) = %s/%s (rule %s) as %q, but %q is served from %s/%s (rule %s, matched %v)",
					s, m.Host, m.Upstream, m.Rule.Name, local, local, back.Host, back.Upstream, back.Rule.Name, ok)
			}
		}
	})
}

// FuzzNormalize: Normalize refuses with a FieldError or returns a rule that
// is already normal (idempotent), that NewRuleSet accepts, and whose
// matching goes both ways (its target reaches its source and back).
func FuzzNormalize(f *testing.F) {
	for _, r := range []Rule{
		validRule, fuzzRuleSet[0], fuzzRuleSet[2], fuzzRuleSet[3], fuzzRuleSet[6],
		{Name: "hub-alias", Source: "index.docker.io/ubuntu", Target: "ubuntu", TagTTL: "90m"},
		{Name: "hub-upper", Source: "Registry-1.Docker.IO/library/*", Target: "hub/*", TagTTL: "0s"},
		{Name: "with-ttl", Source: "ghcr.io/x/y", Target: "y", TagTTL: "1h0m0s"},
		{Name: "ipv6-host", Source: "[::1]:5000/x/*", Target: "v6/*"},
		{Name: "bad-escape", Source: "docker.io/library/..", Target: "hub/*"},
		{Name: "tag-in-source", Source: "localhost:5000/foo:1", Target: "foo"},
		{Name: "only-star", Source: "docker.io/*", Target: "docker.io/*", TagTTL: "-1s"},
	} {
		f.Add(r.Name, r.Source, r.Target, r.CredentialSet, r.TagTTL)
	}
	f.Fuzz(func(t *testing.T, name, source, target, credSet, ttl string) {
		in := Rule{Name: name, Source: source, Target: target, CredentialSet: credSet, TagTTL: ttl}
		n, err := Normalize(in)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" {
				t.Fatalf("Normalize(%+v): %v, want a FieldError naming the field and the reason", in, err)
			}
			return
		}
		again, err := Normalize(n)
		if err != nil || again != n {
			t.Fatalf("Normalize is not idempotent: %+v -> %+v -> %+v, %v", in, n, again, err)
		}
		if n.Name != name || n.CredentialSet != credSet {
			t.Fatalf("Normalize(%+v) changed the name or credential set: %+v", in, n)
		}
		if n.TagTTL != "" {
			if d, err := time.ParseDuration(n.TagTTL); err != nil || d < 0 || d > MaxTagTTL {
				t.Fatalf("Normalize(%+v) kept tag TTL %q", in, n.TagTTL)
			}
		}
		host, path, _ := strings.Cut(n.Source, "/")
		if !ValidHost(host) || CanonicalHost(host) != host {
			t.Fatalf("Normalize(%+v): source host %q is not a canonical host", in, host)
		}
		if n.Wildcard() != strings.HasSuffix(n.Source, "/*") {
			t.Fatalf("Normalize(%+v) = %+v: one side is a wildcard and the other is not", in, n)
		}
		rs, err := NewRuleSet([]Rule{n})
		if err != nil {
			t.Fatalf("NewRuleSet refuses the normalised rule %+v: %v", n, err)
		}
		local, upstream := n.Target, n.Source
		if n.Wildcard() {
			local, upstream = prefix(n.Target)+"x/y", prefix(n.Source)+"x/y"
		} else if !ValidRepository(path) {
			t.Fatalf("Normalize(%+v): source path %q outside the repository grammar", in, path)
		}
		m, ok := rs.Match(local)
		if !ok || m.Rule != n || m.Host+"/"+m.Upstream != upstream {
			t.Fatalf("rule %+v: Match(%q) = %+v, %v; want %s", n, local, m, ok, upstream)
		}
		checkUnderRule(t, "Match("+local+")", m)
		if _, back, ok := rs.MatchSource(upstream); !ok || back != local {
			t.Fatalf("rule %+v: MatchSource(%q) = %q, %v; want %q", n, upstream, back, ok, local)
		}
	})
}

// FuzzRoute: whatever name and ns a client sends, Route answers a name in
// the repository grammar or an error the client is told about
// (NAME_INVALID, NAME_UNKNOWN), and a name it routes by source (ns, a
// path-prefixed mirror or the default registry) is served from exactly the
// upstream repository the client named: never one outside the rule's
// source, never another rule's.
func FuzzRoute(f *testing.F) {
	for _, s := range []struct {
		name, ns string
		dflt     bool
	}{
		{"library/alpine", "docker.io", false},
		{"alpine", "docker.io", false},
		{"library/redis", "docker.io", false},
		{"library/special/x", "docker.io", false},
		{"org/app", "ghcr.io", false},
		{"team/tool", "registry.example.com:5000", false},
		{"private/secret", "docker.io/library/..", false},
		{"x", "docker.io/library/../_catalog?x=", false},
		{"private/secret", "docker.io%2Flibrary%2F..", false},
		{"library/alpine", "index.docker.io", false},
		{"library/alpine", "DOCKER.IO", false},
		{"library/alpine", "[::1]:5000", false},
		{"library/alpine", "::1", false},
		{"library/alpine", "docker.io:443", false},
		{"docker.io/library/alpine", "", false},
		{"docker.io/library/redis", "", false},
		{"docker.io/library/../private/secret", "", false},
		{"library/redis", "", true},
		{"library/nginx", "", true},
		{"hub/alpine", "", false},
		{"hub/redis", "", false},
		{"lab/tool", "", false},
	} {
		f.Add(s.name, s.ns, s.dflt)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := NewStore(f.Context(), newRuleRecords(), Anonymous{}, fuzzRuleSet, log)
	if err != nil {
		f.Fatal(err)
	}
	eps, err := NewEndpoints(nil)
	if err != nil {
		f.Fatal(err)
	}
	pullers := map[bool]*Puller{
		false: NewPuller(store, eps, Anonymous{}, nil, nil, log, Options{}),
		true:  NewPuller(store, eps, Anonymous{}, nil, nil, log, Options{DefaultRegistry: DockerHub}),
	}
	rs := store.Snapshot()
	f.Fuzz(func(t *testing.T, name, ns string, dflt bool) {
		local, err := pullers[dflt].Route(t.Context(), name, ns)
		if err != nil {
			if !errors.Is(err, ErrNameInvalid) && !errors.Is(err, ErrNameUnknown) {
				t.Fatalf("Route(%q, ns=%q): %v, want NAME_INVALID or NAME_UNKNOWN", name, ns, err)
			}
			if ns != "" && !ValidHost(ns) && !errors.Is(err, ErrNameInvalid) {
				t.Fatalf("Route(%q, ns=%q): %v; an ns that is not a host must be NAME_INVALID", name, ns, err)
			}
			return
		}
		if !ValidRepository(local) {
			t.Fatalf("Route(%q, ns=%q) = %q, outside the repository grammar", name, ns, local)
		}
		if ns != "" && !ValidHost(ns) {
			t.Fatalf("Route(%q, ns=%q) = %q: routed by an ns that is not a registry host", name, ns, local)
		}
		// What the client asked for, as a source repository, when it named
		// one (by ns, or a path starting with a registry host, or through
		// the default registry).
		var asked []string
		switch first, _, _ := strings.Cut(name, "/"); {
		case ns != "":
			asked = []string{ns + "/" + name}
		case local == name:
			// Served under its own name: a rule target or a local repository.
			if m, ok := rs.Match(local); ok {
				checkUnderRule(t, "Route("+name+")", m)
			}
			return
		case isHost(first):
			asked = []string{name}
		}
		if dflt {
			asked = append(asked, DockerHub+"/"+name)
		}
		m, ok := rs.Match(local)
		if !ok {
			t.Fatalf("Route(%q, ns=%q) = %q, which no rule serves", name, ns, local)
		}
		checkUnderRule(t, "Route("+name+", ns="+ns+") -> "+local, m)
		for _, a := range asked {
			host, path, _ := strings.Cut(a, "/")
			host = CanonicalHost(host)
			if m.Host == host && m.Upstream == hubPath(host, path) {
				return
			}
		}
		t.Fatalf("Route(%q, ns=%q) = %q, served from %s/%s (rule %s); the client asked for %q", name, ns, local, m.Host, m.Upstream, m.Rule.Name, asked)
	})
}

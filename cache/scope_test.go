package cache

import (
	"errors"
	"io"
	"log/slog"
	"testing"
)

// No name outside the repository grammar matches a rule, on either side:
// a request can never reach an upstream repository outside a rule's source.
func TestMatchStaysInScope(t *testing.T) {
	t.Parallel()
	rs, err := NewRuleSet([]Rule{
		{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"},
		{Name: "ghcr-org", Source: "ghcr.io/org/*", Target: "ghcr.io/org/*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"hub/..", "hub/../private/secret", "hub/./x", "hub//x", "hub/x/", "hub/X", "hub/_catalog?x=", "ghcr.io/org/../other"} {
		if m, ok := rs.Match(repo); ok {
			t.Errorf("Match(%q) = %+v; want no match", repo, m)
		}
	}
	for _, src := range []string{"docker.io/library/../private/secret", "docker.io/library/./x", "docker.io/library//x", "docker.io/library/x/",
		"docker.io/library/../_catalog?x=", "docker.io:443/library/x", "ghcr.io/org/../other", "docker.io/library/%2e%2e/x"} {
		if m, local, ok := rs.MatchSource(src); ok {
			t.Errorf("MatchSource(%q) = %+v, %q; want no match", src, m, local)
		}
	}
	if _, local, ok := rs.MatchSource("docker.io/library/app"); !ok || local != "hub/app" {
		t.Errorf("MatchSource(docker.io/library/app) = %q, %v; want hub/app", local, ok)
	}
}

// containerd's ns parameter is a registry host, nothing else.
func TestRouteRefusesBadNames(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := NewStore(t.Context(), newRuleRecords(), Anonymous{}, []Rule{{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	eps, _ := NewEndpoints(nil)
	p := NewPuller(store, eps, Anonymous{}, nil, nil, log, Options{DefaultRegistry: "docker.io"})
	for _, tc := range []struct{ name, ns string }{
		{"private/secret", "docker.io/library/.."},
		{"app", "docker.io/library"},
		{"app", "docker.io/"},
		{"app", ".."},
		{"app", "docker.io/library/../_catalog?x="},
		{"app", "https://docker.io"},
		{"../app", ""},
		{"hub/../x", ""},
		{"library/../private", ""},
	} {
		if got, err := p.Route(t.Context(), tc.name, tc.ns); !errors.Is(err, ErrNameInvalid) {
			t.Errorf("Route(%q, ns=%q) = %q, %v; want ErrNameInvalid", tc.name, tc.ns, got, err)
		}
	}
	if got, err := p.Route(t.Context(), "library/app", "docker.io"); err != nil || got != "hub/app" {
		t.Errorf("Route(library/app, ns=docker.io) = %q, %v; want hub/app", got, err)
	}
}

package cache

import (
	"errors"
	"io"
	"log/slog"
	"strings"
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

// Rules may name only allowed upstreams: the well-known registries, those
// given an endpoint and those the operator allowed.
func TestAllowedUpstreams(t *testing.T) {
	t.Parallel()
	eps, err := NewEndpoints(map[string]string{"mirror.internal:5000": "http://127.0.0.1:5001"}, "registry.corp.example", "*.apps.example")
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"docker.io": true, "index.docker.io": true, "ghcr.io": true, "us.gcr.io": true, "europe-docker.pkg.dev": true,
		"myreg.azurecr.io": true, "mirror.internal:5000": true, "registry.corp.example": true, "a.apps.example": true, "b.c.apps.example": true,
		"attacker.example": false, "apps.example": false, "mirror.internal": false, "registry.corp.example:444": false,
		"evilgcr.io": false, "127.0.0.1:5001": false, "gcr.io.attacker.example": false,
	} {
		err := eps.Allowed("loginServer", host)
		if (err == nil) != want {
			t.Errorf("Allowed(%q) = %v, want allowed %v", host, err, want)
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "loginServer" || !strings.Contains(fe.Reason, "allowedUpstreams")) {
			t.Errorf("Allowed(%q) error %v does not name the field and how to allow it", host, err)
		}
	}
	for _, bad := range []string{"*.com", "https://x.example", "x.example/path", "*"} {
		if _, err := NewEndpoints(nil, bad); err == nil {
			t.Errorf("NewEndpoints accepted allowed upstream %q", bad)
		}
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	records := newRuleRecords()
	store, err := NewStore(t.Context(), records, Anonymous{}, nil, log, AllowedUpstreams(eps))
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Create(t.Context(), Rule{Name: "evil-rule", Source: "attacker.example/x", Target: "x"})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "sourceRepository" || fe.Value != "attacker.example/x" {
		t.Fatalf("rule for a host not allowed: %v, want a FieldError on sourceRepository", err)
	}
	if _, err := store.Create(t.Context(), Rule{Name: "corp-rule", Source: "registry.corp.example/team/*", Target: "corp/*"}); err != nil {
		t.Fatalf("rule for an allowed host: %v", err)
	}
	if _, err := NewStore(t.Context(), newRuleRecords(), Anonymous{}, []Rule{{Name: "evil-rule", Source: "attacker.example/x", Target: "x"}}, log, AllowedUpstreams(eps)); err == nil {
		t.Fatalf("a config rule for a host not allowed was accepted")
	}
	// A stored rule whose upstream is no longer allowed is skipped at start.
	records.PutRecord(t.Context(), recordKind, "old-rule", []byte(`{"name":"old-rule","sourceRepository":"gone.example/x","targetRepository":"gone"}`))
	reloaded, err := NewStore(t.Context(), records, Anonymous{}, nil, log, AllowedUpstreams(eps))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reloaded.Get("old-rule"); err == nil {
		t.Errorf("a stored rule for a host no longer allowed was loaded")
	}
	if _, err := reloaded.Get("corp-rule"); err != nil {
		t.Errorf("stored allowed rule lost: %v", err)
	}
}

package cache

import (
	"errors"
	"io"
	"log/slog"
	"testing"
)

func TestRoute(t *testing.T) {
	t.Parallel()
	rules := []Rule{
		{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"},
		{Name: "ghcr-static", Source: "ghcr.io/org/app", Target: "app"},
		{Name: "quay-mirror", Source: "quay.io/*", Target: "quay.io/*"},
		// Owns hub/redis, the name hub-library would give docker.io/library/redis.
		{Name: "bitnami-redis", Source: "docker.io/bitnami/redis", Target: "hub/redis"},
	}
	tests := []struct {
		name, repo, ns, defaultRegistry string
		want                            string
		wantErr                         error
	}{
		{name: "target rule", repo: "hub/nginx", want: "hub/nginx"},
		{name: "static target", repo: "app", want: "app"},
		{name: "containerd ns to wildcard", repo: "library/alpine", ns: "docker.io", want: "hub/alpine"},
		{name: "containerd ns, hub alias", repo: "library/alpine", ns: "index.docker.io", want: "hub/alpine"},
		{name: "containerd ns to static", repo: "org/app", ns: "ghcr.io", want: "app"},
		{name: "containerd ns, uncovered path", repo: "team/tool", ns: "docker.io", wantErr: ErrNameUnknown},
		{name: "containerd unknown ns", repo: "library/alpine", ns: "registry.k8s.io", wantErr: ErrNameUnknown},
		{name: "ns in brackets, no IPv6 address", repo: "library/alpine", ns: "[0]", wantErr: ErrNameInvalid},
		{name: "path-prefixed mirror, same-named target", repo: "quay.io/org/x", want: "quay.io/org/x"},
		{name: "path-prefixed mirror, other target", repo: "docker.io/library/alpine", want: "hub/alpine"},
		{name: "path-prefixed, uncovered host", repo: "gcr.io/x/y", want: "gcr.io/x/y"},
		{name: "registry-mirrors with default registry", repo: "library/nginx", defaultRegistry: "docker.io", want: "hub/nginx"},
		{name: "registry-mirrors without default registry", repo: "library/nginx", want: "library/nginx"},
		{name: "default registry, uncovered path stays local", repo: "team/tool", defaultRegistry: "docker.io", want: "team/tool"},
		{name: "local repository", repo: "lab/tool", want: "lab/tool"},
		// hub/redis serves docker.io/bitnami/redis: a client asking for
		// docker.io/library/redis must not be given that image.
		{name: "containerd ns, local name owned by another rule", repo: "library/redis", ns: "docker.io", wantErr: ErrNameUnknown},
		{name: "containerd ns, the other rule's source", repo: "bitnami/redis", ns: "docker.io", want: "hub/redis"},
		{name: "path-prefixed, local name owned by another rule", repo: "docker.io/library/redis", want: "docker.io/library/redis"},
		{name: "default registry, local name owned by another rule", repo: "library/redis", defaultRegistry: "docker.io", want: "library/redis"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			store, err := NewStore(t.Context(), newRuleRecords(), Anonymous{}, rules, log)
			if err != nil {
				t.Fatal(err)
			}
			eps, _ := NewEndpoints(nil)
			p := NewPuller(store, eps, Anonymous{}, nil, nil, log, Options{DefaultRegistry: tc.defaultRegistry})
			got, err := p.Route(t.Context(), tc.repo, tc.ns)
			if !errors.Is(err, tc.wantErr) || got != tc.want {
				t.Fatalf("Route(%q, ns=%q) = %q, %v; want %q, %v", tc.repo, tc.ns, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

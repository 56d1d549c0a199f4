package cache

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Endpoints maps upstream login servers (docker.io, ghcr.io, ...) to the URL
// regcache talks to. Unlisted servers default to https://<host>, and
// docker.io to https://registry-1.docker.io. Overrides serve a private
// mirror, a chain of caches, or a test upstream over plain HTTP.
//
// It also says which login servers rules and credential sets may name at
// all: the well-known public registries, those given an endpoint, and
// those the operator allowed. An admin token alone cannot point regcache,
// or a credential set's secrets, at an arbitrary host.
type Endpoints struct {
	overrides map[string]*url.URL
	allowed   []string // host or *.domain patterns, besides the well-known ones
}

// WellKnownUpstreams are the public registries rules and credential sets
// may name without configuration: exact hosts, or "*." and a domain for
// every host under it.
func WellKnownUpstreams() []string {
	return []string{
		DockerHub, "ghcr.io", "quay.io", "gcr.io", "*.gcr.io", "*.pkg.dev", "registry.k8s.io",
		"mcr.microsoft.com", "public.ecr.aws", "nvcr.io", "registry.gitlab.com", "*.azurecr.io",
	}
}

// NewEndpoints validates the overrides (login server -> endpoint URL) and
// the extra allowed upstreams (hosts, or "*.example.com" for every host
// under a domain).
func NewEndpoints(overrides map[string]string, allowed ...string) (*Endpoints, error) {
	e := &Endpoints{overrides: map[string]*url.URL{}}
	for host, raw := range overrides {
		if !ValidHost(host) {
			return nil, fmt.Errorf("upstream %q: login server must be a host[:port] such as docker.io or ghcr.io", host)
		}
		u, err := ParseEndpoint(raw)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", host, err)
		}
		e.overrides[CanonicalHost(host)] = u
	}
	for _, a := range allowed {
		if !hostRE.MatchString(strings.TrimPrefix(a, "*.")) || (strings.HasPrefix(a, "*.") && !strings.Contains(a[2:], ".")) {
			return nil, fmt.Errorf("allowedUpstreams %q: want a login server such as registry.example.com[:port], or *.example.com for every host under a domain", a)
		}
		e.allowed = append(e.allowed, CanonicalHost(a))
	}
	return e, nil
}

// Allowed reports whether rules and credential sets may name login server
// host, or returns an error saying why not and how to allow it.
func (e *Endpoints) Allowed(field, host string) error {
	host = CanonicalHost(host)
	if _, ok := e.overrides[host]; ok {
		return nil
	}
	for _, p := range append(WellKnownUpstreams(), e.allowed...) {
		if host == p || (strings.HasPrefix(p, "*.") && strings.HasSuffix(host, p[1:])) {
			return nil
		}
	}
	return &FieldError{field, host, fmt.Sprintf("upstream %s is not allowed: rules and credential sets may name the well-known registries (%s), upstreams given an endpoint (--upstream %s=https://...) and those listed in allowedUpstreams (--allow-upstream %s)",
		host, strings.Join(WellKnownUpstreams(), ", "), host, host)}
}

// ParseEndpoint checks an endpoint URL: http or https, a host, no path,
// query or credentials.
func ParseEndpoint(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", raw, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("endpoint %q: scheme must be http or https, e.g. https://mirror.example.com or http://127.0.0.1:5001", raw)
	case u.Host == "":
		return nil, fmt.Errorf("endpoint %q: missing host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("endpoint %q: must not carry credentials; use a credential set", u.Redacted())
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("endpoint %q: must be scheme://host[:port] with no path", raw)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// Resolve returns the endpoint URL of a login server.
func (e *Endpoints) Resolve(host string) *url.URL {
	host = CanonicalHost(host)
	if u, ok := e.overrides[host]; ok {
		return u
	}
	if host == DockerHub {
		return &url.URL{Scheme: "https", Host: "registry-1.docker.io"}
	}
	return &url.URL{Scheme: "https", Host: host}
}

// String lists the overrides, for the start-up log.
func (e *Endpoints) String() string {
	var parts []string
	for h, u := range e.overrides {
		parts = append(parts, h+"="+u.String())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

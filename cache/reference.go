package cache

import (
	"context"
	"fmt"
	"strings"

	"github.com/regcache/regcache/storage"
)

// ParseReference splits an image reference, "name[:tag|@digest]", into
// the repository name (which may start with a registry host, as
// docker.io/library/app does) and the tag or digest ("latest" when the
// reference has neither).
func ParseReference(ref string) (name, tagOrDigest string, err error) {
	s := strings.TrimSpace(ref)
	if name, d, ok := strings.Cut(s, "@"); ok {
		if _, err := storage.ParseDigest(d); err != nil {
			return "", "", fmt.Errorf("reference %q: %q is not a digest (sha256:<64 lowercase hex>)", ref, d)
		}
		if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
			name = name[:i] // name:tag@digest: the digest wins
		}
		return name, d, checkRefName(ref, name)
	}
	name, tag := s, "latest"
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		name, tag = s[:i], s[i+1:]
	}
	if !ValidTag(tag) {
		return "", "", fmt.Errorf("reference %q: %q is not a valid tag (letters, digits, '_', '.', '-'; at most 128)", ref, tag)
	}
	return name, tag, checkRefName(ref, name)
}

func checkRefName(ref, name string) error {
	repo := name
	if first, rest, ok := strings.Cut(name, "/"); ok && isHost(first) {
		repo = rest
	}
	if name == "" || !ValidRepository(repo) {
		return fmt.Errorf("reference %q: %q is not a repository name (lowercase letters and digits separated by '.', '_', '-' or '/', optionally after a registry host such as docker.io)", ref, name)
	}
	return nil
}

// Router maps requested names to local repositories (Puller.Route).
type Router interface {
	Route(ctx context.Context, name, ns string) (string, error)
}

// RouteReference maps the name of a reference an operator typed to the
// repository that serves it: a repository of this registry (hub/app), or
// an upstream repository (docker.io/library/app) through the rule whose
// source covers it; an upstream name no rule covers is ErrNameUnknown.
func RouteReference(ctx context.Context, r Router, name string) (string, error) {
	repo, err := r.Route(ctx, name, "")
	if err != nil {
		return "", err
	}
	if first, _, ok := strings.Cut(name, "/"); ok && isHost(first) && repo == name {
		return "", fmt.Errorf("%w: %s (no cache rule's source covers it)", ErrNameUnknown, name)
	}
	return repo, nil
}

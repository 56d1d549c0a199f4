package cache

import (
	"fmt"
	"strings"
)

// Local namespaces are repository prefixes reserved for local (pushed)
// repositories. Routing never sends a name inside one upstream (not through
// a default registry, nor as a path-prefixed registry host), and no cache
// rule may target one. They matter with a default registry, which
// otherwise makes every name that no rule's target covers a Docker Hub
// name.

// ParseLocalNamespaces checks a list of local namespaces, each a repository
// name ("lab") or a wildcard ("lab/*"; the same), and returns them in the
// wildcard form.
func ParseLocalNamespaces(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, ns := range list {
		base := strings.TrimSuffix(strings.TrimSpace(ns), "/*")
		if !ValidRepository(base) {
			return nil, &FieldError{"localNamespaces", ns, "must be a repository prefix such as lab or lab/* (lowercase letters and digits separated by '.', '_', '__', '-' or '/')"}
		}
		out = append(out, base+"/*")
	}
	return out, nil
}

// inNamespaces reports whether repo is a namespace's base or lies under it.
func inNamespaces(namespaces []string, repo string) (string, bool) {
	for _, ns := range namespaces {
		base := strings.TrimSuffix(ns, "/*")
		if repo == base || strings.HasPrefix(repo, base+"/") {
			return ns, true
		}
	}
	return "", false
}

// checkLocalNamespaces refuses a rule whose target lies in, or covers, a
// local namespace.
func checkLocalNamespaces(namespaces []string, r Rule) error {
	target := strings.TrimSuffix(r.Target, "/*")
	if ns, ok := inNamespaces(namespaces, target); ok {
		return &FieldError{"targetRepository", r.Target, fmt.Sprintf("lies in the local namespace %s (localNamespaces), which is kept for pushed repositories; choose another target", ns)}
	}
	if r.Wildcard() {
		for _, ns := range namespaces {
			if _, ok := inNamespaces([]string{r.Target}, strings.TrimSuffix(ns, "/*")); ok {
				return &FieldError{"targetRepository", r.Target, fmt.Sprintf("covers the local namespace %s (localNamespaces), which is kept for pushed repositories; choose a narrower target", ns)}
			}
		}
	}
	return nil
}

// SetLocalNamespaces reserves namespaces (as ParseLocalNamespaces returns
// them) for local repositories. A rule of the config file that targets one
// is an error; rules created through the API that do are returned: they
// stay, but never match a name inside a local namespace.
func (s *Store) SetLocalNamespaces(namespaces []string) (shadowed []Rule, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.List() {
		if cerr := checkLocalNamespaces(namespaces, r); cerr != nil {
			if r.Origin == OriginConfig {
				return nil, fmt.Errorf("config file: rule %q: %w", r.Name, cerr)
			}
			shadowed = append(shadowed, r)
		}
	}
	ns := append([]string(nil), namespaces...)
	s.local.Store(&ns)
	return shadowed, nil
}

// localNamespaces returns the reserved namespaces.
func (s *Store) localNamespaces() []string {
	if p := s.local.Load(); p != nil {
		return *p
	}
	return nil
}

// IsLocal reports whether repo lies in a local namespace.
func (s *Store) IsLocal(repo string) bool {
	_, ok := inNamespaces(s.localNamespaces(), repo)
	return ok
}

// Match resolves repo to the rule that caches it, as RuleSet.Match does,
// except that a repository in a local namespace matches no rule.
func (s *Store) Match(repo string) (Match, bool) {
	if s.IsLocal(repo) {
		return Match{}, false
	}
	return s.Snapshot().Match(repo)
}

// Covering returns the name and source repository of the rule that caches
// repo; ok is false for a local repository.
func (s *Store) Covering(repo string) (rule, source string, ok bool) {
	m, ok := s.Match(repo)
	if !ok {
		return "", "", false
	}
	return m.Rule.Name, m.Host + "/" + m.Upstream, true
}

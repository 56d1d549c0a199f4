package auth

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// AccessRule says who may pull and push the repositories a pattern names.
type AccessRule struct {
	// Repository is a repository name ("lab/app"), a prefix ending in
	// "/*" ("lab/*": every repository under lab/), or "*" (every
	// repository). It names local repositories: what regcache serves, the
	// target of a cache rule, after a containerd ns parameter or a
	// path-prefixed mirror name was routed.
	Repository string `yaml:"repository" json:"repository"`
	// Pull lists the users who may pull; "*" is every user of the
	// htpasswd file.
	Pull []string `yaml:"pull,omitempty" json:"pull,omitempty"`
	// Push lists the users who may push (and pull); "*" as for Pull.
	Push []string `yaml:"push,omitempty" json:"push,omitempty"`
	// AnonymousPull lets clients that did not log in pull.
	AnonymousPull bool `yaml:"anonymousPull,omitempty" json:"anonymousPull,omitempty"`
}

// AnyUser in a rule's Pull or Push list is every user of the htpasswd file.
const AnyUser = "*"

// DefaultAccess applies when no rules are configured: every user may pull
// and push every repository, as distribution's htpasswd authentication
// allows.
var DefaultAccess = []AccessRule{{Repository: "*", Pull: []string{AnyUser}, Push: []string{AnyUser}}}

// Rules are access rules, matched as cache rules are: an exact name wins
// over a prefix, the longest prefix over shorter ones, and "*" applies
// last. A repository no rule matches may be pulled and pushed by no one.
type Rules struct {
	exact    map[string]*AccessRule
	prefixes []*AccessRule // longest prefix first
	all      *AccessRule
	catalog  []string
}

// patternRE is the grammar of a rule's repository: lowercase path
// components of letters, digits and separators, optionally ending in /*.
var patternRE = regexp.MustCompile(`^[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*(/\*)?$`)

// NewRules validates rules (nil: DefaultAccess). catalog lists who may
// list every repository name (GET /v2/_catalog, scope
// registry:catalog:*); nil means every user when rules is nil (they may
// pull everything anyway) and no one otherwise. Errors name the field as
// "access[i].repository" or "catalog[i]".
func NewRules(rules []AccessRule, catalog []string) (*Rules, error) {
	if catalog == nil && rules == nil {
		catalog = []string{AnyUser}
	}
	if rules == nil {
		rules = DefaultAccess
	}
	rules = slices.Clone(rules) // the Rules keep pointers to their own copy
	r := &Rules{exact: map[string]*AccessRule{}, catalog: catalog}
	seen := map[string]int{}
	for i := range rules {
		rule := &rules[i]
		field := fmt.Sprintf("access[%d]", i)
		p := rule.Repository
		if p != "*" && !patternRE.MatchString(p) {
			return nil, fmt.Errorf("%s.repository %q: want a repository name (lab/app), a prefix ending in /* (lab/*), or * for every repository; lowercase letters, digits, '.', '_', '-' and '/'", field, p)
		}
		if j, dup := seen[p]; dup {
			return nil, fmt.Errorf("%s.repository %q: access[%d] has the same repository; merge the two", field, p, j)
		}
		seen[p] = i
		for _, l := range []struct {
			name  string
			users []string
		}{{"pull", rule.Pull}, {"push", rule.Push}} {
			if err := checkUsers(field+"."+l.name, l.users); err != nil {
				return nil, err
			}
		}
		switch {
		case p == "*":
			r.all = rule
		case strings.HasSuffix(p, "/*"):
			r.prefixes = append(r.prefixes, rule)
		default:
			r.exact[p] = rule
		}
	}
	if err := checkUsers("catalog", catalog); err != nil {
		return nil, err
	}
	slices.SortFunc(r.prefixes, func(a, b *AccessRule) int { return len(b.Repository) - len(a.Repository) })
	return r, nil
}

// checkUsers checks a list of user names.
func checkUsers(field string, users []string) error {
	for i, u := range users {
		if u == "" || (u != AnyUser && strings.ContainsAny(u, " \t:*")) {
			return fmt.Errorf("%s[%d] %q: want a user name of the htpasswd file, or * for every user", field, i, u)
		}
	}
	return nil
}

// match returns the rule that applies to repo, or nil.
func (r *Rules) match(repo string) *AccessRule {
	if rule, ok := r.exact[repo]; ok {
		return rule
	}
	for _, rule := range r.prefixes {
		if strings.HasPrefix(repo, strings.TrimSuffix(rule.Repository, "*")) {
			return rule
		}
	}
	return r.all
}

// Allows reports whether id may do action (pull, push, or * for every
// action) on repo. Push implies pull; what anonymous clients may do,
// everyone may.
func (r *Rules) Allows(id Identity, repo, action string) bool {
	rule := r.match(repo)
	if rule == nil {
		return false
	}
	switch action {
	case ActionPull:
		return rule.AnonymousPull || listed(rule.Pull, id) || listed(rule.Push, id)
	case ActionPush, ActionAll:
		return listed(rule.Push, id)
	}
	return false
}

// MayList reports whether id may list the catalog.
func (r *Rules) MayList(id Identity) bool { return listed(r.catalog, id) }

// Users returns the user names the rules mention (not "*"), to warn of
// names missing from the htpasswd file.
func (r *Rules) Users() []string {
	var names []string
	add := func(users []string) {
		for _, u := range users {
			if u != AnyUser && !slices.Contains(names, u) {
				names = append(names, u)
			}
		}
	}
	for _, rule := range r.exact {
		add(rule.Pull)
		add(rule.Push)
	}
	for _, rule := range append(slices.Clone(r.prefixes), r.all) {
		if rule != nil {
			add(rule.Pull)
			add(rule.Push)
		}
	}
	add(r.catalog)
	slices.Sort(names)
	return names
}

// listed reports whether id is in users.
func listed(users []string, id Identity) bool {
	if id.Anonymous() {
		return false
	}
	return slices.Contains(users, AnyUser) || slices.Contains(users, id.Name)
}

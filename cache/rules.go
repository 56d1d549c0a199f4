// Package cache owns cache rules (validation, matching, overlap), the upstream
// endpoint table and the puller that fetches a miss from the upstream,
// verifies it and stores it.
package cache

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// MaxRules is the number of cache rules a registry may hold.
const MaxRules = 1000

// MaxTagTTL bounds a rule's tag TTL.
const MaxTagTTL = 7 * 24 * time.Hour

// Rule origins.
const (
	OriginAPI    = "api"    // created through the admin API; may be updated and deleted
	OriginConfig = "config" // declared in the config file; read-only through the API
)

// Rule maps an upstream source repository to a local target repository.
// A trailing "/*" on both sides makes a wildcard rule.
type Rule struct {
	Name          string `json:"name" yaml:"name"`
	Source        string `json:"sourceRepository" yaml:"source"`
	Target        string `json:"targetRepository" yaml:"target"`
	CredentialSet string `json:"credentialSetName,omitempty" yaml:"credentialSet"`
	// TagTTL overrides how long a cached tag is served without asking the
	// upstream (a Go duration such as "10m"; "0s": revalidate every pull;
	// "never": keep the first digest fetched until an operator refreshes
	// it; empty: the server default, 5m).
	TagTTL string `json:"tagTTL,omitempty" yaml:"tagTTL"`
	// MaxStale bounds how long a cached tag is served when the upstream
	// cannot be asked (down, failing, rate-limiting): only while the
	// upstream confirmed it within this long (a Go duration; empty:
	// unlimited).
	MaxStale string `json:"maxStale,omitempty" yaml:"maxStale"`
	// DeletedTags says what a cached tag becomes when its upstream answers
	// that it does not exist any more: "serve" (the default: served from
	// the cache until evicted) or "forget" (removed here too).
	DeletedTags string `json:"deletedTags,omitempty" yaml:"deletedTags"`
	Origin      string `json:"origin" yaml:"-"`
}

// TagTTLNever is the tag TTL of a rule that never revalidates its tags.
const TagTTLNever = "never"

// What a rule does with tags deleted upstream (Rule.DeletedTags).
const (
	DeletedTagsServe  = "serve"
	DeletedTagsForget = "forget"
)

// Wildcard reports whether r is a wildcard rule.
func (r Rule) Wildcard() bool { return strings.HasSuffix(r.Target, "/*") }

// prefix returns the repository prefix of a wildcard side ("hub/*" -> "hub/").
func prefix(s string) string { return strings.TrimSuffix(s, "*") }

// FieldError is a validation failure naming the field, the value given and
// what would have been accepted.
type FieldError struct {
	Field  string `json:"field"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// ConflictError reports a rule that collides with an existing one.
type ConflictError struct {
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("conflicts with rule %q: %s", e.Rule, e.Reason)
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9-]{5,50}$`)
	// Registry host, optionally with a port.
	hostRE = regexp.MustCompile(`^(localhost|[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(:[0-9]{1,5})?$`)
)

// ValidRepository reports whether name follows the OCI repository grammar,
// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*,
// in at most 255 bytes. Every request checks its name: it is scanned by
// hand, without a regular expression.
func ValidRepository(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for comp := range strings.SplitSeq(name, "/") {
		if !validComponent(comp) {
			return false
		}
	}
	return true
}

// validComponent reports whether c is runs of [a-z0-9] joined by ".",
// "_", "__" or one or more "-".
func validComponent(c string) bool {
	i := 0
	for {
		start := i
		for i < len(c) && (c[i] >= 'a' && c[i] <= 'z' || c[i] >= '0' && c[i] <= '9') {
			i++
		}
		if i == start {
			return false // empty, or a separator not followed by a run
		}
		if i == len(c) {
			return true
		}
		switch c[i] {
		case '.':
			i++
		case '_':
			i++
			if i < len(c) && c[i] == '_' {
				i++
			}
		case '-':
			for i < len(c) && c[i] == '-' {
				i++
			}
		default:
			return false
		}
	}
}

// NameRule says which names ValidName accepts, for error messages.
const NameRule = "must be 5-50 characters, each a letter, digit or '-'"

// ValidName reports whether name is a valid name for a cache rule or a
// credential set (the managed services' rule).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// ValidHost reports whether h is a registry host[:port]: a DNS name,
// localhost, or an IPv6 address in brackets (which an URL must hold).
func ValidHost(h string) bool {
	if !hostRE.MatchString(h) {
		return false
	}
	if lit, ok := strings.CutPrefix(h, "["); ok {
		ip, err := netip.ParseAddr(lit[:strings.IndexByte(lit, ']')])
		return err == nil && ip.Is6()
	}
	return true
}

// ValidTag reports whether tag follows the OCI tag grammar.
func ValidTag(tag string) bool {
	if tag == "" || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	for i := 0; i < len(tag); i++ {
		switch c := tag[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// DockerHub is the login server name of Docker Hub.
const DockerHub = "docker.io"

// CanonicalHost lowercases a login server name (DNS names are
// case-insensitive) and maps Docker Hub's aliases to docker.io.
func CanonicalHost(h string) string {
	h = strings.ToLower(h)
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return DockerHub
	}
	return h
}

// hubPath gives one-segment Docker Hub paths their implicit "library/", as
// Docker does (docker.io/ubuntu is docker.io/library/ubuntu).
func hubPath(host, path string) string {
	if host == DockerHub && path != "" && !strings.Contains(path, "/") {
		return "library/" + path
	}
	return path
}

// isHost reports whether the first path segment of a reference names a
// registry (as opposed to a Docker Hub namespace such as "library").
func isHost(seg string) bool {
	return seg == "localhost" || strings.ContainsAny(seg, ".:[")
}

// Normalize validates r and returns it in canonical form: Docker Hub aliases
// become docker.io, one-segment Docker Hub paths get "library/", and the
// origin is left as given.
func Normalize(r Rule) (Rule, error) {
	if !ValidName(r.Name) {
		return r, &FieldError{"name", r.Name, NameRule}
	}
	src, err := normaliseSource(r.Source)
	if err != nil {
		return r, err
	}
	r.Source = src
	if err := validateTarget(r.Target); err != nil {
		return r, err
	}
	if err := normaliseFreshness(&r); err != nil {
		return r, err
	}
	if strings.HasSuffix(r.Source, "/*") != r.Wildcard() {
		return r, &FieldError{"targetRepository", r.Target, fmt.Sprintf("source %q and target must both end in /* (a wildcard rule) or neither", r.Source)}
	}
	return r, nil
}

// normaliseFreshness checks and canonicalises the tag TTL, maximum stale
// age and deleted-tags policy of r.
func normaliseFreshness(r *Rule) error {
	if r.TagTTL != "" && r.TagTTL != TagTTLNever {
		d, err := time.ParseDuration(r.TagTTL)
		if err != nil || d < 0 || d > MaxTagTTL {
			return &FieldError{"tagTTL", r.TagTTL, "must be a duration from 0s to 168h, e.g. 30s, 10m or 24h (0s revalidates on every pull), or never (the first digest fetched is kept until regcache cache refresh)"}
		}
		r.TagTTL = d.String()
	}
	if r.MaxStale != "" {
		d, err := time.ParseDuration(r.MaxStale)
		if err != nil || d <= 0 {
			return &FieldError{"maxStale", r.MaxStale, "must be a positive duration such as 1h or 72h (empty: a cached tag is served for as long as the upstream cannot be asked)"}
		}
		r.MaxStale = d.String()
	}
	switch r.DeletedTags {
	case "", DeletedTagsServe:
		r.DeletedTags = ""
	case DeletedTagsForget:
	default:
		return &FieldError{"deletedTags", r.DeletedTags, "must be serve (a tag deleted upstream is served from the cache until evicted; the default) or forget (it is removed here too)"}
	}
	return nil
}

func normaliseSource(s string) (string, error) {
	const field = "sourceRepository"
	if s == "" {
		return "", &FieldError{field, s, "required: a registry host and repository path, e.g. docker.io/library/ubuntu or ghcr.io/org/*"}
	}
	if strings.Contains(s, "://") {
		return "", &FieldError{field, s, "give a registry host and path without a scheme, e.g. docker.io/library/ubuntu"}
	}
	if strings.Contains(s, "@") {
		return "", &FieldError{field, s, "must not include a digest: a rule caches a whole repository, e.g. docker.io/library/ubuntu"}
	}
	host, path, ok := strings.Cut(s, "/")
	if !ok || !isHost(host) {
		return "", &FieldError{field, s, "must start with a registry host (a name with a dot or port, or localhost), e.g. docker.io/" + s}
	}
	if !ValidHost(host) {
		return "", &FieldError{field, s, fmt.Sprintf("registry host %q is not a valid host[:port]", host)}
	}
	if i := strings.LastIndex(path, "/"); strings.Contains(path[i+1:], ":") {
		return "", &FieldError{field, s, "must not include a tag: a rule caches a whole repository, e.g. " + host + "/" + path[:strings.LastIndex(path, ":")]}
	}
	host = CanonicalHost(host)
	wild := strings.HasSuffix(path, "/*") || path == "*"
	repo := strings.TrimPrefix(strings.TrimSuffix("/"+path, "/*"), "/")
	if !wild {
		repo = hubPath(host, repo)
	}
	if strings.Contains(repo, "*") {
		return "", &FieldError{field, s, "a wildcard is allowed only as the whole last segment, e.g. docker.io/library/*"}
	}
	if repo == "" {
		if !wild {
			return "", &FieldError{field, s, "needs a repository path after the registry host"}
		}
		return host + "/*", nil
	}
	if !ValidRepository(repo) {
		return "", &FieldError{field, s, "repository path must be lowercase letters and digits separated by '.', '_', '__', '-' or '/'"}
	}
	if wild {
		return host + "/" + repo + "/*", nil
	}
	return host + "/" + repo, nil
}

func validateTarget(t string) error {
	const field = "targetRepository"
	repo := strings.TrimSuffix(t, "/*")
	if t == "" {
		return &FieldError{field, t, "required: a local repository name such as ubuntu, or hub/* for a wildcard rule"}
	}
	if strings.Contains(repo, "*") {
		return &FieldError{field, t, "a wildcard is allowed only as a trailing /* after a repository prefix, e.g. hub/*"}
	}
	if strings.ContainsAny(repo, ":@") {
		return &FieldError{field, t, "must not include a tag or digest"}
	}
	if !ValidRepository(repo) {
		return &FieldError{field, t, "must be lowercase letters and digits separated by '.', '_', '__', '-' or '/', e.g. ubuntu or hub/library"}
	}
	return nil
}

// checkConflict reports whether candidate collides with existing rule r.
// Two rules may not share a name, a static target or a static source, and
// two wildcard rules may not share a prefix on either side (the request
// would be ambiguous). Nested wildcard prefixes are allowed: the longest wins.
func checkConflict(candidate, r Rule) error {
	switch {
	case candidate.Name == r.Name:
		return &ConflictError{r.Name, "a rule with this name exists"}
	case candidate.Target == r.Target:
		return &ConflictError{r.Name, fmt.Sprintf("it already maps target repository %q (from %s)", r.Target, r.Source)}
	case candidate.Source == r.Source:
		return &ConflictError{r.Name, fmt.Sprintf("it already caches source repository %q (into %s)", r.Source, r.Target)}
	}
	return nil
}

// Match is the result of resolving a local repository name through the rules.
type Match struct {
	Rule Rule
	// Upstream is the source repository on the upstream, without the host
	// (e.g. "library/ubuntu").
	Upstream string
	// Host is the upstream login server (e.g. "docker.io").
	Host string
}

// RuleSet is an immutable, validated set of rules ready for matching.
type RuleSet struct {
	static   map[string]Rule // by target repository
	wildcard []Rule          // sorted by target prefix length, longest first
	bySource []Rule          // every rule, longest source prefix first
	all      []Rule          // sorted by name
	matched  *matchMemo      // Match's answers so far
}

// NewRuleSet validates rules (normalising each) and checks them pairwise for
// conflicts.
func NewRuleSet(rules []Rule) (*RuleSet, error) {
	if len(rules) > MaxRules {
		return nil, fmt.Errorf("%d rules given: at most %d are allowed", len(rules), MaxRules)
	}
	var valid []Rule
	for _, r := range rules {
		n, err := Normalize(r)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.Name, err)
		}
		for _, e := range valid {
			if err := checkConflict(n, e); err != nil {
				return nil, fmt.Errorf("rule %q: %w", n.Name, err)
			}
		}
		valid = append(valid, n)
	}
	return buildRuleSet(valid), nil
}

// buildRuleSet indexes rules that are already normalised and free of
// conflicts.
func buildRuleSet(rules []Rule) *RuleSet {
	rs := &RuleSet{static: map[string]Rule{}, all: append([]Rule(nil), rules...), matched: &matchMemo{m: map[string]memoMatch{}}}
	sort.Slice(rs.all, func(i, j int) bool { return rs.all[i].Name < rs.all[j].Name })
	for _, r := range rs.all {
		if r.Wildcard() {
			rs.wildcard = append(rs.wildcard, r)
		} else {
			rs.static[r.Target] = r
		}
	}
	sort.SliceStable(rs.wildcard, func(i, j int) bool { return len(rs.wildcard[i].Target) > len(rs.wildcard[j].Target) })
	rs.bySource = append([]Rule(nil), rs.all...)
	sort.SliceStable(rs.bySource, func(i, j int) bool {
		if rs.bySource[i].Wildcard() != rs.bySource[j].Wildcard() {
			return !rs.bySource[i].Wildcard()
		}
		return len(rs.bySource[i].Source) > len(rs.bySource[j].Source)
	})
	return rs
}

// Rules returns every rule, sorted by name.
func (rs *RuleSet) Rules() []Rule { return append([]Rule(nil), rs.all...) }

// Get returns the rule with the given name.
func (rs *RuleSet) Get(name string) (Rule, bool) {
	for _, r := range rs.all {
		if r.Name == name {
			return r, true
		}
	}
	return Rule{}, false
}

// Check reports whether candidate (normalised) may join the set; replacing
// names a rule that candidate replaces (an update) and is skipped.
func (rs *RuleSet) Check(candidate Rule, replacing string) error {
	count := 0
	for _, e := range rs.all {
		if e.Name == replacing {
			continue
		}
		count++
		if err := checkConflict(candidate, e); err != nil {
			return err
		}
	}
	if count >= MaxRules {
		return fmt.Errorf("%w: this registry already has %d rules, the maximum", ErrTooManyRules, MaxRules)
	}
	return nil
}

// Match resolves a local repository name to the rule that caches it: a
// static rule with that exact target, else the wildcard rule with the
// longest target prefix.
//
// Both names, the local one and the upstream one, must follow the OCI
// repository grammar: a name with empty, "." or ".." segments never
// matches, so that no request reaches an upstream repository outside the
// rule's source (docker.io/library/../private/x is not under
// docker.io/library/).
func (rs *RuleSet) Match(repo string) (Match, bool) {
	if m, ok := rs.matched.get(repo); ok {
		return m.m, m.ok
	}
	m, ok := rs.match(repo)
	if ValidRepository(repo) {
		rs.matched.put(repo, memoMatch{m, ok})
	}
	return m, ok
}

func (rs *RuleSet) match(repo string) (Match, bool) {
	if !ValidRepository(repo) {
		return Match{}, false
	}
	if r, ok := rs.static[repo]; ok {
		host, path, _ := strings.Cut(r.Source, "/")
		return Match{Rule: r, Host: host, Upstream: path}, true
	}
	for _, r := range rs.wildcard {
		p := prefix(r.Target)
		if rest, ok := strings.CutPrefix(repo, p); ok && rest != "" {
			host, path, _ := strings.Cut(prefix(r.Source)+rest, "/")
			path = hubPath(host, path)
			if !ValidRepository(path) {
				return Match{}, false
			}
			return Match{Rule: r, Host: host, Upstream: path}, true
		}
	}
	return Match{}, false
}

// MatchSource resolves an upstream repository ("docker.io/library/alpine";
// Docker Hub aliases and one-segment paths are normalised) to the rule whose
// source covers it and the local repository it maps to: a static rule with
// that exact source, else the wildcard rule with the longest source prefix
// that can serve it.
//
// The upstream path and the local name must both follow the repository
// grammar (see Match), and the local name must be the wildcard rule's own:
// a static target or a nested wildcard target inside its namespace (hub/redis
// beside hub/*) belongs to another rule, which serves another upstream
// repository under it, so a client asking for docker.io/library/redis would
// be given that image instead.
func (rs *RuleSet) MatchSource(source string) (Match, string, bool) {
	host, path, ok := strings.Cut(source, "/")
	if !ok || !ValidHost(host) {
		return Match{}, "", false
	}
	host = CanonicalHost(host)
	path = hubPath(host, path)
	if !ValidRepository(path) {
		return Match{}, "", false
	}
	full := host + "/" + path
	for _, r := range rs.bySource {
		if !r.Wildcard() {
			if r.Source == full {
				return Match{Rule: r, Host: host, Upstream: path}, r.Target, true
			}
			continue
		}
		if rest, ok := strings.CutPrefix(full, prefix(r.Source)); ok && rest != "" {
			local := prefix(r.Target) + rest
			if !ValidRepository(local) {
				return Match{}, "", false
			}
			if owner, ok := rs.Match(local); !ok || owner.Rule.Name != r.Name {
				continue
			}
			return Match{Rule: r, Host: host, Upstream: path}, local, true
		}
	}
	return Match{}, "", false
}

// matchMemo remembers the answers of a RuleSet's Match: every request
// matches its repository once or twice, and a set has few repositories.
// A set is immutable, so its answers never change.
type matchMemo struct {
	mu sync.RWMutex
	m  map[string]memoMatch
}

type memoMatch struct {
	m  Match
	ok bool
}

// maxMatchMemo bounds the memo; when full it starts over.
const maxMatchMemo = 10_000

func (mm *matchMemo) get(repo string) (memoMatch, bool) {
	mm.mu.RLock()
	v, ok := mm.m[repo]
	mm.mu.RUnlock()
	return v, ok
}

func (mm *matchMemo) put(repo string, v memoMatch) {
	repo = strings.Clone(repo) // often a part of a request's URL
	mm.mu.Lock()
	if len(mm.m) >= maxMatchMemo {
		clear(mm.m)
	}
	mm.m[repo] = v
	mm.mu.Unlock()
}

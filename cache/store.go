package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Records is the persistence the rule store needs (storage.Meta provides it).
type Records interface {
	PutRecord(ctx context.Context, kind, key string, value []byte) error
	DeleteRecord(ctx context.Context, kind, key string) error
	Records(ctx context.Context, kind string) (map[string][]byte, error)
}

// Credentials is the seam to credential sets: which login server a set is
// for, the authenticator for a rule's upstream requests, and feedback when
// the upstream refused what the set handed out.
type Credentials interface {
	// LoginServer returns the login server of the named set; ok is false
	// when no such set exists.
	LoginServer(ctx context.Context, set string) (server string, ok bool, err error)
	// Authenticator returns the upstream credentials of the set ("" means
	// the rule has no set: anonymous).
	Authenticator(ctx context.Context, set string) (authn.Authenticator, error)
	// Refused reports that upstream host answered 401 or 403 to credentials
	// of set. final is false on the first refusal: the set drops any cached
	// secret values so that the next Authenticator call resolves them again
	// (a rotated secret). final is true when freshly resolved values were
	// refused too: the set is unhealthy.
	Refused(set, host string, final bool)
}

// Anonymous is the Credentials of a registry without credential sets: no set
// exists and every upstream request is anonymous.
type Anonymous struct{}

// LoginServer reports that no set exists.
func (Anonymous) LoginServer(context.Context, string) (string, bool, error) { return "", false, nil }

// Authenticator returns anonymous credentials.
func (Anonymous) Authenticator(context.Context, string) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

// Refused does nothing: anonymous requests have nothing to refresh.
func (Anonymous) Refused(string, string, bool) {}

// RecordKind is the kind of the records holding the rules created
// through the admin API.
const RecordKind = "cache-rules"

const recordKind = RecordKind

// Store holds the cache rules: those declared in the config file (read-only)
// and those created through the admin API (persisted). Matching reads an
// immutable snapshot, so requests never wait for an admin change.
type Store struct {
	mu        sync.Mutex // serialises changes
	current   atomic.Pointer[RuleSet]
	records   Records
	creds     Credentials
	upstreams *Endpoints // nil: any upstream
	config    []Rule     // the config file's rules, first in every snapshot
	log       *slog.Logger
	local     atomic.Pointer[[]string] // local namespaces (localns.go)
}

// StoreOption adjusts a Store.
type StoreOption func(*Store)

// AllowedUpstreams limits rule sources to the login servers e allows (see
// Endpoints.Allowed).
func AllowedUpstreams(e *Endpoints) StoreOption { return func(s *Store) { s.upstreams = e } }

// NewStore loads the rules persisted in records on top of the config rules.
// A config rule that is invalid, conflicts with another config rule, or
// names a credential set that does not exist or is for another login
// server is an error; a persisted rule that conflicts with a config rule is skipped and
// logged, so that the server still starts.
func NewStore(ctx context.Context, records Records, creds Credentials, config []Rule, log *slog.Logger, opts ...StoreOption) (*Store, error) {
	config = append([]Rule(nil), config...)
	for i := range config {
		config[i].Origin = OriginConfig
	}
	rs, err := NewRuleSet(config)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	s := &Store{records: records, creds: creds}
	for _, o := range opts {
		o(s)
	}
	for _, r := range rs.Rules() {
		if err := s.checkUpstream(r); err != nil {
			return nil, fmt.Errorf("config file: rule %q: %w", r.Name, err)
		}
		if err := s.checkCredentialSet(ctx, r); err != nil {
			return nil, fmt.Errorf("config file: rule %q: %w", r.Name, err)
		}
	}
	s.config, s.log = rs.Rules(), log
	rules, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	s.current.Store(buildRuleSet(rules))
	return s, nil
}

// Reload reads the persisted rules again and publishes them on top of the
// config rules: another replica sharing the metadata store created,
// changed or deleted some. Persisted rules are applied in name order and a
// rule that conflicts with one applied before it is skipped (and logged),
// so every replica reading the same records ends with the same rules.
func (s *Store) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked(ctx)
}

func (s *Store) reloadLocked(ctx context.Context) error {
	rules, err := s.load(ctx)
	if err != nil {
		return err
	}
	// An unchanged set keeps its snapshot (and the snapshot's memo of
	// matches): most reloads find nothing new.
	next := buildRuleSet(rules)
	if cur := s.current.Load(); cur == nil || !slices.Equal(next.all, cur.all) {
		s.current.Store(next)
	}
	return nil
}

// load returns the config rules followed by the persisted ones that are
// valid and conflict with none before them.
func (s *Store) load(ctx context.Context) ([]Rule, error) {
	stored, err := s.records.Records(ctx, recordKind)
	if err != nil {
		return nil, fmt.Errorf("load cache rules: %w", err)
	}
	names := make([]string, 0, len(stored))
	for n := range stored {
		names = append(names, n)
	}
	sort.Strings(names)
	rules := append([]Rule(nil), s.config...)
	for _, name := range names {
		var r Rule
		err := json.Unmarshal(stored[name], &r)
		r.Origin = OriginAPI
		if err == nil {
			r, err = Normalize(r)
		}
		if err == nil {
			err = s.checkUpstream(r)
		}
		for _, e := range rules {
			if err == nil {
				err = checkConflict(r, e)
			}
		}
		if err == nil && len(rules) >= MaxRules {
			err = fmt.Errorf("%w: %d rules are loaded already", ErrTooManyRules, MaxRules)
		}
		if err != nil {
			s.log.Error("stored cache rule ignored", "rule", name, "err", err)
			continue
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// Endpoint is the URL regcache reaches the upstream of rule r at: the
// endpoint configured for its login server, else https://<host>
// (docker.io: https://registry-1.docker.io).
func (s *Store) Endpoint(r Rule) string {
	host, _, _ := strings.Cut(r.Source, "/")
	e := s.upstreams
	if e == nil {
		e = &Endpoints{}
	}
	return e.Resolve(host).String()
}

// Snapshot returns the current rules for matching.
func (s *Store) Snapshot() *RuleSet { return s.current.Load() }

// List returns every rule, sorted by name.
func (s *Store) List() []Rule { return s.Snapshot().Rules() }

// Get returns the named rule or ErrRuleNotFound.
func (s *Store) Get(name string) (Rule, error) {
	r, ok := s.Snapshot().Get(name)
	if !ok {
		return Rule{}, fmt.Errorf("%w: %q", ErrRuleNotFound, name)
	}
	return r, nil
}

// Create validates and adds a rule.
func (s *Store) Create(ctx context.Context, r Rule) (Rule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Start from what the store holds now: another replica may have
	// changed the rules since the last reload.
	if err := s.reloadLocked(ctx); err != nil {
		return Rule{}, err
	}
	r.Origin = OriginAPI
	n, err := s.validate(ctx, r)
	if err != nil {
		return Rule{}, err
	}
	if err := s.Snapshot().Check(n, ""); err != nil {
		return Rule{}, err
	}
	return n, s.commit(ctx, n, "")
}

// RuleChange is an update of a rule; nil fields stay as they are.
type RuleChange struct {
	// CredentialSet names the new set; "" detaches it (anonymous pulls).
	CredentialSet *string
	// TagTTL is the new tag TTL; "" restores the server default.
	TagTTL *string
	// MaxStale is the new maximum stale age; "" makes it unlimited.
	MaxStale *string
	// DeletedTags is the new deleted-tags policy; "" restores serve.
	DeletedTags *string
}

// Update changes the credential set or the freshness settings of a rule. Source and target
// are fixed for the life of a rule, as with the managed services.
func (s *Store) Update(ctx context.Context, name string, ch RuleChange) (Rule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Start from what the store holds now: another replica may have
	// changed the rules since the last reload.
	if err := s.reloadLocked(ctx); err != nil {
		return Rule{}, err
	}
	old, err := s.Get(name)
	if err != nil {
		return Rule{}, err
	}
	if old.Origin == OriginConfig {
		return Rule{}, fmt.Errorf("%w: edit rule %q in the config file", ErrReadOnly, name)
	}
	if ch.CredentialSet != nil {
		old.CredentialSet = *ch.CredentialSet
	}
	if ch.TagTTL != nil {
		old.TagTTL = *ch.TagTTL
	}
	if ch.MaxStale != nil {
		old.MaxStale = *ch.MaxStale
	}
	if ch.DeletedTags != nil {
		old.DeletedTags = *ch.DeletedTags
	}
	n, err := s.validate(ctx, old)
	if err != nil {
		return Rule{}, err
	}
	return n, s.commit(ctx, n, name)
}

// Delete removes a rule created through the API. Cached content stays in the
// store and remains served from the target repository.
func (s *Store) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Start from what the store holds now: another replica may have
	// changed the rules since the last reload.
	if err := s.reloadLocked(ctx); err != nil {
		return err
	}
	old, err := s.Get(name)
	if err != nil {
		return err
	}
	if old.Origin == OriginConfig {
		return fmt.Errorf("%w: remove rule %q from the config file", ErrReadOnly, name)
	}
	var keep []Rule
	for _, r := range s.List() {
		if r.Name != name {
			keep = append(keep, r)
		}
	}
	if err := s.records.DeleteRecord(ctx, recordKind, name); err != nil {
		return fmt.Errorf("delete cache rule %q: %w", name, err)
	}
	s.current.Store(buildRuleSet(keep))
	return nil
}

func (s *Store) validate(ctx context.Context, r Rule) (Rule, error) {
	n, err := Normalize(r)
	if err != nil {
		return Rule{}, err
	}
	if err := s.checkUpstream(n); err != nil {
		return Rule{}, err
	}
	if err := checkLocalNamespaces(s.localNamespaces(), n); err != nil {
		return Rule{}, err
	}
	return n, s.checkCredentialSet(ctx, n)
}

// checkUpstream checks that the source of the normalised rule n is on an
// allowed login server.
func (s *Store) checkUpstream(n Rule) error {
	if s.upstreams == nil {
		return nil
	}
	host, _, _ := strings.Cut(n.Source, "/")
	if err := s.upstreams.Allowed("sourceRepository", host); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.Value = n.Source
		}
		return err
	}
	return nil
}

// checkCredentialSet checks that the normalised rule n names an existing
// credential set (if any) for the login server of its source.
func (s *Store) checkCredentialSet(ctx context.Context, n Rule) error {
	if n.CredentialSet == "" {
		return nil
	}
	server, ok, err := s.creds.LoginServer(ctx, n.CredentialSet)
	if err != nil {
		return fmt.Errorf("look up credential set %q: %w", n.CredentialSet, err)
	}
	if !ok {
		return &FieldError{"credentialSetName", n.CredentialSet, "no credential set with this name exists; create it first (regcache credential-set create, or credentialSets in the config file) or omit it for anonymous pulls"}
	}
	if host, _, _ := strings.Cut(n.Source, "/"); CanonicalHost(server) != host {
		return &FieldError{"credentialSetName", n.CredentialSet, fmt.Sprintf("the set is for login server %s but the rule's source is on %s; use a set for %s", server, host, host)}
	}
	return nil
}

// commit persists n, which has been checked against the other rules, and
// publishes a new snapshot; replacing names the rule n replaces ("" for a
// new rule).
func (s *Store) commit(ctx context.Context, n Rule, replacing string) error {
	rules := []Rule{n}
	for _, r := range s.List() {
		if r.Name != replacing {
			rules = append(rules, r)
		}
	}
	rs := buildRuleSet(rules)
	raw, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := s.records.PutRecord(ctx, recordKind, n.Name, raw); err != nil {
		return fmt.Errorf("save cache rule %q: %w", n.Name, err)
	}
	s.current.Store(rs)
	return nil
}

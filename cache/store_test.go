package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// ruleRecords is an in-memory Records: a test double of the persistence
// the store is given (storage.Meta in production).
type ruleRecords struct {
	mu        sync.Mutex
	data      map[string]map[string][]byte // kind -> key -> value
	putErr    error                        // returned by PutRecord when set
	deleteErr error                        // returned by DeleteRecord when set
	putDelay  time.Duration                // how long PutRecord takes, to widen race windows
}

func newRuleRecords() *ruleRecords { return &ruleRecords{data: map[string]map[string][]byte{}} }

func (m *ruleRecords) PutRecord(_ context.Context, kind, key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.putErr != nil {
		return m.putErr
	}
	if m.data[kind] == nil {
		m.data[kind] = map[string][]byte{}
	}
	m.data[kind][key] = bytes.Clone(value)
	delay := m.putDelay
	m.mu.Unlock()
	// Sleep outside the lock, as a slow disk would: changes that are not
	// serialised by the store overlap here and lose one another.
	time.Sleep(delay)
	m.mu.Lock()
	return nil
}

func (m *ruleRecords) DeleteRecord(_ context.Context, kind, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.deleteErr != nil {
		return m.deleteErr
	}
	delete(m.data[kind], key)
	return nil
}

func (m *ruleRecords) Records(_ context.Context, kind string) (map[string][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]byte, len(m.data[kind]))
	for k, v := range m.data[kind] {
		out[k] = bytes.Clone(v)
	}
	return out, nil
}

func (m *ruleRecords) fail(put, del error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.putErr, m.deleteErr = put, del
}

// keys returns the persisted rule names, sorted.
func (m *ruleRecords) keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.data[recordKind]))
}

// knownSets is a Credentials in which exactly the listed sets exist.
type knownSets []string

// LoginServer says every known set is for docker.io.
func (k knownSets) LoginServer(_ context.Context, set string) (string, bool, error) {
	return "docker.io", slices.Contains(k, set), nil
}

func (knownSets) Refused(string, string, bool) {}

func (k knownSets) Authenticator(context.Context, string) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

// logBuffer collects what the store logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestStore(t *testing.T, records Records, creds Credentials, config ...Rule) *Store {
	t.Helper()
	s, err := NewStore(t.Context(), records, creds, config, discardLog())
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return s
}

// mustGet returns the named rule or fails the test.
func mustGet(t *testing.T, s *Store, name string) Rule {
	t.Helper()
	r, err := s.Get(name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	return r
}

var (
	hubRuleAPI = Rule{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*"}
	ghRuleAPI  = Rule{Name: "ghcr-org", Source: "ghcr.io/org/*", Target: "gh/*"}
	cfgUbuntu  = Rule{Name: "ubuntu-config", Source: "docker.io/ubuntu", Target: "ubuntu"}
)

func TestStoreRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	s := newTestStore(t, records, knownSets{"hub-creds", "other-creds"})

	in := hubRuleAPI
	in.CredentialSet = "hub-creds"
	in.Origin = OriginConfig // a client cannot make its rule read-only
	created, err := s.Create(ctx, in)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	want := Rule{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*", CredentialSet: "hub-creds", Origin: OriginAPI}
	if created != want {
		t.Fatalf("Create = %+v, want %+v", created, want)
	}
	// A one-segment Docker Hub source is stored normalised.
	ubuntu, err := s.Create(ctx, Rule{Name: "ubuntu-api", Source: "docker.io/ubuntu", Target: "ubuntu"})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if ubuntu.Source != "docker.io/library/ubuntu" || ubuntu.Origin != OriginAPI {
		t.Fatalf("Create = %+v, want source docker.io/library/ubuntu, origin api", ubuntu)
	}
	if got := mustGet(t, s, "hub-library"); got != want {
		t.Errorf("Get = %+v, want %+v", got, want)
	}
	if got := s.List(); !slices.Equal(got, []Rule{want, ubuntu}) {
		t.Errorf("List = %+v, want %+v", got, []Rule{want, ubuntu})
	}
	if m, ok := s.Snapshot().Match("hub/nginx"); !ok || m.Rule != want || m.Upstream != "library/nginx" {
		t.Errorf("Snapshot().Match(hub/nginx) = %+v, %v", m, ok)
	}
	if got := records.keys(); !slices.Equal(got, []string{"hub-library", "ubuntu-api"}) {
		t.Errorf("persisted %q, want hub-library and ubuntu-api", got)
	}

	updated, err := s.Update(ctx, "hub-library", RuleChange{CredentialSet: new("other-creds")})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	want.CredentialSet = "other-creds"
	if updated != want {
		t.Errorf("Update = %+v, want %+v", updated, want)
	}
	if got := mustGet(t, s, "hub-library"); got != want {
		t.Errorf("Get after Update = %+v, want %+v", got, want)
	}
	if m, _ := s.Snapshot().Match("hub/nginx"); m.Rule.CredentialSet != "other-creds" {
		t.Errorf("snapshot still matches %+v after Update", m.Rule)
	}
	if reloaded := newTestStore(t, records, knownSets{}); !slices.Equal(reloaded.List(), s.List()) {
		t.Errorf("reloaded %+v, want %+v", reloaded.List(), s.List())
	}

	if updated, err = s.Update(ctx, "hub-library", RuleChange{CredentialSet: new("")}); err != nil {
		t.Fatalf("Update to no set: %v", err)
	}
	want.CredentialSet = ""
	if updated != want || mustGet(t, s, "hub-library") != want {
		t.Errorf("Update to no set = %+v, Get = %+v, want %+v", updated, mustGet(t, s, "hub-library"), want)
	}
	if reloaded := newTestStore(t, records, knownSets{}); mustGet(t, reloaded, "hub-library") != want {
		t.Errorf("reloaded %+v, want %+v", mustGet(t, reloaded, "hub-library"), want)
	}

	if err := s.Delete(ctx, "hub-library"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get("hub-library"); !errors.Is(err, ErrRuleNotFound) {
		t.Errorf("Get after Delete = %v, want ErrRuleNotFound", err)
	}
	if got := s.List(); !slices.Equal(got, []Rule{ubuntu}) {
		t.Errorf("List after Delete = %+v, want %+v", got, []Rule{ubuntu})
	}
	if m, ok := s.Snapshot().Match("hub/nginx"); ok {
		t.Errorf("deleted rule still matches: %+v", m)
	}
	if got := records.keys(); !slices.Equal(got, []string{"ubuntu-api"}) {
		t.Errorf("persisted %q after Delete, want ubuntu-api", got)
	}
	if reloaded := newTestStore(t, records, knownSets{}); !slices.Equal(reloaded.List(), []Rule{ubuntu}) {
		t.Errorf("reloaded after Delete %+v, want %+v", reloaded.List(), []Rule{ubuntu})
	}
	// The name is free again.
	if _, err := s.Create(ctx, hubRuleAPI); err != nil {
		t.Errorf("Create after Delete: %v", err)
	}
}

func TestStoreRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		creds     Credentials
		op        func(context.Context, *Store) error
		wantField string // a *FieldError on this field, or
		wantRule  string // a *ConflictError naming this rule, or
		wantErr   error  // this sentinel
	}{
		{
			name:  "create with a set that does not exist",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Create(ctx, withSet(ghRuleAPI, "missing-creds"))
				return err
			},
			wantField: "credentialSetName",
		},
		{
			name:  "create with a set when none exist",
			creds: Anonymous{},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Create(ctx, withSet(ghRuleAPI, "hub-creds"))
				return err
			},
			wantField: "credentialSetName",
		},
		{
			name:  "update to a set that does not exist",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Update(ctx, "hub-library", RuleChange{CredentialSet: new("missing-creds")})
				return err
			},
			wantField: "credentialSetName",
		},
		{
			name:  "create an invalid rule",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Create(ctx, Rule{Name: "bad-source", Source: "docker.io/library/ubuntu:22.04", Target: "ubuntu2"})
				return err
			},
			wantField: "sourceRepository",
		},
		{
			name:  "create with a taken name",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Create(ctx, withName(ghRuleAPI, "hub-library"))
				return err
			},
			wantRule: "hub-library",
		},
		{
			name:  "create on a taken wildcard target",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Create(ctx, Rule{Name: "hub-ghcr", Source: "ghcr.io/org/*", Target: "hub/*"})
				return err
			},
			wantRule: "hub-library",
		},
		{
			name:  "create on a taken wildcard source",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Create(ctx, Rule{Name: "hub-again", Source: "docker.io/library/*", Target: "lib/*"})
				return err
			},
			wantRule: "hub-library",
		},
		{
			name:  "create on a config rule's target",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Create(ctx, Rule{Name: "ubuntu-ghcr", Source: "ghcr.io/org/ubuntu", Target: "ubuntu"})
				return err
			},
			wantRule: "ubuntu-config",
		},
		{
			name:  "update a config rule",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Update(ctx, "ubuntu-config", RuleChange{CredentialSet: new("hub-creds")})
				return err
			},
			wantErr: ErrReadOnly,
		},
		{
			name:    "delete a config rule",
			creds:   knownSets{"hub-creds"},
			op:      func(ctx context.Context, s *Store) error { return s.Delete(ctx, "ubuntu-config") },
			wantErr: ErrReadOnly,
		},
		{
			name:    "delete an unknown rule",
			creds:   knownSets{"hub-creds"},
			op:      func(ctx context.Context, s *Store) error { return s.Delete(ctx, "no-such-rule") },
			wantErr: ErrRuleNotFound,
		},
		{
			name:  "update an unknown rule",
			creds: knownSets{"hub-creds"},
			op: func(ctx context.Context, s *Store) error {
				_, err := s.Update(ctx, "no-such-rule", RuleChange{CredentialSet: new("")})
				return err
			},
			wantErr: ErrRuleNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			records := newRuleRecords()
			s := newTestStore(t, records, tt.creds, cfgUbuntu)
			if _, err := s.Create(ctx, hubRuleAPI); err != nil {
				t.Fatal(err)
			}
			before, persisted := s.List(), records.keys()

			err := tt.op(ctx, s)
			switch {
			case tt.wantField != "":
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Errorf("got %v, want a *FieldError on %s", err, tt.wantField)
				}
			case tt.wantRule != "":
				var ce *ConflictError
				if !errors.As(err, &ce) || ce.Rule != tt.wantRule {
					t.Errorf("got %v, want a *ConflictError naming %q", err, tt.wantRule)
				}
			default:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("got %v, want %v", err, tt.wantErr)
				}
			}
			if after := s.List(); !slices.Equal(after, before) {
				t.Errorf("rules changed by a refused operation:\n got %+v\nwant %+v", after, before)
			}
			if after := records.keys(); !slices.Equal(after, persisted) {
				t.Errorf("records changed by a refused operation: %q, want %q", after, persisted)
			}
		})
	}
}

func withSet(r Rule, set string) Rule {
	r.CredentialSet = set
	return r
}

func TestStoreOrigins(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	cfgHub := Rule{Name: "hub-config", Source: "docker.io/library/*", Target: "hub/*", Origin: OriginAPI}
	s := newTestStore(t, records, Anonymous{}, cfgUbuntu, cfgHub)
	if _, err := s.Create(ctx, ghRuleAPI); err != nil {
		t.Fatal(err)
	}
	wantOrigin := map[string]string{"ubuntu-config": OriginConfig, "hub-config": OriginConfig, "ghcr-org": OriginAPI}
	got := s.List()
	if len(got) != len(wantOrigin) {
		t.Fatalf("List = %+v, want %d rules", got, len(wantOrigin))
	}
	for _, r := range got {
		if r.Origin != wantOrigin[r.Name] {
			t.Errorf("rule %q has origin %q, want %q", r.Name, r.Origin, wantOrigin[r.Name])
		}
	}
	if r := mustGet(t, s, "ubuntu-config"); r.Source != "docker.io/library/ubuntu" {
		t.Errorf("config rule not normalised: %+v", r)
	}
	// Config rules live in the config file, not in the records.
	if keys := records.keys(); !slices.Equal(keys, []string{"ghcr-org"}) {
		t.Errorf("persisted %q, want only ghcr-org", keys)
	}
	// Read-only survives a restart: the config rule is still there and
	// still refuses changes.
	s2 := newTestStore(t, records, Anonymous{}, cfgUbuntu, cfgHub)
	if !slices.Equal(s2.List(), got) {
		t.Errorf("reloaded %+v, want %+v", s2.List(), got)
	}
	if err := s2.Delete(ctx, "hub-config"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Delete(config rule) after reload = %v, want ErrReadOnly", err)
	}
	if _, err := s2.Update(ctx, "hub-config", RuleChange{CredentialSet: new("")}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Update(config rule) after reload = %v, want ErrReadOnly", err)
	}
	if _, err := s2.Get("hub-config"); err != nil {
		t.Errorf("config rule gone after refused Delete: %v", err)
	}
}

func TestStoreMaxRules(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	rule := func(i int) Rule {
		return Rule{Name: fmt.Sprintf("rule-%04d", i), Source: fmt.Sprintf("docker.io/team/app%d", i), Target: fmt.Sprintf("app%d", i)}
	}
	// Every Create rebuilds and rechecks the whole set, so creating 999
	// rules one by one takes over a minute under -race: persist them
	// directly and let NewStore load them, then cross the limit through
	// the API.
	for i := range MaxRules - 1 {
		raw, err := json.Marshal(rule(i))
		if err != nil {
			t.Fatal(err)
		}
		if err := records.PutRecord(ctx, recordKind, rule(i).Name, raw); err != nil {
			t.Fatal(err)
		}
	}
	s := newTestStore(t, records, Anonymous{})
	if n := len(s.List()); n != MaxRules-1 {
		t.Fatalf("loaded %d rules, want %d", n, MaxRules-1)
	}
	if _, err := s.Create(ctx, rule(MaxRules-1)); err != nil {
		t.Fatalf("Create rule %d: %v", MaxRules, err)
	}
	if _, err := s.Create(ctx, rule(MaxRules)); !errors.Is(err, ErrTooManyRules) {
		t.Fatalf("Create rule %d = %v, want ErrTooManyRules", MaxRules+1, err)
	}
	if n := len(s.List()); n != MaxRules {
		t.Errorf("%d rules after the refused create, want %d", n, MaxRules)
	}
	if n := len(records.keys()); n != MaxRules {
		t.Errorf("%d records after the refused create, want %d", n, MaxRules)
	}
	// An update at the limit is not a new rule.
	if _, err := s.Update(ctx, "rule-0000", RuleChange{CredentialSet: new("")}); err != nil {
		t.Errorf("Update at the limit: %v", err)
	}
	// Deleting one makes room for one.
	if err := s.Delete(ctx, "rule-0000"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, rule(MaxRules)); err != nil {
		t.Errorf("Create after Delete at the limit: %v", err)
	}
	if _, err := s.Create(ctx, rule(MaxRules+1)); !errors.Is(err, ErrTooManyRules) {
		t.Errorf("Create rule %d = %v, want ErrTooManyRules", MaxRules+2, err)
	}
}

func TestStoreReload(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	creds := knownSets{"hub-creds"}
	s := newTestStore(t, records, creds, cfgUbuntu)
	for _, r := range []Rule{withSet(hubRuleAPI, "hub-creds"), ghRuleAPI, {Name: "redis-api", Source: "registry-1.docker.io/redis", Target: "cache/redis"}} {
		if _, err := s.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	reloaded := newTestStore(t, records, creds, cfgUbuntu)
	if got, want := reloaded.List(), s.List(); !slices.Equal(got, want) {
		t.Errorf("reloaded:\n got %+v\nwant %+v", got, want)
	}
	if m, ok := reloaded.Snapshot().Match("hub/nginx"); !ok || m.Rule.CredentialSet != "hub-creds" {
		t.Errorf("reloaded Match(hub/nginx) = %+v, %v", m, ok)
	}
	// Persisted rules come back as API rules whatever their record says.
	var r Rule
	raw, _ := records.Records(ctx, recordKind)
	if err := json.Unmarshal(raw["ghcr-org"], &r); err != nil {
		t.Fatal(err)
	}
	r.Origin = OriginConfig
	b, _ := json.Marshal(r)
	if err := records.PutRecord(ctx, recordKind, "ghcr-org", b); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, newTestStore(t, records, creds, cfgUbuntu), "ghcr-org"); got.Origin != OriginAPI {
		t.Errorf("reloaded rule with a config origin in its record = %+v, want origin api", got)
	}
}

func TestStoreReloadSkipsConflictingRule(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	s := newTestStore(t, records, Anonymous{})
	for _, r := range []Rule{hubRuleAPI, ghRuleAPI} {
		if _, err := s.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// The config file now claims hub/* for another rule.
	cfgHub := Rule{Name: "hub-config", Source: "docker.io/*", Target: "hub/*"}
	var logs logBuffer
	s2, err := NewStore(ctx, records, Anonymous{}, []Rule{cfgHub}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("NewStore with a conflicting persisted rule: %v", err)
	}
	names := make([]string, 0, 2)
	for _, r := range s2.List() {
		names = append(names, r.Name+"/"+r.Origin)
	}
	if want := []string{"ghcr-org/api", "hub-config/config"}; !slices.Equal(names, want) {
		t.Errorf("loaded %q, want %q", names, want)
	}
	if m, ok := s2.Snapshot().Match("hub/nginx"); !ok || m.Rule.Name != "hub-config" {
		t.Errorf("Match(hub/nginx) = %+v, %v; want the config rule", m, ok)
	}
	if out := logs.String(); !strings.Contains(out, "hub-library") || !strings.Contains(out, "level=ERROR") {
		t.Errorf("skipped rule not logged as an error naming it; log:\n%s", out)
	}
}

func TestStoreReloadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		config []Rule
		record string // stored under "broken-rule"
	}{
		{"config rules conflict", []Rule{cfgUbuntu, withName(cfgUbuntu, "ubuntu-again")}, ""},
		{"invalid config rule", []Rule{{Name: "bad", Source: "docker.io/ubuntu", Target: "ubuntu"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			records := newRuleRecords()
			if tt.record != "" {
				if err := records.PutRecord(t.Context(), recordKind, "broken-rule", []byte(tt.record)); err != nil {
					t.Fatal(err)
				}
			}
			if s, err := NewStore(t.Context(), records, Anonymous{}, tt.config, discardLog()); err == nil {
				t.Errorf("NewStore succeeded with %+v", s.List())
			}
		})
	}
}

func TestStoreReloadSkipsInvalidRecord(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	bad, _ := json.Marshal(Rule{Name: "bad-rule", Source: "ubuntu", Target: "ubuntu"})
	if err := records.PutRecord(ctx, recordKind, "bad-rule", bad); err != nil {
		t.Fatal(err)
	}
	if err := records.PutRecord(ctx, recordKind, "broken-json", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	s, err := NewStore(ctx, records, Anonymous{}, []Rule{cfgUbuntu}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("NewStore with an invalid persisted rule: %v", err)
	}
	if got := s.List(); len(got) != 1 || got[0].Name != "ubuntu-config" {
		t.Errorf("loaded %+v, want only ubuntu-config", got)
	}
	for _, name := range []string{"bad-rule", "broken-json"} {
		if !strings.Contains(logs.String(), name) {
			t.Errorf("skipped rule %s not logged; log:\n%s", name, logs.String())
		}
	}
}

// TestStoreReloadOverLimit: config rules plus stored rules beyond MaxRules
// still start; the excess stored rules are skipped and logged.
func TestStoreReloadOverLimit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	for i := range MaxRules {
		raw, _ := json.Marshal(Rule{Name: fmt.Sprintf("rule-%04d", i), Source: fmt.Sprintf("docker.io/team/app%d", i), Target: fmt.Sprintf("app%d", i)})
		if err := records.PutRecord(ctx, recordKind, fmt.Sprintf("rule-%04d", i), raw); err != nil {
			t.Fatal(err)
		}
	}
	var logs logBuffer
	s, err := NewStore(ctx, records, Anonymous{}, []Rule{cfgUbuntu}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("NewStore with %d stored rules and a config rule: %v", MaxRules, err)
	}
	if got := len(s.List()); got != MaxRules {
		t.Errorf("loaded %d rules, want %d", got, MaxRules)
	}
	if !strings.Contains(logs.String(), "rule-0999") {
		t.Errorf("the rule over the limit was not logged; log:\n%s", logs.String())
	}
}

func TestStoreRecordsFailure(t *testing.T) {
	t.Parallel()
	errDisk := errors.New("disk on fire")
	tests := []struct {
		name string
		op   func(context.Context, *Store) error
	}{
		{"create", func(ctx context.Context, s *Store) error {
			_, err := s.Create(ctx, ghRuleAPI)
			return err
		}},
		{"update", func(ctx context.Context, s *Store) error {
			_, err := s.Update(ctx, "hub-library", RuleChange{CredentialSet: new("")})
			return err
		}},
		{"delete", func(ctx context.Context, s *Store) error { return s.Delete(ctx, "hub-library") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			records := newRuleRecords()
			s := newTestStore(t, records, knownSets{"hub-creds"})
			if _, err := s.Create(ctx, withSet(hubRuleAPI, "hub-creds")); err != nil {
				t.Fatal(err)
			}
			before, snap := s.List(), s.Snapshot()

			records.fail(errDisk, errDisk)
			if err := tt.op(ctx, s); !errors.Is(err, errDisk) {
				t.Fatalf("got %v, want the records error", err)
			}
			if s.Snapshot() != snap {
				t.Errorf("a new snapshot was published although the change was not saved")
			}
			if after := s.List(); !slices.Equal(after, before) {
				t.Errorf("rules after a failed save:\n got %+v\nwant %+v", after, before)
			}
			if m, ok := s.Snapshot().Match("gh/app"); ok {
				t.Errorf("unsaved rule matches: %+v", m)
			}

			// Once the records work again, the same change goes through.
			records.fail(nil, nil)
			if err := tt.op(ctx, s); err != nil {
				t.Fatalf("after recovery: %v", err)
			}
			if reloaded := newTestStore(t, records, knownSets{}); !slices.Equal(reloaded.List(), s.List()) {
				t.Errorf("reloaded %+v, want %+v", reloaded.List(), s.List())
			}
		})
	}
}

func TestStoreConcurrentChanges(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	records.putDelay = time.Millisecond
	s := newTestStore(t, records, Anonymous{})
	const distinct, contenders = 40, 10
	var wg sync.WaitGroup
	errs := make([]error, contenders)
	for i := range distinct {
		wg.Go(func() {
			r := Rule{Name: fmt.Sprintf("rule-%04d", i), Source: fmt.Sprintf("docker.io/team/app%d", i), Target: fmt.Sprintf("app%d", i)}
			if _, err := s.Create(ctx, r); err != nil {
				t.Errorf("Create %s: %v", r.Name, err)
			}
		})
	}
	// Contenders race for the same target: exactly one may win.
	for i := range contenders {
		wg.Go(func() {
			_, errs[i] = s.Create(ctx, Rule{Name: fmt.Sprintf("contender-%d", i), Source: fmt.Sprintf("ghcr.io/org%d/*", i), Target: "shared/*"})
		})
	}
	// Readers see a consistent snapshot throughout.
	for range 4 {
		wg.Go(func() {
			for range 200 {
				rs := s.Snapshot()
				for _, r := range rs.Rules() {
					if got, ok := rs.Get(r.Name); !ok || got != r {
						t.Errorf("snapshot Get(%q) = %+v, %v", r.Name, got, ok)
					}
				}
			}
		})
	}
	wg.Wait()

	won := 0
	for i, err := range errs {
		var ce *ConflictError
		switch {
		case err == nil:
			won++
		case !errors.As(err, &ce):
			t.Errorf("contender %d: %v, want a conflict", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d contenders created shared/*, want exactly 1", won)
	}
	if n := len(s.List()); n != distinct+1 {
		t.Errorf("%d rules, want %d", n, distinct+1)
	}
	if got, want := records.keys(), ruleNames(s.List()); !slices.Equal(got, want) {
		t.Errorf("persisted %q, want %q", got, want)
	}
}

func ruleNames(rules []Rule) []string {
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.Name
	}
	return names
}

// TestStoreCredentialSetHost: a rule's credential set must be for the
// login server of the rule's source.
func TestStoreCredentialSetHost(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, newRuleRecords(), knownSets{"hub-creds"})
	_, err := s.Create(t.Context(), Rule{Name: "ghcr-team", Source: "ghcr.io/team/*", Target: "ghcr/*", CredentialSet: "hub-creds"})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "credentialSetName" || !strings.Contains(err.Error(), "docker.io") || !strings.Contains(err.Error(), "ghcr.io") {
		t.Fatalf("err = %v, want a credentialSetName error naming both hosts", err)
	}
	if _, err := s.Create(t.Context(), Rule{Name: "hub-team", Source: "index.docker.io/team/*", Target: "team/*", CredentialSet: "hub-creds"}); err != nil {
		t.Fatalf("a docker.io set on an index.docker.io source: %v", err)
	}
}

// Two stores on one record store are two replicas sharing the metadata:
// a change made through one is in force on the other after its Reload, a
// change is made on top of what the store holds now (not of the last
// reload), and rules that conflict because two replicas created them at
// once resolve the same way on both.
func TestStoreReloadSeesAnotherReplica(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	records := newRuleRecords()
	one := newTestStore(t, records, Anonymous{}, cfgUbuntu)
	two := newTestStore(t, records, Anonymous{}, cfgUbuntu)

	if _, err := one.Create(ctx, hubRuleAPI); err != nil {
		t.Fatal(err)
	}
	if _, ok := two.Snapshot().Match("hub/nginx"); ok {
		t.Fatal("the second store matched a rule before reloading: the test proves nothing")
	}
	if err := two.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if m, ok := two.Snapshot().Match("hub/nginx"); !ok || m.Rule.Name != hubRuleAPI.Name {
		t.Fatalf("after Reload, Match(hub/nginx) = %+v, %v; want rule %q", m, ok, hubRuleAPI.Name)
	}
	snap := two.Snapshot()
	if err := two.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if two.Snapshot() != snap {
		t.Error("a Reload that found nothing new published a new snapshot")
	}

	// A rule created on two for the same target as one's new rule is
	// refused although two has not reloaded since one made it.
	if _, err := one.Create(ctx, ghRuleAPI); err != nil {
		t.Fatal(err)
	}
	clash := Rule{Name: "aaa-clash", Source: ghRuleAPI.Source, Target: ghRuleAPI.Target}
	if _, err := two.Create(ctx, clash); err == nil {
		t.Fatalf("Create of %+v on the second store succeeded over the first store's %q", clash, ghRuleAPI.Name)
	}

	// Deleted through two: gone from one after its Reload.
	if err := two.Delete(ctx, hubRuleAPI.Name); err != nil {
		t.Fatal(err)
	}
	if err := one.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := one.Snapshot().Match("hub/nginx"); ok {
		t.Error("the first store still matches a rule the second deleted, after Reload")
	}

	// Created at the same moment on both (the record store holds both):
	// both stores keep the same one, the first by name.
	raw, err := json.Marshal(clash)
	if err != nil {
		t.Fatal(err)
	}
	if err := records.PutRecord(ctx, recordKind, clash.Name, raw); err != nil {
		t.Fatal(err)
	}
	for i, s := range []*Store{one, two} {
		if err := s.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if got := ruleNames(s.List()); !slices.Contains(got, clash.Name) || slices.Contains(got, ghRuleAPI.Name) {
			t.Errorf("store %d after both rules were stored: %q; want %q kept and %q skipped", i+1, got, clash.Name, ghRuleAPI.Name)
		}
	}
}

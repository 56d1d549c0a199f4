// Package credentials owns credential sets: an upstream login server plus
// references to a username secret and a password secret kept in a secrets
// backend (vault://, file://, env://). It resolves the references when the
// puller needs credentials, caches the values briefly, and keeps every set's
// health. Secret values live only in memory: they are never persisted,
// logged, or part of an error message or API response.
package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/regcache/regcache/cache"
)

// Health states of a set.
const (
	StateHealthy   = "Healthy"
	StateUnhealthy = "Unhealthy"
	// StateUnknown: not checked yet (the first check runs at start).
	StateUnknown = "Unknown"
)

// Set origins.
const (
	OriginAPI    = cache.OriginAPI
	OriginConfig = cache.OriginConfig
)

// MaxSets is the number of credential sets a registry may hold: each is
// checked against its upstream every health interval.
const MaxSets = 100

// Defaults of Options.
const (
	DefaultCacheTTL       = 5 * time.Minute
	DefaultHealthInterval = time.Minute
	DefaultCheckTimeout   = 30 * time.Second
)

// RecordKind is the kind of the records holding the sets created through
// the admin API.
const RecordKind = "credential-sets"

const recordKind = RecordKind

// Status is the health of a set.
type Status struct {
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	CheckedAt time.Time `json:"checkedAt,omitzero"`
}

// Set is a credential set: the upstream login server and references to its
// username and password secrets (never the secrets themselves).
type Set struct {
	Name              string `json:"name" yaml:"name"`
	LoginServer       string `json:"loginServer" yaml:"loginServer"`
	UsernameSecretRef string `json:"usernameSecretIdentifier" yaml:"usernameSecret"`
	PasswordSecretRef string `json:"passwordSecretIdentifier" yaml:"passwordSecret"`
	Origin            string `json:"origin" yaml:"-"`
	Status            Status `json:"status" yaml:"-"`
}

// record is what is persisted of an API set: no status, no values.
type record struct {
	Name              string `json:"name"`
	LoginServer       string `json:"loginServer"`
	UsernameSecretRef string `json:"usernameSecretIdentifier"`
	PasswordSecretRef string `json:"passwordSecretIdentifier"`
}

// resolver resolves the references of one scheme.
type resolver interface {
	Resolve(ctx context.Context, r Ref) (string, error)
}

// Options wire a Manager; zero values take the defaults.
type Options struct {
	// Records persists the sets created through the API (storage.Meta).
	Records cache.Records
	// Endpoints and Transport reach the login servers for health checks.
	Endpoints *cache.Endpoints
	Transport http.RoundTripper
	// Vault resolves vault:// references; nil when Vault is not configured
	// (such references then resolve to an error saying so).
	Vault *Vault
	// LookupEnv resolves env:// references (default os.LookupEnv).
	LookupEnv func(string) (string, bool)
	// SecretLocations confine env:// and file:// references (zero values:
	// the defaults). Login servers must be allowed by Endpoints.
	SecretLocations SecretLocations
	// Config are the sets declared in the config file (read-only).
	Config []Set
	// InUse names the cache rules that use a set; a set in use cannot be
	// deleted.
	InUse func(set string) []string
	// CacheTTL is how long resolved values are reused (default 5m).
	CacheTTL time.Duration
	// HealthInterval is the period of the health checks Run makes (default 1m).
	HealthInterval time.Duration
	// CheckTimeout bounds one resolution or health check (default 30s).
	CheckTimeout time.Duration
	Log          *slog.Logger
}

// Manager holds the credential sets and implements cache.Credentials.
// Close ends it.
type Manager struct {
	opts      Options
	resolvers map[string]resolver
	mu        sync.Mutex // serialises admin changes
	sets      atomic.Pointer[map[string]*entry]
	resolving singleflight.Group
	kick      chan string // sets to check soon
	valid     validator
	life      *lifetime // resolutions, checks and Run, ended by Close
	// ownTransport is set when Transport was made here: Close closes its
	// idle connections.
	ownTransport bool
}

var (
	_ cache.Credentials    = (*Manager)(nil)
	_ cache.ContextRefuser = (*Manager)(nil)
)

// entry is one set with its health and cached values.
type entry struct {
	set        Set // without Status
	user, pass Ref

	mu     sync.Mutex
	status Status
	values *values
	gen    uint64 // bumped whenever values are dropped
}

// values are resolved secrets, with the authenticator handed out for them
// (the same pointer while they are cached, so the puller can keep its
// authenticated client until they change).
type values struct {
	auth *authn.Basic
	at   time.Time
}

// NewManager loads the config sets and the sets persisted in opts.Records.
// An invalid config set is an error; a persisted set that is invalid or
// has the name of a config set is skipped and logged.
func NewManager(ctx context.Context, opts Options) (*Manager, error) {
	if opts.Records == nil || opts.Endpoints == nil || opts.Log == nil {
		return nil, errors.New("credentials: records, endpoints and logger are required")
	}
	ownTransport := opts.Transport == nil
	if ownTransport {
		opts.Transport = cache.DefaultTransport()
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = DefaultHealthInterval
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	m := &Manager{opts: opts, kick: make(chan string, 64), life: newLifetime(), ownTransport: ownTransport}
	if err := opts.SecretLocations.Validate(); err != nil {
		return nil, err
	}
	m.valid = validator{locs: opts.SecretLocations.withDefaults(), upstreams: opts.Endpoints}
	m.resolvers = map[string]resolver{
		SchemeFile:  fileResolver{locs: m.valid.locs},
		SchemeEnv:   envResolver{getenv: opts.LookupEnv},
		SchemeVault: vaultResolver{opts.Vault},
	}
	sets := map[string]*entry{}
	for _, s := range opts.Config {
		e, err := m.valid.entry(s, OriginConfig)
		if err != nil {
			return nil, fmt.Errorf("config file: credential set %q: %w", s.Name, err)
		}
		if _, dup := sets[e.set.Name]; dup {
			return nil, fmt.Errorf("config file: credential set %q is declared twice", s.Name)
		}
		sets[e.set.Name] = e
	}
	stored, err := opts.Records.Records(ctx, recordKind)
	if err != nil {
		return nil, fmt.Errorf("load credential sets: %w", err)
	}
	for name, raw := range stored {
		e, err := m.stored(raw, sets)
		if err != nil {
			opts.Log.Error("stored credential set ignored", "set", name, "err", err)
			continue
		}
		sets[e.set.Name] = e
	}
	m.sets.Store(&sets)
	vault := "none"
	if opts.Vault != nil {
		vault = opts.Vault.Address()
	}
	opts.Log.Info("credential sets loaded", "sets", len(sets), "vault", vault, "cacheTTL", opts.CacheTTL, "healthInterval", opts.HealthInterval)
	return m, nil
}

// vaultResolver resolves vault:// references, or says Vault is not configured.
type vaultResolver struct{ v *Vault }

func (r vaultResolver) Resolve(ctx context.Context, ref Ref) (string, error) {
	if r.v == nil {
		return "", fail(ErrBackendUnavailable, "vault: not configured: set vault.address in the config file or VAULT_ADDR in regcache's environment")
	}
	return r.v.Resolve(ctx, ref)
}

// drop forgets the cached values, so that the next use resolves the
// references again.
func (e *entry) drop() {
	e.mu.Lock()
	e.values = nil
	e.gen++
	e.mu.Unlock()
}

// view returns the set with its current status.
func (e *entry) view() Set {
	s := e.set
	e.mu.Lock()
	s.Status = e.status
	e.mu.Unlock()
	return s
}

func (m *Manager) get(name string) (*entry, bool) {
	e, ok := (*m.sets.Load())[name]
	return e, ok
}

// publish replaces the set named name by e (nil removes it).
func (m *Manager) publish(name string, e *entry) {
	old := *m.sets.Load()
	sets := make(map[string]*entry, len(old)+1)
	for k, v := range old {
		sets[k] = v
	}
	if e == nil {
		delete(sets, name)
	} else {
		sets[name] = e
	}
	m.sets.Store(&sets)
}

// LoginServer returns the login server of the named set.
func (m *Manager) LoginServer(_ context.Context, set string) (string, bool, error) {
	e, ok := m.get(set)
	if !ok {
		return "", false, nil
	}
	return e.set.LoginServer, true, nil
}

// Authenticator returns the set's credentials, resolving its references
// when the cached values are older than the cache TTL ("" is anonymous).
// A set whose secrets cannot be resolved is marked Unhealthy and the error
// names it and the reason.
func (m *Manager) Authenticator(ctx context.Context, set string) (authn.Authenticator, error) {
	if set == "" {
		return authn.Anonymous, nil
	}
	e, ok := m.get(set)
	if !ok {
		return nil, fmt.Errorf("%w: %q (a rule refers to a set that no longer exists)", ErrSetNotFound, set)
	}
	v, err := m.values(ctx, e, false, true)
	if err != nil {
		return nil, fmt.Errorf("credential set %q is unhealthy: %w", set, err)
	}
	return v.auth, nil
}

// values returns the cached values of e, or resolves them (always when
// fresh is true). Concurrent resolutions of one set are coalesced; the
// resolution outlives a caller that gives up.
func (m *Manager) values(ctx context.Context, e *entry, fresh, kick bool) (*values, error) {
	e.mu.Lock()
	v, gen := e.values, e.gen
	e.mu.Unlock()
	if !fresh && v != nil && time.Since(v.at) < m.opts.CacheTTL {
		return v, nil
	}
	key := e.set.Name + "#" + strconv.FormatUint(gen, 10)
	ch := m.resolving.DoChan(key, func() (any, error) {
		rctx, end, ok := m.life.begin(context.WithoutCancel(ctx))
		if !ok {
			return nil, errManagerClosed()
		}
		defer end()
		rctx, cancel := context.WithTimeout(rctx, m.opts.CheckTimeout)
		defer cancel()
		return m.resolve(rctx, e, gen, kick)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*values), nil
	}
}

func (m *Manager) resolve(ctx context.Context, e *entry, gen uint64, kick bool) (*values, error) {
	user, err := m.resolveRef(ctx, e.user)
	var pass string
	if err == nil {
		pass, err = m.resolveRef(ctx, e.pass)
	}
	if err != nil {
		e.drop() // the backend is the truth: a broken secret stops the set
		m.setStatus(ctx, e, StateUnhealthy, err.Error())
		return nil, err
	}
	v := &values{auth: &authn.Basic{Username: user, Password: pass}, at: time.Now()}
	e.mu.Lock()
	if e.gen == gen {
		e.values = v
	}
	recheck := e.status.State != StateHealthy
	e.mu.Unlock()
	if recheck && kick {
		// Resolved after a failure: have Run verify the set again.
		select {
		case m.kick <- e.set.Name:
		default:
		}
	}
	return v, nil
}

func (m *Manager) resolveRef(ctx context.Context, r Ref) (string, error) {
	return m.resolvers[r.Scheme].Resolve(ctx, r)
}

// Refused drops the cached values of set after the upstream answered 401 or
// 403 to them, so the next Authenticator call resolves them again (a
// rotated secret); final marks the set Unhealthy.
func (m *Manager) Refused(set, host string, final bool) {
	m.RefusedContext(context.Background(), set, host, final)
}

// RefusedContext is Refused for the request ctx belongs to, whose ID its
// log lines carry (cache.ContextRefuser).
func (m *Manager) RefusedContext(ctx context.Context, set, host string, final bool) {
	e, ok := m.get(set)
	if !ok {
		return
	}
	e.drop()
	if final {
		m.setStatus(ctx, e, StateUnhealthy, fmt.Sprintf("upstream %s rejected the credentials", host))
	} else {
		m.opts.Log.InfoContext(ctx, "upstream refused credentials; resolving the secrets again", "set", set, "upstream", host)
	}
}

// setStatus records a health result and logs changes (with ctx: the
// request that caused them, if any).
func (m *Manager) setStatus(ctx context.Context, e *entry, state, reason string) Status {
	e.mu.Lock()
	old := e.status
	e.status = Status{State: state, Reason: reason, CheckedAt: time.Now().UTC().Truncate(time.Second)}
	st := e.status
	e.mu.Unlock()
	if old.State != state || old.Reason != reason {
		if state == StateUnhealthy {
			m.opts.Log.WarnContext(ctx, "credential set unhealthy", "set", e.set.Name, "reason", reason)
		} else {
			m.opts.Log.InfoContext(ctx, "credential set healthy", "set", e.set.Name, "note", reason)
		}
	}
	return st
}

// check resolves the set's secrets afresh and verifies them against its
// login server. An unreachable upstream does not make a set unhealthy:
// the status says the credentials could not be verified.
func (m *Manager) check(ctx context.Context, e *entry) Status {
	ctx, end, ok := m.life.begin(ctx)
	if !ok {
		return e.view().Status
	}
	defer end()
	ctx, cancel := context.WithTimeout(ctx, m.opts.CheckTimeout)
	defer cancel()
	v, err := m.values(ctx, e, true, false)
	if err != nil {
		return e.view().Status
	}
	err = cache.VerifyCredentials(ctx, m.opts.Endpoints, m.opts.Transport, e.set.LoginServer, v.auth)
	switch {
	case errors.Is(err, cache.ErrUnauthorized), errors.Is(err, cache.ErrDenied):
		e.drop()
		return m.setStatus(ctx, e, StateUnhealthy, fmt.Sprintf("upstream %s rejected the credentials", e.set.LoginServer))
	case err != nil:
		return m.setStatus(ctx, e, StateHealthy, fmt.Sprintf("secrets resolved; upstream %s could not be reached to verify them: %v", e.set.LoginServer, err))
	}
	return m.setStatus(ctx, e, StateHealthy, "")
}

// Run checks every set now and then every HealthInterval, and a set soon
// after its secrets resolved following a failure, until ctx ends or the
// manager closes. It also keeps the Vault login alive.
func (m *Manager) Run(ctx context.Context) {
	ctx, end, ok := m.life.begin(ctx)
	if !ok {
		return
	}
	defer end()
	var wg sync.WaitGroup
	defer wg.Wait()
	if m.opts.Vault != nil {
		wg.Go(func() { m.opts.Vault.Run(ctx) })
	}
	t := time.NewTicker(m.opts.HealthInterval)
	defer t.Stop()
	m.checkAll(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.checkAll(ctx)
		case name := <-m.kick:
			if e, ok := m.get(name); ok {
				m.check(ctx, e)
			}
		}
	}
}

// Close ends the manager: the Vault backend closes first (its logins, reads
// and token renewal in flight are cancelled and its idle connections
// closed), then Run, resolutions and health checks in flight are cancelled
// and waited for, and the idle connections of the health checks' transport
// (when the manager made it) are closed. Resolutions after Close fail with
// ErrBackendUnavailable. Call it once the users of the manager (the puller,
// the admin API) are done; it may be called more than once.
func (m *Manager) Close() {
	if m.opts.Vault != nil {
		m.opts.Vault.Close()
	}
	m.life.close()
	if t, ok := m.opts.Transport.(interface{ CloseIdleConnections() }); ok && m.ownTransport {
		t.CloseIdleConnections()
	}
}

// errManagerClosed is what a resolution after Close gets.
func errManagerClosed() error {
	return fail(ErrBackendUnavailable, "credentials: closed (regcache is shutting down)")
}

// checkAll checks every set, a few at a time.
func (m *Manager) checkAll(ctx context.Context) {
	var g errgroup.Group
	g.SetLimit(4)
	for _, e := range *m.sets.Load() {
		g.Go(func() error {
			m.check(ctx, e)
			return nil
		})
	}
	g.Wait()
}

// List returns every set with its status, sorted by name.
func (m *Manager) List(context.Context) []Set {
	sets := *m.sets.Load()
	out := make([]Set, 0, len(sets))
	for _, e := range sets {
		out = append(out, e.view())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns the named set with its status.
func (m *Manager) Get(_ context.Context, name string) (Set, error) {
	e, ok := m.get(name)
	if !ok {
		return Set{}, fmt.Errorf("%w: %q", ErrSetNotFound, name)
	}
	return e.view(), nil
}

// Create validates, persists and checks a new set. A set whose secrets do
// not resolve yet, or whose upstream is unreachable, is created with the
// reason in its status (grant the Vault policy, then update or wait for the
// next check).
func (m *Manager) Create(ctx context.Context, s Set) (Set, error) {
	e, err := m.valid.entry(s, OriginAPI)
	if err != nil {
		return Set{}, err
	}
	m.mu.Lock()
	if _, ok := m.get(e.set.Name); ok {
		m.mu.Unlock()
		return Set{}, fmt.Errorf("%w: %q: change its secrets with update, or delete it first", ErrExists, e.set.Name)
	}
	if n := len(*m.sets.Load()); n >= MaxSets {
		m.mu.Unlock()
		return Set{}, fmt.Errorf("%w: this registry already has %d credential sets, the maximum; delete one first", ErrTooManySets, n)
	}
	err = m.save(ctx, e)
	m.mu.Unlock()
	if err != nil {
		return Set{}, err
	}
	m.opts.Log.InfoContext(ctx, "credential set created", "set", e.set.Name, "loginServer", e.set.LoginServer,
		"username", e.set.UsernameSecretRef, "password", e.set.PasswordSecretRef)
	m.check(ctx, e)
	return e.view(), nil
}

// Update replaces the username and/or password reference ("" keeps it) and
// checks the set again. The login server of a set is fixed.
func (m *Manager) Update(ctx context.Context, name, usernameRef, passwordRef string) (Set, error) {
	if usernameRef == "" && passwordRef == "" {
		return Set{}, &cache.FieldError{Field: "usernameSecretIdentifier", Value: "", Reason: "nothing to update: give a new username and/or password secret reference"}
	}
	m.mu.Lock()
	old, ok := m.get(name)
	if !ok {
		m.mu.Unlock()
		return Set{}, fmt.Errorf("%w: %q", ErrSetNotFound, name)
	}
	if old.set.Origin == OriginConfig {
		m.mu.Unlock()
		return Set{}, fmt.Errorf("%w: edit credential set %q in the config file", ErrReadOnly, name)
	}
	s := old.set
	if usernameRef != "" {
		s.UsernameSecretRef = usernameRef
	}
	if passwordRef != "" {
		s.PasswordSecretRef = passwordRef
	}
	e, err := m.valid.entry(s, OriginAPI)
	if err == nil {
		err = m.save(ctx, e)
	}
	m.mu.Unlock()
	if err != nil {
		return Set{}, err
	}
	m.opts.Log.InfoContext(ctx, "credential set updated", "set", name, "username", e.set.UsernameSecretRef, "password", e.set.PasswordSecretRef)
	m.check(ctx, e)
	return e.view(), nil
}

// save persists e and publishes it; the caller holds m.mu.
func (m *Manager) save(ctx context.Context, e *entry) error {
	raw, err := json.Marshal(record{Name: e.set.Name, LoginServer: e.set.LoginServer, UsernameSecretRef: e.set.UsernameSecretRef, PasswordSecretRef: e.set.PasswordSecretRef})
	if err != nil {
		return err
	}
	if err := m.opts.Records.PutRecord(ctx, recordKind, e.set.Name, raw); err != nil {
		return fmt.Errorf("save credential set %q: %w", e.set.Name, err)
	}
	m.publish(e.set.Name, e)
	return nil
}

// Delete removes a set created through the API that no rule uses.
func (m *Manager) Delete(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.get(name)
	if !ok {
		return fmt.Errorf("%w: %q", ErrSetNotFound, name)
	}
	if e.set.Origin == OriginConfig {
		return fmt.Errorf("%w: remove credential set %q from the config file", ErrReadOnly, name)
	}
	if m.opts.InUse != nil {
		if rules := m.opts.InUse(name); len(rules) > 0 {
			sort.Strings(rules)
			return &InUseError{Set: name, Rules: rules}
		}
	}
	if err := m.opts.Records.DeleteRecord(ctx, recordKind, name); err != nil {
		return fmt.Errorf("delete credential set %q: %w", name, err)
	}
	m.publish(name, nil)
	m.opts.Log.InfoContext(ctx, "credential set deleted", "set", name)
	return nil
}

// Policy returns the Vault policy for the named set, or for every set when
// name is "".
func (m *Manager) Policy(ctx context.Context, name string) (string, error) {
	sets := m.List(ctx)
	if name != "" {
		s, err := m.Get(ctx, name)
		if err != nil {
			return "", err
		}
		sets = []Set{s}
	}
	p, ok := Policy(sets...)
	switch {
	case ok:
		return p, nil
	case name != "":
		return "", fail(ErrNoVaultSecrets, "credential set %q references no vault:// secret, so there is no Vault policy to grant", name)
	default:
		return "", fail(ErrNoVaultSecrets, "no credential set references a vault:// secret, so there is no Vault policy to grant")
	}
}

// ValidateSets checks sets declared in a config file: each valid, for an
// allowed login server, referencing allowed locations, names unique. It
// does not resolve the references.
func ValidateSets(sets []Set, locs SecretLocations, upstreams *cache.Endpoints) error {
	if err := locs.Validate(); err != nil {
		return err
	}
	if len(sets) > MaxSets {
		return fmt.Errorf("%w: %d credential sets declared, at most %d are allowed", ErrTooManySets, len(sets), MaxSets)
	}
	v := validator{locs: locs.withDefaults(), upstreams: upstreams}
	seen := map[string]bool{}
	for _, s := range sets {
		if _, err := v.entry(s, OriginConfig); err != nil {
			return fmt.Errorf("credential set %q: %w", s.Name, err)
		}
		if seen[s.Name] {
			return fmt.Errorf("credential set %q is declared twice", s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

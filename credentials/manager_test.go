package credentials_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
)

// env is a mutable environment for env:// references that counts lookups
// and can hold them until released.
type env struct {
	mu      sync.Mutex
	vars    map[string]string
	lookups atomic.Int64
	gate    chan struct{} // when not nil, lookups wait for it to close
}

func (e *env) LookupEnv(k string) (string, bool) {
	e.lookups.Add(1)
	e.mu.Lock()
	gate := e.gate
	e.mu.Unlock()
	if gate != nil {
		<-gate
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.vars[k]
	return v, ok
}

func (e *env) set(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if v == "" {
		delete(e.vars, k)
	} else {
		e.vars[k] = v
	}
}

type managerFixture struct {
	m       *credentials.Manager
	env     *env
	records *memRecords
	logs    *syncBuffer
	inUse   map[string][]string
}

func newManager(t *testing.T, opts credentials.Options) *managerFixture {
	t.Helper()
	f := &managerFixture{env: &env{vars: map[string]string{"REGCACHE_SECRET_HUB_USER": "hub-user", "REGCACHE_SECRET_HUB_PASS": "hub-s3cr3t"}}, records: newMemRecords(), inUse: map[string][]string{}}
	if opts.Records == nil {
		opts.Records = f.records
	}
	if opts.Endpoints == nil {
		opts.Endpoints, _ = cache.NewEndpoints(map[string]string{"docker.io": "http://127.0.0.1:1"})
	}
	opts.LookupEnv = f.env.LookupEnv
	opts.Log, f.logs = newLog()
	if opts.CheckTimeout == 0 {
		opts.CheckTimeout = 2 * time.Second
	}
	opts.InUse = func(set string) []string { return f.inUse[set] }
	m, err := credentials.NewManager(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

var hubSet = credentials.Set{Name: "hub-team", LoginServer: "index.docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_HUB_USER", PasswordSecretRef: "env://REGCACHE_SECRET_HUB_PASS"}

func TestManagerLifecycle(t *testing.T) {
	t.Parallel()
	cfgSet := credentials.Set{Name: "cfg-ghcr", LoginServer: "ghcr.io", UsernameSecretRef: "env://REGCACHE_SECRET_GHCR_USER", PasswordSecretRef: "file:///run/secrets/ghcr"}
	f := newManager(t, credentials.Options{Config: []credentials.Set{cfgSet}})
	ctx := t.Context()

	created, err := f.m.Create(ctx, hubSet)
	if err != nil {
		t.Fatal(err)
	}
	if created.LoginServer != "docker.io" || created.Origin != credentials.OriginAPI || created.Status.State != credentials.StateHealthy ||
		!strings.Contains(created.Status.Reason, "could not be reached") {
		t.Errorf("created %+v: want login server docker.io (canonical), origin api, Healthy noting the unreachable upstream", created)
	}
	if server, ok, _ := f.m.LoginServer(ctx, "hub-team"); !ok || server != "docker.io" {
		t.Errorf("LoginServer = %q, %v", server, ok)
	}
	if _, err := f.m.Create(ctx, hubSet); !errors.Is(err, credentials.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	if _, err := f.m.Create(ctx, credentials.Set{Name: "cfg-ghcr", LoginServer: "ghcr.io", UsernameSecretRef: "env://REGCACHE_SECRET_A", PasswordSecretRef: "env://REGCACHE_SECRET_B"}); !errors.Is(err, credentials.ErrExists) {
		t.Errorf("create over a config set: %v, want ErrExists", err)
	}

	invalid := []struct {
		set   credentials.Set
		field string
	}{
		{credentials.Set{Name: "abc", LoginServer: "docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_A", PasswordSecretRef: "env://REGCACHE_SECRET_B"}, "name"},
		{credentials.Set{Name: "valid-name", LoginServer: "", UsernameSecretRef: "env://REGCACHE_SECRET_A", PasswordSecretRef: "env://REGCACHE_SECRET_B"}, "loginServer"},
		{credentials.Set{Name: "valid-name", LoginServer: "https://docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_A", PasswordSecretRef: "env://REGCACHE_SECRET_B"}, "loginServer"},
		{credentials.Set{Name: "valid-name", LoginServer: "docker.io", UsernameSecretRef: "plain-user", PasswordSecretRef: "env://REGCACHE_SECRET_B"}, "usernameSecretIdentifier"},
		{credentials.Set{Name: "valid-name", LoginServer: "docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_A", PasswordSecretRef: "hunter2"}, "passwordSecretIdentifier"},
	}
	for _, tc := range invalid {
		_, err := f.m.Create(ctx, tc.set)
		var fe *cache.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("create %+v: %v, want a field error on %s", tc.set, err, tc.field)
		}
		if strings.Contains(fmt.Sprint(err), "hunter2") || strings.Contains(fmt.Sprint(err), "plain-user") {
			t.Errorf("error echoes a value that may be a secret: %v", err)
		}
	}

	// Update keeps what is not given; the login server is fixed.
	f.env.set("REGCACHE_SECRET_HUB_PASS2", "hub-s3cr3t-2")
	updated, err := f.m.Update(ctx, "hub-team", "", "env://REGCACHE_SECRET_HUB_PASS2")
	if err != nil || updated.UsernameSecretRef != "env://REGCACHE_SECRET_HUB_USER" || updated.PasswordSecretRef != "env://REGCACHE_SECRET_HUB_PASS2" {
		t.Fatalf("update: %+v, %v", updated, err)
	}
	auth, err := f.m.Authenticator(ctx, "hub-team")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := auth.Authorization(); c.Password != "hub-s3cr3t-2" {
		t.Errorf("after update the new reference is resolved; got another password")
	}
	if _, err := f.m.Update(ctx, "hub-team", "", ""); err == nil {
		t.Errorf("update with nothing succeeded")
	}
	if _, err := f.m.Update(ctx, "cfg-ghcr", "env://REGCACHE_SECRET_X", ""); !errors.Is(err, credentials.ErrReadOnly) {
		t.Errorf("update of a config set: %v, want ErrReadOnly", err)
	}
	if _, err := f.m.Update(ctx, "nope-nope", "env://REGCACHE_SECRET_X", ""); !errors.Is(err, credentials.ErrSetNotFound) {
		t.Errorf("update of a missing set: %v, want ErrSetNotFound", err)
	}

	list := f.m.List(ctx)
	if len(list) != 2 || list[0].Name != "cfg-ghcr" || list[0].Origin != credentials.OriginConfig || list[1].Name != "hub-team" {
		t.Errorf("list %+v", list)
	}

	// Persisted across a restart; the config set comes from the config.
	g := newManager(t, credentials.Options{Records: f.records, Config: []credentials.Set{cfgSet}})
	if s, err := g.m.Get(ctx, "hub-team"); err != nil || s.PasswordSecretRef != "env://REGCACHE_SECRET_HUB_PASS2" || s.Origin != credentials.OriginAPI {
		t.Errorf("after reload: %+v, %v", s, err)
	}
	if strings.Contains(f.records.dump(), "hub-s3cr3t") || strings.Contains(f.records.dump(), "hub-user\"") {
		t.Errorf("a secret value was persisted:\n%s", f.records.dump())
	}

	// Delete: refused while in use (naming the rules) and for config sets.
	f.inUse["hub-team"] = []string{"rule-b", "rule-a"}
	err = f.m.Delete(ctx, "hub-team")
	var iu *credentials.InUseError
	if !errors.As(err, &iu) || !errors.Is(err, credentials.ErrInUse) || !slices.Equal(iu.Rules, []string{"rule-a", "rule-b"}) || !strings.Contains(err.Error(), "rule-a, rule-b") {
		t.Fatalf("delete in use: %v", err)
	}
	if err := f.m.Delete(ctx, "cfg-ghcr"); !errors.Is(err, credentials.ErrReadOnly) {
		t.Errorf("delete of a config set: %v", err)
	}
	delete(f.inUse, "hub-team")
	if err := f.m.Delete(ctx, "hub-team"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Get(ctx, "hub-team"); !errors.Is(err, credentials.ErrSetNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if _, err := f.m.Authenticator(ctx, "hub-team"); !errors.Is(err, credentials.ErrSetNotFound) {
		t.Errorf("authenticator after delete: %v", err)
	}
	if a, err := f.m.Authenticator(ctx, ""); err != nil || a == nil {
		t.Errorf("anonymous: %v", err)
	}
	if logs := f.logs.String(); strings.Contains(logs, "hub-s3cr3t") {
		t.Errorf("a secret value was logged:\n%s", logs)
	}
}

func TestManagerConfigSets(t *testing.T) {
	t.Parallel()
	anyUpstream, _ := cache.NewEndpoints(nil)
	dup := []credentials.Set{hubSet, hubSet}
	if err := credentials.ValidateSets(dup, credentials.SecretLocations{}, anyUpstream); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate config sets: %v", err)
	}
	bad := []credentials.Set{{Name: "cfg-bad", LoginServer: "docker.io", UsernameSecretRef: "env://REGCACHE_SECRET_U", PasswordSecretRef: "s3cr3t-in-config"}}
	err := credentials.ValidateSets(bad, credentials.SecretLocations{}, anyUpstream)
	if err == nil || !strings.Contains(err.Error(), "cfg-bad") || strings.Contains(err.Error(), "s3cr3t-in-config") {
		t.Errorf("a literal secret in the config: %v (must name the set, not echo the value)", err)
	}
	// A stored set with the name of a config set is skipped, not fatal.
	records := newMemRecords()
	records.PutRecord(t.Context(), "credential-sets", "hub-team", []byte(`{"name":"hub-team","loginServer":"docker.io","usernameSecretIdentifier":"env://REGCACHE_SECRET_X","passwordSecretIdentifier":"env://REGCACHE_SECRET_Y"}`))
	records.PutRecord(t.Context(), "credential-sets", "broken-one", []byte(`{not json`))
	f := newManager(t, credentials.Options{Records: records, Config: []credentials.Set{hubSet}})
	if s, err := f.m.Get(t.Context(), "hub-team"); err != nil || s.Origin != credentials.OriginConfig {
		t.Errorf("config set: %+v, %v", s, err)
	}
	if len(f.m.List(t.Context())) != 1 || !strings.Contains(f.logs.String(), "stored credential set ignored") {
		t.Errorf("stored sets that collide or do not parse are skipped and logged:\n%s", f.logs)
	}
}

// TestResolutionCache: values are reused for the TTL, resolved again after
// it and after a refusal; a second refusal marks the set unhealthy.
func TestResolutionCache(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newManager(t, credentials.Options{Config: []credentials.Set{hubSet}, CacheTTL: 5 * time.Minute})
		ctx := t.Context()
		first, err := f.m.Authenticator(ctx, "hub-team")
		if err != nil {
			t.Fatal(err)
		}
		if n := f.env.lookups.Load(); n != 2 {
			t.Fatalf("%d lookups for one resolution, want 2", n)
		}
		time.Sleep(4 * time.Minute)
		again, _ := f.m.Authenticator(ctx, "hub-team")
		if again != first || f.env.lookups.Load() != 2 {
			t.Fatalf("within the TTL: same authenticator %v, lookups %d; want the cached one", again == first, f.env.lookups.Load())
		}
		time.Sleep(2 * time.Minute)
		expired, _ := f.m.Authenticator(ctx, "hub-team")
		if expired == first || f.env.lookups.Load() != 4 {
			t.Fatalf("after the TTL: new authenticator %v, lookups %d; want a new resolution", expired != first, f.env.lookups.Load())
		}

		f.m.Refused("hub-team", "docker.io", false)
		if s, _ := f.m.Get(ctx, "hub-team"); s.Status.State == credentials.StateUnhealthy {
			t.Errorf("a first refusal does not make the set unhealthy: %+v", s.Status)
		}
		f.m.Authenticator(ctx, "hub-team")
		if f.env.lookups.Load() != 6 {
			t.Fatalf("after a refusal the secrets are resolved again; lookups %d", f.env.lookups.Load())
		}
		f.m.Refused("hub-team", "docker.io", true)
		s, _ := f.m.Get(ctx, "hub-team")
		if s.Status.State != credentials.StateUnhealthy || s.Status.Reason != "upstream docker.io rejected the credentials" {
			t.Fatalf("after a final refusal: %+v", s.Status)
		}
		f.m.Refused("no-such-set", "docker.io", true) // ignored
	})
}

// TestResolutionsCoalesce: concurrent pulls through one set resolve its
// secrets once.
func TestResolutionsCoalesce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newManager(t, credentials.Options{Config: []credentials.Set{hubSet}})
		gate := make(chan struct{})
		f.env.mu.Lock()
		f.env.gate = gate
		f.env.mu.Unlock()
		const n = 32
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				_, err := f.m.Authenticator(t.Context(), "hub-team")
				errs <- err
			})
		}
		// Every caller has arrived: one holds the lookup, the others wait
		// for its result.
		synctest.Wait()
		if got := f.env.lookups.Load(); got != 1 {
			t.Fatalf("%d lookups under way for %d concurrent callers, want 1", got, n)
		}
		close(gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := f.env.lookups.Load(); got != 2 {
			t.Fatalf("%d concurrent callers made %d lookups, want 2 (one resolution)", n, got)
		}
	})
}

// TestHealth: the health check verifies the resolved credentials against
// the login server (a real registry behind basic auth); Run checks
// periodically and notices a broken and a repaired secret.
func TestHealth(t *testing.T) {
	t.Parallel()
	up := newAuthUpstream(t, "hub-user", "hub-s3cr3t")
	endpoints, _ := cache.NewEndpoints(map[string]string{"registry.test": up.URL})
	f := newManager(t, credentials.Options{Endpoints: endpoints, HealthInterval: 20 * time.Millisecond})
	ctx := t.Context()
	set := credentials.Set{Name: "private", LoginServer: "registry.test", UsernameSecretRef: "env://REGCACHE_SECRET_HUB_USER", PasswordSecretRef: "env://REGCACHE_SECRET_HUB_PASS"}
	s, err := f.m.Create(ctx, set)
	if err != nil || s.Status.State != credentials.StateHealthy || s.Status.Reason != "" || s.Status.CheckedAt.IsZero() {
		t.Fatalf("create: %+v, %v; want Healthy, verified", s, err)
	}
	if up.authed.Load() == 0 {
		t.Fatalf("the health check did not authenticate to the upstream")
	}

	// Wrong password: created (the operator fixes the secret), Unhealthy.
	f.env.set("REGCACHE_SECRET_WRONG_PASS", "not-the-password")
	bad := set
	bad.Name, bad.PasswordSecretRef = "private-wrong", "env://REGCACHE_SECRET_WRONG_PASS"
	s, err = f.m.Create(ctx, bad)
	if err != nil || s.Status.State != credentials.StateUnhealthy || s.Status.Reason != "upstream registry.test rejected the credentials" {
		t.Fatalf("create with a wrong password: %+v, %v", s, err)
	}

	runCtx, stop := contextWithCancel(t)
	done := make(chan struct{})
	go func() { f.m.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()
	waitStatus := func(name, state, reason string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, _ := f.m.Get(ctx, name)
			if s.Status.State == state && strings.Contains(s.Status.Reason, reason) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("set %s: status %+v, want %s with %q", name, s.Status, state, reason)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	f.env.set("REGCACHE_SECRET_HUB_PASS", "")
	waitStatus("private", credentials.StateUnhealthy, "env: REGCACHE_SECRET_HUB_PASS is not set")
	if _, err := f.m.Authenticator(ctx, "private"); err == nil || !strings.Contains(err.Error(), `"private"`) {
		t.Fatalf("pull through an unhealthy set: %v, want an error naming the set", err)
	}
	f.env.set("REGCACHE_SECRET_HUB_PASS", "hub-s3cr3t")
	waitStatus("private", credentials.StateHealthy, "")
	f.env.set("REGCACHE_SECRET_WRONG_PASS", "hub-s3cr3t") // the operator fixed the other secret
	waitStatus("private-wrong", credentials.StateHealthy, "")
	up.password.Store("rotated-upstream") // the upstream changed the password
	waitStatus("private", credentials.StateUnhealthy, "upstream registry.test rejected the credentials")
	if logs := f.logs.String(); strings.Contains(logs, "hub-s3cr3t") || strings.Contains(logs, "not-the-password") {
		t.Errorf("a secret value was logged:\n%s", logs)
	}
	if !strings.Contains(f.logs.String(), "credential set unhealthy") {
		t.Errorf("status changes are logged:\n%s", f.logs)
	}
}

// TestManagerPolicy: the Vault policy of one set or of every set, and the
// reason there is none when no vault:// secret is referenced.
func TestManagerPolicy(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	vaultSet := credentials.Set{Name: "hub-vault", LoginServer: "docker.io", UsernameSecretRef: "vault://secret/regcache/hub#username", PasswordSecretRef: "env://REGCACHE_SECRET_HUB_PASS"}
	tests := []struct {
		name    string
		sets    []credentials.Set
		ask     string
		policy  string // a line the policy holds
		err     error
		message string // the whole error message
	}{
		{"one set", []credentials.Set{hubSet, vaultSet}, "hub-vault", `path "secret/data/regcache/hub" {`, nil, ""},
		{"every set", []credentials.Set{hubSet, vaultSet}, "", "# hub-vault", nil, ""},
		{"one set without vault secrets", []credentials.Set{hubSet, vaultSet}, "hub-team", "", credentials.ErrNoVaultSecrets,
			`credential set "hub-team" references no vault:// secret, so there is no Vault policy to grant`},
		{"no set with vault secrets", []credentials.Set{hubSet}, "", "", credentials.ErrNoVaultSecrets,
			"no credential set references a vault:// secret, so there is no Vault policy to grant"},
		{"no set at all", nil, "", "", credentials.ErrNoVaultSecrets,
			"no credential set references a vault:// secret, so there is no Vault policy to grant"},
		{"missing set", []credentials.Set{hubSet}, "nope-nope", "", credentials.ErrSetNotFound, `credential set not found: "nope-nope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newManager(t, credentials.Options{Config: tc.sets})
			got, err := f.m.Policy(ctx, tc.ask)
			if tc.err == nil {
				if err != nil || !strings.Contains(got, tc.policy) {
					t.Fatalf("Policy(%q) = %v\n%s\nwant a policy with %q", tc.ask, err, got, tc.policy)
				}
				return
			}
			if !errors.Is(err, tc.err) || err.Error() != tc.message || got != "" {
				t.Fatalf("Policy(%q) = %q, %v; want %v saying %q", tc.ask, got, err, tc.err, tc.message)
			}
		})
	}
}

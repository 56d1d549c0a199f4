package credentials_test

import (
	"testing"

	"github.com/regcache/regcache/credentials"
)

// Two managers on one record store are two replicas sharing the metadata:
// a set created, updated or deleted through one is in force on the other
// after its Reload, and a set that did not change keeps its resolved
// values (no new secret lookups).
func TestManagerReloadSeesAnotherReplica(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	one := newManager(t, credentials.Options{})
	two := newManager(t, credentials.Options{Records: one.records})

	if _, err := one.m.Create(ctx, hubSet); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := two.m.LoginServer(ctx, hubSet.Name); ok {
		t.Fatal("the second manager knows the set before reloading: the test proves nothing")
	}
	if err := two.m.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if server, ok, _ := two.m.LoginServer(ctx, hubSet.Name); !ok || server != "docker.io" {
		t.Fatalf("after Reload: LoginServer(%q) = %q, %v; want docker.io", hubSet.Name, server, ok)
	}
	first, err := two.m.Authenticator(ctx, hubSet.Name)
	if err != nil {
		t.Fatal(err)
	}
	lookups := two.env.lookups.Load()

	// Nothing changed: the same resolved values.
	if err := two.m.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if again, _ := two.m.Authenticator(ctx, hubSet.Name); again != first || two.env.lookups.Load() != lookups {
		t.Errorf("a Reload that found nothing new dropped the resolved values (same authenticator %v, lookups %d -> %d)", again == first, lookups, two.env.lookups.Load())
	}

	// Updated through one: two resolves the new reference after Reload.
	for _, f := range []*managerFixture{one, two} {
		f.env.set("REGCACHE_SECRET_HUB_PASS2", "hub-s3cr3t-2")
	}
	if _, err := one.m.Update(ctx, hubSet.Name, "", "env://REGCACHE_SECRET_HUB_PASS2"); err != nil {
		t.Fatal(err)
	}
	if err := two.m.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := two.m.Get(ctx, hubSet.Name)
	if err != nil || got.PasswordSecretRef != "env://REGCACHE_SECRET_HUB_PASS2" {
		t.Fatalf("after an update through the other replica and Reload: %+v, %v; want the new password reference", got, err)
	}
	auth, err := two.m.Authenticator(ctx, hubSet.Name)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := auth.Authorization()
	if err != nil || cfg.Password != "hub-s3cr3t-2" {
		t.Errorf("after Reload the set authenticates with the old password (err %v)", err)
	}

	// Deleted through one: gone from two after Reload.
	if err := one.m.Delete(ctx, hubSet.Name); err != nil {
		t.Fatal(err)
	}
	if err := two.m.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := two.m.LoginServer(ctx, hubSet.Name); ok {
		t.Error("after a delete through the other replica and Reload the set still exists")
	}
}

package credentials_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/goleak"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/e2e/peers"
)

// TestManagerCloseEndsVault: closing the manager ends everything its Vault
// backend started against a real server that keeps running: Run and its
// token renewal return, and the client's keep-alive connections (their
// readLoop and writeLoop goroutines) are closed. Later resolutions fail.
//
// Not parallel: it compares the goroutines before and after, which other
// tests running meanwhile would disturb.
func TestManagerCloseEndsVault(t *testing.T) {
	v := peers.StartVault(t)
	path := v.PutSecret(t, "hub", map[string]any{"username": "close-user", "password": "close-pass-" + randomHex(8)})
	set := credentials.Set{Name: "hub-vault", LoginServer: "registry.test",
		UsernameSecretRef: "vault://secret/" + path + "#username", PasswordSecretRef: "vault://secret/" + path + "#password"}
	printed, _ := credentials.Policy(set)
	// A renewable token: Run keeps a renewal watcher for it.
	token := v.NewToken(t, &api.TokenCreateRequest{Policies: []string{v.PutPolicy(t, "close", printed)}, TTL: "1h"})
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	// Everything from here on is the manager's.
	before := goleak.IgnoreCurrent()

	logger, _ := newLog()
	vault, err := credentials.NewVault(credentials.VaultConfig{Address: v.Addr, TokenFile: tokenFile}, func(string) string { return "" }, logger)
	if err != nil {
		t.Fatal(err)
	}
	endpoints, _ := cache.NewEndpoints(map[string]string{"registry.test": "http://127.0.0.1:1"})
	m, err := credentials.NewManager(t.Context(), credentials.Options{Records: newMemRecords(), Endpoints: endpoints, Log: logger, Vault: vault, Config: []credentials.Set{set}})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() { m.Run(context.Background()); close(ran) }() // only Close ends it
	if _, err := m.Authenticator(t.Context(), "hub-vault"); err != nil {
		t.Fatal(err)
	}

	m.Close()
	select {
	case <-ran:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	m.Refused("hub-vault", "registry.test", false) // drop the cached values
	if _, err := m.Authenticator(t.Context(), "hub-vault"); !errors.Is(err, credentials.ErrBackendUnavailable) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("resolution after Close: %v, want ErrBackendUnavailable saying it is closed", err)
	}
	m.Close() // a second Close is harmless
	goleak.VerifyNone(t, before)
}

// TestCloseCancelsVaultLogin: a login hanging on an unresponsive Vault is
// cancelled by Close, rather than holding the shutdown until the client's
// timeout; the waiting resolution fails saying why.
func TestCloseCancelsVaultLogin(t *testing.T) {
	t.Parallel()
	// A fault: Vault accepts the connection and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range accepted {
			c.Close()
		}
	})
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("some-token"), 0o600)
	logger, _ := newLog()
	vault, err := credentials.NewVault(credentials.VaultConfig{Address: "http://" + l.Addr().String(), TokenFile: tokenFile}, func(string) string { return "" }, logger)
	if err != nil {
		t.Fatal(err)
	}
	endpoints, _ := cache.NewEndpoints(map[string]string{"registry.test": "http://127.0.0.1:1"})
	m, err := credentials.NewManager(t.Context(), credentials.Options{Records: newMemRecords(), Endpoints: endpoints, Log: logger, Vault: vault,
		Config: []credentials.Set{{Name: "hub-vault", LoginServer: "registry.test", UsernameSecretRef: "vault://secret/hub#username", PasswordSecretRef: "vault://secret/hub#password"}}})
	if err != nil {
		t.Fatal(err)
	}
	resolved := make(chan error, 1)
	go func() {
		_, err := m.Authenticator(t.Context(), "hub-vault")
		resolved <- err
	}()
	c := <-accepted // the login's request is on its way
	defer c.Close()
	m.Close()
	err = <-resolved
	if !errors.Is(err, credentials.ErrBackendUnavailable) || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("resolution whose login Close cancelled: %v, want ErrBackendUnavailable saying the login was cancelled", err)
	}
}

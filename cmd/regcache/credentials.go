package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
)

// startCredentials builds the credential set manager (config sets, sets
// persisted in records, the Vault backend), checks that the config file's
// rules use existing sets for their login servers, and starts the health
// checks and Vault token renewal. stop ends them and waits.
func startCredentials(ctx context.Context, cfg Config, records cache.Records, endpoints *cache.Endpoints, inUse func(string) []string, log *slog.Logger) (*credentials.Manager, func(), error) {
	vault, err := credentials.NewVault(cfg.Vault, os.Getenv, log)
	if err != nil {
		return nil, nil, err
	}
	m, err := credentials.NewManager(ctx, credentials.Options{
		Records:        records,
		Endpoints:      endpoints,
		Vault:          vault,
		Config:         cfg.CredentialSets,
		InUse:          inUse,
		CacheTTL:       cfg.CredentialCacheTTL,
		HealthInterval: cfg.CredentialHealthInterval,
		Log:            log,
	})
	if err != nil {
		return nil, nil, err
	}
	for _, r := range cfg.Rules {
		if r.CredentialSet == "" {
			continue
		}
		server, ok, _ := m.LoginServer(ctx, r.CredentialSet)
		if !ok {
			return nil, nil, fmt.Errorf("config file: rule %q: credential set %q does not exist; declare it under credentialSets", r.Name, r.CredentialSet)
		}
		if host, _, _ := strings.Cut(r.Source, "/"); cache.CanonicalHost(host) != server {
			return nil, nil, fmt.Errorf("config file: rule %q: credential set %q is for login server %s but the rule's source is on %s", r.Name, r.CredentialSet, server, cache.CanonicalHost(host))
		}
	}
	vaultAddr := "none"
	if vault != nil {
		vaultAddr = vault.Address()
	}
	ttl, interval := cfg.CredentialCacheTTL, cfg.CredentialHealthInterval
	if ttl == 0 {
		ttl = credentials.DefaultCacheTTL
	}
	if interval == 0 {
		interval = credentials.DefaultHealthInterval
	}
	log.Info("credential sets loaded", "sets", len(m.List(ctx)), "vault", vaultAddr, "cacheTTL", ttl, "healthInterval", interval)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		m.Run(runCtx)
		close(done)
	}()
	return m, func() { cancel(); <-done }, nil
}

// rulesUsing names the rules (config and API) that use set; rules is nil
// only while the server starts.
func rulesUsing(rules *cache.Store, set string) []string {
	if rules == nil {
		return nil
	}
	var names []string
	for _, r := range rules.List() {
		if r.CredentialSet == set {
			names = append(names, r.Name)
		}
	}
	return names
}

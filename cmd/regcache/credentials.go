package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
)

// newCredentials builds the credential set manager: the config file's sets,
// the sets persisted in records, and the Vault backend; its health checks
// reach login servers through transport (which an offline registry makes
// refuse them).
func newCredentials(ctx context.Context, cfg Config, records cache.Records, endpoints *cache.Endpoints, transport http.RoundTripper, inUse func(string) []string, log *slog.Logger) (*credentials.Manager, error) {
	vault, err := credentials.NewVault(cfg.Vault, os.Getenv, log)
	if err != nil {
		return nil, err
	}
	return credentials.NewManager(ctx, credentials.Options{
		Records:         records,
		Endpoints:       endpoints,
		Transport:       transport,
		Vault:           vault,
		Config:          cfg.CredentialSets,
		SecretLocations: cfg.Secrets,
		InUse:           inUse,
		CacheTTL:        cfg.CredentialCacheTTL,
		HealthInterval:  cfg.CredentialHealthInterval,
		Log:             log,
	})
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

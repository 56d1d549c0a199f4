package main

import (
	"cmp"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/regcache/regcache/auth"
	"github.com/regcache/regcache/registry"
)

// AuthConfig is the auth section of the config file: client
// authentication of the distribution API (/v2/). It is off (anyone may
// pull) unless Htpasswd is set.
type AuthConfig struct {
	// Htpasswd is the file of users (bcrypt hashes, as `htpasswd -B`
	// writes them), reloaded when it changes; setting it requires clients
	// to log in (--auth-htpasswd, REGCACHE_AUTH_HTPASSWD).
	Htpasswd string `yaml:"htpasswd"`
	// Realm is the token endpoint's URL sent in challenges, for a server
	// behind a proxy that changes its scheme or host (--auth-realm,
	// REGCACHE_AUTH_REALM). Default: <scheme>://<host the client
	// used>/v2/token.
	Realm string `yaml:"realm"`
	// Service names this registry in tokens and challenges (default
	// regcache).
	Service string `yaml:"service"`
	// SigningKey is a PEM PKCS #8 Ed25519 key signing tokens, shared by
	// replicas (--auth-signing-key, REGCACHE_AUTH_SIGNING_KEY). Default:
	// <dataDir>/token-signing.key, generated with mode 0600.
	SigningKey string `yaml:"signingKey"`
	// TokenTTL is the lifetime of access tokens (--auth-token-ttl,
	// REGCACHE_AUTH_TOKEN_TTL; default 5m, between 1m and 24h).
	TokenTTL time.Duration `yaml:"tokenTTL"`
	// RefreshTokenTTL is the lifetime of refresh tokens, which docker
	// login keeps instead of the password (default 168h).
	RefreshTokenTTL time.Duration `yaml:"refreshTokenTTL"`
	// Access rules: who pulls and pushes which local repositories.
	// Absent: every user pulls and pushes everything.
	Access []auth.AccessRule `yaml:"access"`
	// Catalog lists the users who may list every repository name
	// (/v2/_catalog); "*" is every user. Absent: every user when Access
	// is absent, no one otherwise.
	Catalog []string `yaml:"catalog"`
	// LoginFailures bound failed logins per client address.
	LoginFailures LoginFailures `yaml:"loginFailures"`
}

// LoginFailures: Max failed logins from one address within Window (of
// the first) block it until the window ends (defaults 10 and 5m).
type LoginFailures struct {
	Max    int           `yaml:"max"`
	Window time.Duration `yaml:"window"`
}

// authFlags registers the flags of client authentication and trusted
// proxies.
func authFlags(fs *pflag.FlagSet) {
	fs.String("auth-htpasswd", "", "require clients of /v2/ to log in as a user of this htpasswd file (bcrypt: htpasswd -B); see auth: in the config file for access rules (env REGCACHE_AUTH_HTPASSWD)")
	fs.String("auth-realm", "", "token endpoint URL sent to clients, for a server behind a proxy, e.g. https://regcache.example.com/v2/token (env REGCACHE_AUTH_REALM; default <scheme>://<host>/v2/token as the client reached it)")
	fs.String("auth-signing-key", "", "PEM PKCS #8 Ed25519 key signing tokens, shared by replicas (env REGCACHE_AUTH_SIGNING_KEY; default <data-dir>/token-signing.key, generated)")
	fs.Duration("auth-token-ttl", 0, "lifetime of access tokens, 1m to 24h (env REGCACHE_AUTH_TOKEN_TTL; default 5m)")
	fs.StringArray("trusted-proxy", nil, "address or CIDR of a proxy whose X-Forwarded-For is believed for login rate limits and audit records; repeatable (env REGCACHE_TRUSTED_PROXIES, comma-separated)")
}

// loadAuthSettings applies the environment and the flags of authFlags
// over the config file's values.
func loadAuthSettings(cfg *Config, fs *pflag.FlagSet, getenv func(string) string) error {
	for _, s := range []struct {
		dst       *string
		flag, env string
	}{
		{&cfg.Auth.Htpasswd, "auth-htpasswd", "REGCACHE_AUTH_HTPASSWD"},
		{&cfg.Auth.Realm, "auth-realm", "REGCACHE_AUTH_REALM"},
		{&cfg.Auth.SigningKey, "auth-signing-key", "REGCACHE_AUTH_SIGNING_KEY"},
	} {
		if v := getenv(s.env); v != "" {
			*s.dst = v
		}
		if fs.Changed(s.flag) {
			*s.dst, _ = fs.GetString(s.flag)
		}
	}
	if v := getenv("REGCACHE_AUTH_TOKEN_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("REGCACHE_AUTH_TOKEN_TTL=%q: want a duration such as 5m", v)
		}
		cfg.Auth.TokenTTL = d
	}
	if fs.Changed("auth-token-ttl") {
		cfg.Auth.TokenTTL, _ = fs.GetDuration("auth-token-ttl")
	}
	if v := getenv("REGCACHE_TRUSTED_PROXIES"); v != "" {
		cfg.TrustedProxies = nil
		for _, p := range strings.Split(v, ",") {
			cfg.TrustedProxies = append(cfg.TrustedProxies, strings.TrimSpace(p))
		}
	}
	if fs.Changed("trusted-proxy") {
		cfg.TrustedProxies, _ = fs.GetStringArray("trusted-proxy")
	}
	return nil
}

// validateAuth checks the auth section and the trusted proxies; errors
// name the field, the value and what is accepted.
func (c Config) validateAuth() error {
	if _, err := parseTrustedProxies(c.TrustedProxies); err != nil {
		return err
	}
	a := c.Auth
	if a.Htpasswd == "" {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"realm", a.Realm != ""}, {"service", a.Service != ""}, {"signingKey", a.SigningKey != ""},
			{"tokenTTL", a.TokenTTL != 0}, {"refreshTokenTTL", a.RefreshTokenTTL != 0}, {"access", a.Access != nil},
			{"catalog", a.Catalog != nil}, {"loginFailures", a.LoginFailures != LoginFailures{}},
		} {
			if f.set {
				return fmt.Errorf("auth.%s is set but client authentication is off: set auth.htpasswd (--auth-htpasswd) to require logins", f.name)
			}
		}
		return nil
	}
	if a.Realm != "" {
		u, err := url.Parse(a.Realm)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || strings.ContainsAny(a.Realm, `"\`) {
			return fmt.Errorf("auth.realm %q: want the absolute http(s) URL clients reach the token endpoint at, e.g. https://regcache.example.com/v2/token", a.Realm)
		}
	}
	if a.Service != "" && strings.ContainsAny(a.Service, "\" \t\\") {
		return fmt.Errorf("auth.service %q: want a name without spaces or quotes, e.g. regcache", a.Service)
	}
	if a.TokenTTL != 0 && (a.TokenTTL < time.Minute || a.TokenTTL > 24*time.Hour) {
		return fmt.Errorf("auth.tokenTTL %v: want between 1m and 24h, e.g. 5m (clients treat less than a minute as a minute; 0 means the default, 5m)", a.TokenTTL)
	}
	if a.RefreshTokenTTL != 0 && (a.RefreshTokenTTL < max(a.TokenTTL, auth.DefaultTokenTTL) || a.RefreshTokenTTL > 366*24*time.Hour) {
		return fmt.Errorf("auth.refreshTokenTTL %v: want between the token lifetime and 8784h, e.g. 168h (0 means the default, 168h)", a.RefreshTokenTTL)
	}
	if f := a.LoginFailures; f.Max < 0 || f.Window < 0 || (f.Window != 0 && f.Window < time.Second) || f.Window > 24*time.Hour {
		return fmt.Errorf("auth.loginFailures {max: %d, window: %v}: want max at least 1 and a window between 1s and 24h, e.g. {max: 10, window: 5m} (0 means the default)", f.Max, f.Window)
	}
	if _, err := auth.NewRules(a.Access, a.Catalog); err != nil {
		return fmt.Errorf("auth.%w", err)
	}
	return nil
}

// parseTrustedProxies parses addresses and CIDR prefixes.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("trustedProxies[%d] %q: want an IP address or a CIDR prefix, e.g. 10.0.0.0/8 or 192.0.2.10", i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// clientAuthFiles are the files of client authentication, read before
// serve creates anything: a bad htpasswd file or key is a configuration
// error, refused with its line before the data directory exists.
type clientAuthFiles struct {
	users   *auth.Users
	rules   *auth.Rules
	key     ed25519.PrivateKey // nil: the generated one in the data directory
	keyPath string
}

// readClientAuth reads the htpasswd file, the access rules and a
// configured signing key; nil when client authentication is off.
func readClientAuth(cfg Config, log *slog.Logger) (*clientAuthFiles, error) {
	a := cfg.Auth
	if a.Htpasswd == "" {
		return nil, nil
	}
	f := &clientAuthFiles{keyPath: a.SigningKey}
	var err error
	if f.users, err = auth.LoadUsers(a.Htpasswd, nil, log); err != nil {
		return nil, err
	}
	if f.rules, err = auth.NewRules(a.Access, a.Catalog); err != nil {
		return nil, fmt.Errorf("auth.%w", err)
	}
	if f.keyPath != "" {
		if f.key, err = auth.LoadKey(f.keyPath); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// authority builds the client authentication of the distribution API,
// generating the signing key in the data directory when none is
// configured; nil when client authentication is off.
func (f *clientAuthFiles) authority(cfg Config, log *slog.Logger) (registry.ClientAuth, error) {
	if f == nil {
		log.Info("client authentication off: anyone who reaches the listen address may pull; --auth-htpasswd requires logins")
		return nil, nil
	}
	a := cfg.Auth
	key, created := f.key, false
	if key == nil {
		var err error
		f.keyPath = filepath.Join(cfg.DataDir, "token-signing.key")
		if key, created, err = auth.LoadOrCreateKey(f.keyPath); err != nil {
			return nil, err
		}
	}
	if fi, err := os.Stat(f.keyPath); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the token signing key is readable by others than its owner: anyone who can read it can forge tokens; chmod 600 it",
			"signingKey", f.keyPath, "mode", fi.Mode().Perm().String())
	}
	authority, err := auth.New(auth.Options{Service: a.Service, Users: f.users, Rules: f.rules, Key: key,
		TokenTTL: a.TokenTTL, RefreshTokenTTL: a.RefreshTokenTTL,
		MaxFailures: a.LoginFailures.Max, FailureWindow: a.LoginFailures.Window, Log: log})
	if err != nil {
		return nil, err
	}
	names := f.users.Names()
	if len(names) == 0 {
		log.Warn("the htpasswd file has no users: no one can log in until it has", "htpasswd", a.Htpasswd)
	}
	for _, u := range f.rules.Users() {
		if !slices.Contains(names, u) {
			log.Warn("an access rule names a user the htpasswd file does not have", "user", u, "htpasswd", a.Htpasswd)
		}
	}
	access := "every user pulls and pushes every repository"
	if a.Access != nil {
		access = fmt.Sprintf("%d rules", len(a.Access))
	}
	log.Info("client authentication required", "htpasswd", a.Htpasswd, "users", len(names), "access", access,
		"signingKey", f.keyPath, "keyGenerated", created, "realm", cmp.Or(a.Realm, "<scheme>://<host>/v2/token of each request"))
	return authority, nil
}

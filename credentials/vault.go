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
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"golang.org/x/sync/singleflight"
)

// Vault authentication methods.
const (
	VaultAuthToken      = "token"
	VaultAuthAppRole    = "approle"
	VaultAuthKubernetes = "kubernetes"
)

// DefaultKubernetesTokenFile is where Kubernetes mounts a pod's
// service-account token.
const DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// VaultConfig tells regcache how to reach and log in to HashiCorp Vault.
// Every field is optional: the address, namespace and token default to the
// standard VAULT_ADDR, VAULT_NAMESPACE and VAULT_TOKEN variables (TLS
// settings come from VAULT_CACERT, VAULT_CLIENT_CERT, ... as for the vault
// CLI). No secret is written here: tokens, secret IDs and service-account
// tokens are read from files.
type VaultConfig struct {
	// Address of Vault, e.g. https://vault.example.com:8200 (default VAULT_ADDR).
	Address string `yaml:"address"`
	// Namespace (Vault Enterprise/HCP; default VAULT_NAMESPACE).
	Namespace string `yaml:"namespace"`
	// Auth is token (default), approle or kubernetes.
	Auth string `yaml:"auth"`
	// TokenFile holds the token for token auth (default: VAULT_TOKEN).
	TokenFile string `yaml:"tokenFile"`
	// RoleID (or RoleIDFile) and SecretIDFile log in with AppRole.
	RoleID       string `yaml:"roleId"`
	RoleIDFile   string `yaml:"roleIdFile"`
	SecretIDFile string `yaml:"secretIdFile"`
	// AppRoleMount is the mount path of the AppRole auth method (default approle).
	AppRoleMount string `yaml:"appRoleMount"`
	// KubernetesRole and KubernetesTokenFile (default the pod's
	// service-account token) log in with the Kubernetes auth method.
	KubernetesRole      string `yaml:"kubernetesRole"`
	KubernetesTokenFile string `yaml:"kubernetesTokenFile"`
	// KubernetesMount is the mount path of the Kubernetes auth method
	// (default kubernetes).
	KubernetesMount string `yaml:"kubernetesMount"`
}

// withDefaults fills the environment's values and the defaults in.
func (c VaultConfig) withDefaults(getenv func(string) string) VaultConfig {
	if c.Address == "" {
		c.Address = getenv(api.EnvVaultAddress)
	}
	if c.Namespace == "" {
		c.Namespace = getenv(api.EnvVaultNamespace)
	}
	if c.Auth == "" {
		c.Auth = VaultAuthToken
	}
	if c.AppRoleMount == "" {
		c.AppRoleMount = "approle"
	}
	if c.KubernetesMount == "" {
		c.KubernetesMount = "kubernetes"
	}
	if c.KubernetesTokenFile == "" {
		c.KubernetesTokenFile = DefaultKubernetesTokenFile
	}
	c.AppRoleMount = strings.Trim(c.AppRoleMount, "/")
	c.KubernetesMount = strings.Trim(c.KubernetesMount, "/")
	return c
}

// Validate checks the settings (not whether Vault accepts them).
func (c VaultConfig) Validate() error {
	switch c.Auth {
	case "", VaultAuthToken:
		if c.RoleID != "" || c.RoleIDFile != "" || c.SecretIDFile != "" || c.KubernetesRole != "" {
			return fmt.Errorf("vault: auth is token but AppRole or Kubernetes settings are given; set auth: approle or auth: kubernetes")
		}
	case VaultAuthAppRole:
		if (c.RoleID == "") == (c.RoleIDFile == "") {
			return fmt.Errorf("vault: auth approle needs exactly one of roleId or roleIdFile")
		}
		if c.SecretIDFile == "" {
			return fmt.Errorf("vault: auth approle needs secretIdFile (a file holding the secret ID; the secret ID itself never goes into the config)")
		}
	case VaultAuthKubernetes:
		if c.KubernetesRole == "" {
			return fmt.Errorf("vault: auth kubernetes needs kubernetesRole (the Vault role bound to regcache's service account)")
		}
	default:
		return fmt.Errorf("vault: auth %q: want token, approle or kubernetes", c.Auth)
	}
	return nil
}

// Vault resolves vault:// references: fields of HashiCorp Vault KV v2
// secrets, read through github.com/hashicorp/vault/api. It logs in lazily,
// on the first resolution; Run keeps the token alive (renewal with
// api.LifetimeWatcher, a new login when an AppRole or Kubernetes token
// reaches its maximum TTL). Close ends it.
type Vault struct {
	cfg     VaultConfig
	getenv  func(string) string
	client  *api.Client
	http    *http.Client // the client's, to close its idle connections
	log     *slog.Logger
	logins  singleflight.Group
	loginCh chan struct{} // signalled after every login
	life    *lifetime     // Resolve, logins and Run, ended by Close

	mu   sync.Mutex
	auth *api.Secret // the current login; nil until logged in
}

// NewVault returns the Vault backend, or nil when no Vault is configured
// (no address in cfg nor VAULT_ADDR). It does not contact Vault.
func NewVault(cfg VaultConfig, getenv func(string) string, log *slog.Logger) (*Vault, error) {
	cfg = cfg.withDefaults(getenv)
	if cfg.Address == "" {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ac := api.DefaultConfig()
	if ac.Error != nil {
		return nil, fmt.Errorf("vault: %w", ac.Error)
	}
	ac.Address = cfg.Address
	ac.MaxRetries = 1
	ac.Timeout = 15 * time.Second
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	// NewClient picks up VAULT_TOKEN from the process environment; the
	// token is set at login, from the configured source only.
	client.ClearToken()
	client.SetNamespace(cfg.Namespace)
	return &Vault{cfg: cfg, getenv: getenv, client: client, http: ac.HttpClient, log: log,
		loginCh: make(chan struct{}, 1), life: newLifetime()}, nil
}

// Address is the Vault address in use.
func (v *Vault) Address() string { return v.cfg.Address }

// Close ends the backend: resolutions and logins in flight are cancelled,
// Run returns, and once they have, the HTTP client's idle keep-alive
// connections are closed, so no goroutine of the backend is left. Later
// resolutions fail with ErrBackendUnavailable. Close may be called more
// than once.
func (v *Vault) Close() {
	v.life.close()
	v.http.CloseIdleConnections()
}

// errClosed is what a resolution after Close gets.
func errClosed() error {
	return fail(ErrBackendUnavailable, "vault: the backend is closed (regcache is shutting down)")
}

// Resolve reads the referenced field of a KV v2 secret.
func (v *Vault) Resolve(ctx context.Context, r Ref) (string, error) {
	ctx, end, ok := v.life.begin(ctx)
	if !ok {
		return "", errClosed()
	}
	defer end()
	data, err := v.read(ctx, r)
	if err != nil {
		return "", err
	}
	p := r.KVDataPath()
	raw, ok := data[r.Field]
	if !ok {
		fields := make([]string, 0, len(data))
		for k := range data {
			fields = append(fields, k)
		}
		sort.Strings(fields)
		return "", fail(ErrSecretNotFound, "vault: secret %s has no field %q (its fields: %s)", p, r.Field, strings.Join(fields, ", "))
	}
	var s string
	switch x := raw.(type) {
	case string:
		s = x
	case json.Number:
		s = x.String()
	default:
		// Describe the type only: the value may be the secret.
		return "", fail(ErrInvalidSecret, "vault: field %q of %s is %s, not a string", r.Field, p, kindOf(raw))
	}
	if s == "" {
		return "", fail(ErrInvalidSecret, "vault: field %q of %s is empty", r.Field, p)
	}
	return s, nil
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("a %T", v)
}

// read returns the data of the latest version of the secret r points to.
// A 403 may mean that the token expired or was revoked rather than that
// the policy does not grant the path: then regcache logs in again once.
func (v *Vault) read(ctx context.Context, r Ref) (map[string]any, error) {
	if err := v.ensureLogin(ctx); err != nil {
		return nil, err
	}
	s, err := v.client.KVv2(r.Mount).Get(ctx, r.Path)
	if statusOf(err) == 403 {
		if _, lerr := v.client.Auth().Token().LookupSelfWithContext(ctx); statusOf(lerr) == 403 {
			v.log.InfoContext(ctx, "vault token no longer valid; logging in again", "auth", v.cfg.Auth)
			v.invalidate()
			if err := v.ensureLogin(ctx); err != nil {
				return nil, err
			}
			s, err = v.client.KVv2(r.Mount).Get(ctx, r.Path)
		}
	}
	p := r.KVDataPath()
	switch st := statusOf(err); {
	case err == nil:
	case errors.Is(err, api.ErrSecretNotFound):
		return nil, fail(ErrSecretNotFound, "vault: no secret at %s", p)
	case st == 403:
		return nil, fail(ErrPermissionDenied, "vault: permission denied reading %s (grant it with the policy `regcache credential-set policy` prints)", p)
	case st != 0:
		return nil, fail(ErrBackendUnavailable, "vault: reading %s: Vault answered %d: %s", p, st, vaultErrors(err))
	default:
		return nil, fail(ErrBackendUnavailable, "vault: reading %s at %s: %s", p, v.cfg.Address, rootCause(err))
	}
	if s == nil || s.Data == nil {
		return nil, fail(ErrSecretNotFound, "vault: secret %s has no data (its latest version is deleted or destroyed)", p)
	}
	return s.Data, nil
}

// statusOf returns the HTTP status of a Vault error response, 0 for others.
func statusOf(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// vaultErrors is the "errors" list of a Vault error response. Vault's
// messages describe the request (paths, policies, seal state); request
// bodies and secret data are not part of them.
func vaultErrors(err error) string {
	var re *api.ResponseError
	if errors.As(err, &re) && len(re.Errors) > 0 {
		return strings.Join(re.Errors, "; ")
	}
	return "no error message"
}

// rootCause drops the api package's wrapping ("error encountered while
// reading secret at ...") and keeps the transport error.
func rootCause(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// ensureLogin logs in unless a login is current; concurrent callers share
// one login.
func (v *Vault) ensureLogin(ctx context.Context) error {
	v.mu.Lock()
	ok := v.auth != nil
	v.mu.Unlock()
	if ok {
		return nil
	}
	_, err, _ := v.logins.Do("login", func() (any, error) {
		// The login is shared: it outlives the caller that started it,
		// but not the backend.
		lctx, end, ok := v.life.begin(context.WithoutCancel(ctx))
		if !ok {
			return nil, errClosed()
		}
		defer end()
		lctx, cancel := context.WithTimeout(lctx, 30*time.Second)
		defer cancel()
		return nil, v.login(lctx)
	})
	return err
}

// invalidate forgets the current login; the next resolution logs in again.
func (v *Vault) invalidate() {
	v.mu.Lock()
	v.auth = nil
	v.mu.Unlock()
}

func (v *Vault) login(ctx context.Context) error {
	var auth *api.Secret
	var err error
	switch v.cfg.Auth {
	case VaultAuthToken:
		auth, err = v.tokenLogin(ctx)
	case VaultAuthAppRole:
		auth, err = v.appRoleLogin(ctx)
	case VaultAuthKubernetes:
		auth, err = v.kubernetesLogin(ctx)
	}
	if err != nil {
		return err
	}
	v.client.SetToken(auth.Auth.ClientToken)
	v.mu.Lock()
	v.auth = auth
	v.mu.Unlock()
	select {
	case v.loginCh <- struct{}{}:
	default:
	}
	v.log.InfoContext(ctx, "logged in to vault", "address", v.cfg.Address, "auth", v.cfg.Auth,
		"ttl", time.Duration(auth.Auth.LeaseDuration)*time.Second, "renewable", auth.Auth.Renewable)
	return nil
}

// tokenLogin takes the token from tokenFile or VAULT_TOKEN and looks it up
// for its TTL.
func (v *Vault) tokenLogin(ctx context.Context) (*api.Secret, error) {
	var token, source string
	if v.cfg.TokenFile != "" {
		t, err := readCredentialFile(v.cfg.TokenFile, "vault.tokenFile")
		if err != nil {
			return nil, err
		}
		token, source = t, v.cfg.TokenFile
	} else {
		token, source = v.getenv(api.EnvVaultToken), api.EnvVaultToken
	}
	if token == "" {
		return nil, fail(ErrBackendUnavailable, "vault: no token: set vault.tokenFile in the config file or VAULT_TOKEN, or use auth approle or kubernetes")
	}
	c, err := v.client.Clone()
	if err != nil {
		return nil, fail(ErrBackendUnavailable, "vault: %v", err)
	}
	c.SetNamespace(v.cfg.Namespace)
	c.SetToken(token)
	s, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, v.loginError("the token from "+source, err)
	}
	ttl, _ := s.TokenTTL()
	renewable, _ := s.TokenIsRenewable()
	return &api.Secret{Auth: &api.SecretAuth{ClientToken: token, LeaseDuration: int(ttl.Seconds()), Renewable: renewable}}, nil
}

func (v *Vault) appRoleLogin(ctx context.Context) (*api.Secret, error) {
	roleID := v.cfg.RoleID
	if v.cfg.RoleIDFile != "" {
		var err error
		if roleID, err = readCredentialFile(v.cfg.RoleIDFile, "vault.roleIdFile"); err != nil {
			return nil, err
		}
	}
	secretID, err := readCredentialFile(v.cfg.SecretIDFile, "vault.secretIdFile")
	if err != nil {
		return nil, err
	}
	return v.writeLogin(ctx, "auth/"+v.cfg.AppRoleMount+"/login", map[string]any{"role_id": roleID, "secret_id": secretID})
}

func (v *Vault) kubernetesLogin(ctx context.Context) (*api.Secret, error) {
	jwt, err := readCredentialFile(v.cfg.KubernetesTokenFile, "vault.kubernetesTokenFile")
	if err != nil {
		return nil, err
	}
	return v.writeLogin(ctx, "auth/"+v.cfg.KubernetesMount+"/login", map[string]any{"role": v.cfg.KubernetesRole, "jwt": jwt})
}

// writeLogin posts login data with a client that carries no token.
func (v *Vault) writeLogin(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	c, err := v.client.Clone()
	if err != nil {
		return nil, fail(ErrBackendUnavailable, "vault: %v", err)
	}
	c.SetNamespace(v.cfg.Namespace)
	c.ClearToken()
	s, err := c.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, v.loginError(v.cfg.Auth+" login at "+path, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fail(ErrBackendUnavailable, "vault: %s login at %s returned no token", v.cfg.Auth, path)
	}
	return s, nil
}

func (v *Vault) loginError(what string, err error) error {
	switch st := statusOf(err); {
	case st == 400 || st == 401 || st == 403:
		return fail(ErrPermissionDenied, "vault: %s was refused: %s", what, vaultErrors(err))
	case st != 0:
		return fail(ErrBackendUnavailable, "vault: %s: Vault answered %d: %s", what, st, vaultErrors(err))
	}
	return fail(ErrBackendUnavailable, "vault: %s at %s: %s", what, v.cfg.Address, rootCause(err))
}

// readCredentialFile reads a file holding a Vault credential (token, role
// or secret ID, service-account JWT), trimmed of surrounding space.
func readCredentialFile(path, setting string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fail(ErrBackendUnavailable, "vault: %s %s: %s", setting, path, pathErrText(err))
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fail(ErrBackendUnavailable, "vault: %s %s is empty", setting, path)
	}
	return s, nil
}

// Run keeps the login alive until ctx ends or the backend closes: a
// renewable token is renewed by an api.LifetimeWatcher; when it can no
// longer be renewed (maximum TTL reached, or not renewable), AppRole and
// Kubernetes log in again, and a token from tokenFile or VAULT_TOKEN is
// read again at the next resolution.
func (v *Vault) Run(ctx context.Context) {
	ctx, end, ok := v.life.begin(ctx)
	if !ok {
		return
	}
	defer end()
	for ctx.Err() == nil {
		v.mu.Lock()
		auth := v.auth
		v.mu.Unlock()
		if auth == nil || auth.Auth.LeaseDuration == 0 {
			// Not logged in yet, or a token that never expires (root).
			select {
			case <-ctx.Done():
			case <-v.loginCh:
			}
			continue
		}
		v.watch(ctx, auth)
	}
}

// watch renews auth until it can no longer be, a new login replaces it, or
// ctx ends.
func (v *Vault) watch(ctx context.Context, auth *api.Secret) {
	w, err := v.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: auth})
	if err != nil {
		v.log.Warn("vault token renewal not possible", "err", err)
		select {
		case <-ctx.Done():
		case <-v.loginCh:
		}
		return
	}
	go w.Start()
	stop := func() {
		w.Stop()
		<-w.DoneCh()
	}
	for {
		select {
		case <-ctx.Done():
			stop()
			return
		case <-v.loginCh:
			stop() // a new login (after a refused token): watch that one
			return
		case r := <-w.RenewCh():
			ttl := 0
			if r.Secret != nil && r.Secret.Auth != nil {
				ttl = r.Secret.Auth.LeaseDuration
			}
			v.log.Debug("vault token renewed", "ttl", time.Duration(ttl)*time.Second)
		case err := <-w.DoneCh():
			v.mu.Lock()
			current := v.auth == auth
			v.mu.Unlock()
			if !current {
				return
			}
			if err != nil {
				v.log.Warn("vault token renewal failed", "err", err)
			}
			v.invalidate()
			if v.cfg.Auth == VaultAuthToken {
				v.log.Warn("vault token is about to expire and cannot be renewed; regcache reads the token again at the next resolution",
					"source", map[bool]string{true: v.cfg.TokenFile, false: api.EnvVaultToken}[v.cfg.TokenFile != ""])
				return
			}
			v.relogin(ctx)
			return
		}
	}
}

// relogin logs in again, retrying with backoff until it works or ctx ends.
func (v *Vault) relogin(ctx context.Context) {
	wait := time.Second
	for {
		err := v.ensureLogin(ctx)
		if err == nil {
			// Drain the signal of this login: Run watches it next.
			select {
			case <-v.loginCh:
			default:
			}
			return
		}
		v.log.Warn("vault login failed; retrying", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

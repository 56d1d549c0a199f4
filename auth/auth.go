// Package auth owns the identities of regcache's clients and what they may
// do: users from an htpasswd file (bcrypt only), access rules per
// repository pattern, the signed short-lived tokens of the Docker token
// flow (https://distribution.github.io/distribution/spec/auth/token/),
// and the rate limit of failed logins per source address.
//
// It knows nothing of HTTP: package registry asks it to authorise a
// request's token for what the request needs, to check a login, and to
// issue a token.
package auth

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrUnauthenticated: no token, or a token that does not verify
	// (signature, expiry, service), where the request needs one; or a
	// failed login.
	ErrUnauthenticated = errors.New("authentication required")
	// ErrInvalidToken: a token was presented and does not verify; it
	// comes with ErrUnauthenticated.
	ErrInvalidToken = errors.New("invalid token")
	// ErrInsufficientScope: the token is valid and its user has the right,
	// but the token does not grant it: the client asks for a token with
	// the scope of the challenge.
	ErrInsufficientScope = errors.New("insufficient scope")
	// ErrDenied: the authenticated user does not have the right.
	ErrDenied = errors.New("access denied")
	// ErrTooManyAttempts: too many failed logins came from the address;
	// the error is a *RetryError saying when to try again.
	ErrTooManyAttempts = errors.New("too many failed logins")
)

// RetryError refuses a login from an address that failed too often.
type RetryError struct {
	// RetryAfter is how long until the address may try again.
	RetryAfter time.Duration
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("%v from this address; retry in %v", ErrTooManyAttempts, e.RetryAfter.Round(time.Second))
}

// Is makes errors.Is(err, ErrTooManyAttempts) true.
func (e *RetryError) Is(target error) bool { return target == ErrTooManyAttempts }

// Identity is who a request or a token speaks for.
type Identity struct {
	// Name is the user name from the htpasswd file; "" is anonymous.
	Name string
}

// Anonymous reports whether the identity is no user.
func (id Identity) Anonymous() bool { return id.Name == "" }

func (id Identity) String() string {
	if id.Anonymous() {
		return "anonymous"
	}
	return fmt.Sprintf("user %q", id.Name)
}

// Resource types and actions of scopes and token claims.
const (
	TypeRepository = "repository"
	TypeRegistry   = "registry"
	// Catalog is the registry resource of /v2/_catalog (scope
	// registry:catalog:*, as distribution names it).
	Catalog    = "catalog"
	ActionPull = "pull"
	ActionPush = "push"
	ActionAll  = "*"
)

// Access is what a request needs, or a token grants, on one resource: a
// scope of the token specification (type:name:actions), and an entry of a
// token's access claim.
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Repository is the access to a repository for actions.
func Repository(name string, actions ...string) Access {
	return Access{Type: TypeRepository, Name: name, Actions: actions}
}

// String is the scope syntax, "repository:lab/app:pull,push".
func (a Access) String() string {
	return a.Type + ":" + a.Name + ":" + strings.Join(a.Actions, ",")
}

// ParseScopes parses the scope parameters of token requests: each is one
// or more space-separated type[(class)]:name:actions; a malformed one is
// skipped (it is granted nothing). The name is what lies between the first
// and the last colon.
func ParseScopes(params ...string) []Access {
	var out []Access
	for _, p := range params {
		for _, s := range strings.Fields(p) {
			typ, rest, ok := strings.Cut(s, ":")
			i := strings.LastIndex(rest, ":")
			if !ok || i <= 0 || i == len(rest)-1 {
				continue
			}
			if j := strings.IndexByte(typ, '('); j >= 0 { // repository(plugin)
				typ = typ[:j]
			}
			out = append(out, Access{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")})
		}
	}
	return out
}

// covers reports whether granted includes action on the resource of need.
func covers(granted []Access, typ, name, action string) bool {
	for _, g := range granted {
		if g.Type == typ && g.Name == name && (slices.Contains(g.Actions, action) || slices.Contains(g.Actions, ActionAll)) {
			return true
		}
	}
	return false
}

// Options configure an Authority.
type Options struct {
	// Service is the audience of tokens and the service of challenges
	// (default "regcache").
	Service string
	// Users are the users who may log in.
	Users *Users
	// Rules say who may do what.
	Rules *Rules
	// Key signs and verifies tokens.
	Key ed25519.PrivateKey
	// TokenTTL is the lifetime of access tokens (default 5m).
	TokenTTL time.Duration
	// RefreshTokenTTL is the lifetime of refresh tokens, which docker
	// login keeps instead of the password (default 7 days).
	RefreshTokenTTL time.Duration
	// MaxFailures failed logins from one address within FailureWindow
	// block it until the window ends (defaults 10 and 5m).
	MaxFailures   int
	FailureWindow time.Duration
	// Now is the clock (default time.Now); tests inject theirs.
	Now func() time.Time
	Log *slog.Logger
}

// Defaults of Options.
const (
	DefaultService         = "regcache"
	DefaultTokenTTL        = 5 * time.Minute
	DefaultRefreshTokenTTL = 7 * 24 * time.Hour
	DefaultMaxFailures     = 10
	DefaultFailureWindow   = 5 * time.Minute
)

// Authority authenticates clients and decides what they may do. It is
// safe for concurrent use.
type Authority struct {
	service         string
	users           *Users
	rules           *Rules
	tokens          signer
	tokenTTL        time.Duration
	refreshTokenTTL time.Duration
	limiter         *limiter
	now             func() time.Time
	log             *slog.Logger
}

// New returns an Authority.
func New(o Options) (*Authority, error) {
	if o.Users == nil || o.Rules == nil || o.Log == nil {
		return nil, errors.New("auth: users, rules and a logger are required")
	}
	if len(o.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("auth: an Ed25519 signing key is required")
	}
	if o.Service == "" {
		o.Service = DefaultService
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.RefreshTokenTTL == 0 {
		o.RefreshTokenTTL = DefaultRefreshTokenTTL
	}
	if o.MaxFailures == 0 {
		o.MaxFailures = DefaultMaxFailures
	}
	if o.FailureWindow == 0 {
		o.FailureWindow = DefaultFailureWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Authority{
		service:         o.Service,
		users:           o.Users,
		rules:           o.Rules,
		tokens:          newSigner(o.Key),
		tokenTTL:        o.TokenTTL,
		refreshTokenTTL: o.RefreshTokenTTL,
		limiter:         newLimiter(o.MaxFailures, o.FailureWindow, o.Now),
		now:             o.Now,
		log:             o.Log,
	}, nil
}

// Service is the name tokens are issued for (their audience).
func (a *Authority) Service() string { return a.service }

// Authorize decides whether a request bearing token ("" when it has none)
// may have need. A request that needs nothing (the /v2/ version check)
// needs a valid token. A request needs no token where the rules let
// anonymous clients pull. Otherwise the token must verify (signature,
// expiry, service), grant each access, and its user must still exist and
// still have each right under the current rules: a rule change or a user
// removed from the htpasswd file takes effect at once, not when tokens
// expire.
//
// Errors: ErrUnauthenticated (no token or an invalid one),
// ErrInsufficientScope (the user has the right but not the token), and
// ErrDenied (an authenticated user without the right).
func (a *Authority) Authorize(token string, need []Access) (Identity, error) {
	if token == "" {
		if len(need) > 0 && a.allowedAll(Identity{}, need) {
			return Identity{}, nil
		}
		if len(need) == 0 {
			return Identity{}, ErrUnauthenticated
		}
		return Identity{}, fmt.Errorf("%w to %s", ErrUnauthenticated, describe(need))
	}
	c, err := a.verify(token, useAccess)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Name: c.Subject}
	if !id.Anonymous() && !a.users.Exists(id.Name) {
		return id, invalid("its user is no longer known; log in again")
	}
	for _, n := range need {
		for _, action := range n.Actions {
			switch {
			case a.allowed(Identity{}, n.Type, n.Name, action):
				// What anyone may do needs no scope, as without a token.
			case !a.allowed(id, n.Type, n.Name, action) && id.Anonymous():
				return id, fmt.Errorf("%w to %s %s", ErrUnauthenticated, action, n.Name)
			case !a.allowed(id, n.Type, n.Name, action):
				return id, fmt.Errorf("%w: %s may not %s %s", ErrDenied, id, action, n.Name)
			case !covers(c.Access, n.Type, n.Name, action):
				return id, fmt.Errorf("%w: the token does not grant %s on %s; fetch one for the scope of the challenge", ErrInsufficientScope, action, n.Name)
			}
		}
	}
	return id, nil
}

// describe says what a request needs, "pull hub/app".
func describe(need []Access) string {
	var parts []string
	for _, n := range need {
		parts = append(parts, strings.Join(n.Actions, " and ")+" "+n.Name)
	}
	return strings.Join(parts, ", ")
}

// allowed reports whether the rules let id do action on a resource.
func (a *Authority) allowed(id Identity, typ, name, action string) bool {
	switch {
	case typ == TypeRepository:
		return a.rules.Allows(id, name, action)
	case typ == TypeRegistry && name == Catalog:
		return a.rules.MayList(id)
	}
	return false
}

// allowedAll reports whether id may have every access of need.
func (a *Authority) allowedAll(id Identity, need []Access) bool {
	for _, n := range need {
		for _, action := range n.Actions {
			if !a.allowed(id, n.Type, n.Name, action) {
				return false
			}
		}
	}
	return true
}

// Login checks a user's password; from is the client's address, which
// is refused for a while after too many failures (*RetryError). A wrong
// user and a wrong password fail alike, in about the same time.
func (a *Authority) Login(from netip.Addr, user, password string) (Identity, error) {
	if err := a.limiter.check(from); err != nil {
		return Identity{}, err
	}
	if !a.users.Check(user, password) {
		a.failed(from, user, "wrong user name or password")
		return Identity{}, fmt.Errorf("%w: wrong user name or password", ErrUnauthenticated)
	}
	return Identity{Name: user}, nil
}

// Refresh checks a refresh token (the OAuth2 refresh_token grant) and
// returns its user. It stops working when the user leaves the htpasswd
// file or gets another password. Failures count as failed logins.
func (a *Authority) Refresh(from netip.Addr, token string) (Identity, error) {
	if err := a.limiter.check(from); err != nil {
		return Identity{}, err
	}
	c, err := a.verify(token, useRefresh)
	if err == nil && !sameFingerprint(a.users.fingerprint(c.Subject), c.Password) {
		err = invalid("its user is no longer known or has another password; log in again")
	}
	if err != nil {
		a.failed(from, c.Subject, "refresh token refused")
		return Identity{}, err
	}
	return Identity{Name: c.Subject}, nil
}

// failed counts a failed login from an address and logs it (never the
// password), once more when the address gets blocked.
func (a *Authority) failed(from netip.Addr, user, why string) {
	if blocked := a.limiter.fail(from); blocked {
		a.log.Warn("login blocked: too many failed logins from this address", "from", from.String(),
			"failures", a.limiter.max, "window", a.limiter.window)
		return
	}
	if !a.users.Exists(user) {
		// Not logged as typed: a password entered as the user name
		// would end up in the log.
		user = "<not a user of the htpasswd file>"
	}
	a.log.Info("login failed", "user", user, "from", from.String(), "reason", why)
}

// Grant is a token issued to a client.
type Grant struct {
	// Token is the signed access token.
	Token string
	// RefreshToken is set when an authenticated client asked for offline
	// access.
	RefreshToken string
	// Access is what the token grants: what was asked and is allowed.
	Access   []Access
	IssuedAt time.Time
	TTL      time.Duration
}

// Issue signs a token for id granting, of want, only what the rules allow
// (possibly less than asked, or nothing, as the specification says), and
// a refresh token when offline is true and id is a user.
func (a *Authority) Issue(id Identity, want []Access, offline bool) (Grant, error) {
	now := a.now()
	g := Grant{IssuedAt: now, TTL: a.tokenTTL}
	for _, w := range want {
		var actions []string
		for _, action := range w.Actions {
			if a.allowed(id, w.Type, w.Name, action) && !slices.Contains(actions, action) {
				actions = append(actions, action)
			}
		}
		if len(actions) > 0 {
			g.Access = append(g.Access, Access{Type: w.Type, Name: w.Name, Actions: actions})
		}
	}
	var err error
	g.Token, err = a.tokens.sign(claims{Issuer: a.service, Subject: id.Name, Audience: a.service,
		Expiry: now.Add(a.tokenTTL).Unix(), NotBefore: now.Unix(), IssuedAt: now.Unix(), ID: newID(), Access: nonNil(g.Access)})
	if err != nil {
		return Grant{}, err
	}
	if offline && !id.Anonymous() {
		g.RefreshToken, err = a.tokens.sign(claims{Issuer: a.service, Subject: id.Name, Audience: a.service,
			Expiry: now.Add(a.refreshTokenTTL).Unix(), NotBefore: now.Unix(), IssuedAt: now.Unix(), ID: newID(),
			Use: useRefresh, Password: a.users.fingerprint(id.Name)})
		if err != nil {
			return Grant{}, err
		}
	}
	return g, nil
}

func nonNil(a []Access) []Access {
	if a == nil {
		return []Access{}
	}
	return a
}

// verify checks a token's signature, issuer, audience, lifetime and use.
func (a *Authority) verify(token, use string) (claims, error) {
	c, err := a.tokens.verify(token)
	if err != nil {
		return c, invalid("%v", err)
	}
	now := a.now().Unix()
	switch {
	case c.Use != use:
		return c, invalid("a %s token cannot be used here", useName(c.Use))
	case c.Audience != a.service || c.Issuer != a.service:
		return c, invalid("issued for service %q, not %q", c.Audience, a.service)
	case now >= c.Expiry:
		return c, invalid("expired %v ago; fetch a new one", time.Duration(now-c.Expiry)*time.Second)
	case c.NotBefore > now+int64(clockSkew/time.Second):
		return c, invalid("not valid yet")
	}
	return c, nil
}

// invalid is the error of a token that does not verify.
func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrUnauthenticated, ErrInvalidToken, fmt.Sprintf(format, a...))
}

// clockSkew is how far ahead of this server's clock another replica
// sharing the key may have issued a token.
const clockSkew = time.Minute

func useName(use string) string {
	if use == "" {
		return "access"
	}
	return use
}

package auth_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/regcache/regcache/auth"
)

// clock is a settable clock, in nanoseconds since the Unix epoch.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// htpasswd writes users (name -> password) as bcrypt lines to a file in dir.
func htpasswd(t testing.TB, path string, users map[string]string) {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type fixture struct {
	a     *auth.Authority
	clock *clock
	file  string
	key   ed25519.PrivateKey
}

// rules of the fixture: alice pushes lab/*, bob pulls it; hub/* is open
// to anonymous pulls; only alice lists the catalog.
var fixtureRules = []auth.AccessRule{
	{Repository: "lab/*", Pull: []string{"bob"}, Push: []string{"alice"}},
	{Repository: "lab/secret", Pull: []string{"alice"}},
	{Repository: "hub/*", AnonymousPull: true},
	{Repository: "team/*", Pull: []string{"*"}},
}

func newFixture(t *testing.T, opts ...func(*auth.Options)) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), file: filepath.Join(t.TempDir(), "htpasswd")}
	htpasswd(t, f.file, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})
	users, err := auth.LoadUsers(f.file, f.clock.Now, discard())
	if err != nil {
		t.Fatal(err)
	}
	rules, err := auth.NewRules(fixtureRules, []string{"alice"})
	if err != nil {
		t.Fatal(err)
	}
	_, f.key, _ = ed25519.GenerateKey(rand.Reader)
	o := auth.Options{Users: users, Rules: rules, Key: f.key, Now: f.clock.Now, Log: discard(), MaxFailures: 3, FailureWindow: time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	f.a, err = auth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var local = netip.MustParseAddr("127.0.0.1")

// token logs user in and returns a token for scopes.
func (f *fixture) token(t *testing.T, user, pass string, scopes ...string) string {
	t.Helper()
	id := auth.Identity{}
	if user != "" {
		var err error
		if id, err = f.a.Login(local, user, pass); err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
	}
	g, err := f.a.Issue(id, auth.ParseScopes(scopes...), false)
	if err != nil {
		t.Fatal(err)
	}
	return g.Token
}

func TestAuthorize(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	other := newFixture(t, func(o *auth.Options) { o.Service = "other" })
	pull := func(repo string) []auth.Access { return []auth.Access{auth.Repository(repo, "pull")} }
	push := func(repo string) []auth.Access { return []auth.Access{auth.Repository(repo, "push")} }
	aliceLab := f.token(t, "alice", "alice-pw", "repository:lab/app:pull,push")
	tests := []struct {
		name  string
		token string
		need  []auth.Access
		want  error // nil: allowed
	}{
		{"version check without a token", "", nil, auth.ErrUnauthenticated},
		{"version check with an anonymous token", f.token(t, "", ""), nil, nil},
		{"anonymous pull where allowed", "", pull("hub/app"), nil},
		{"anonymous push where pulls are open", "", push("hub/app"), auth.ErrUnauthenticated},
		{"anonymous pull elsewhere", "", pull("lab/app"), auth.ErrUnauthenticated},
		{"anonymous token elsewhere", f.token(t, "", "", "repository:lab/app:pull"), pull("lab/app"), auth.ErrUnauthenticated},
		{"pusher pushes", aliceLab, push("lab/app"), nil},
		{"pusher pulls", aliceLab, pull("lab/app"), nil},
		{"puller pushes", f.token(t, "bob", "bob-pw", "repository:lab/app:pull,push"), push("lab/app"), auth.ErrDenied},
		{"right user, wrong repository", f.token(t, "bob", "bob-pw", "repository:lab/secret:pull"), pull("lab/secret"), auth.ErrDenied},
		{"exact rule beats the prefix", f.token(t, "alice", "alice-pw", "repository:lab/secret:pull"), pull("lab/secret"), nil},
		{"token for another repository", aliceLab, pull("lab/other"), auth.ErrInsufficientScope},
		{"token for pull, request pushes", f.token(t, "alice", "alice-pw", "repository:lab/app:pull"), push("lab/app"), auth.ErrInsufficientScope},
		{"any user", f.token(t, "bob", "bob-pw", "repository:team/x:pull"), pull("team/x"), nil},
		{"no rule matches", f.token(t, "alice", "alice-pw", "repository:elsewhere:pull"), pull("elsewhere"), auth.ErrDenied},
		{"anonymous pull needs no scope with a token", f.token(t, "bob", "bob-pw"), pull("hub/app"), nil},
		{"catalog", f.token(t, "alice", "alice-pw", "registry:catalog:*"), []auth.Access{{Type: "registry", Name: "catalog", Actions: []string{"*"}}}, nil},
		{"catalog denied", f.token(t, "bob", "bob-pw", "registry:catalog:*"), []auth.Access{{Type: "registry", Name: "catalog", Actions: []string{"*"}}}, auth.ErrDenied},
		{"token for another service", other.token(t, "alice", "alice-pw", "repository:lab/app:pull"), pull("lab/app"), auth.ErrUnauthenticated},
		{"token signed by another key", other.token(t, "alice", "alice-pw", "repository:lab/app:pull"), pull("hub/app"), auth.ErrUnauthenticated},
		{"garbage", "not-a-token", pull("hub/app"), auth.ErrUnauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.a.Authorize(tc.token, tc.need)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Authorize: %v; want %v", err, tc.want)
			}
		})
	}
}

// The token endpoint grants what is asked and allowed, and nothing else.
func TestIssueGrantsOnlyWhatIsAllowed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	bob, err := f.a.Login(local, "bob", "bob-pw")
	if err != nil {
		t.Fatal(err)
	}
	g, err := f.a.Issue(bob, auth.ParseScopes("repository:lab/app:pull,push repository:lab/secret:pull", "registry:catalog:*", "repository(plugin):team/x:pull", "bogus"), false)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(g.Access)
	if want := `[{"type":"repository","name":"lab/app","actions":["pull"]},{"type":"repository","name":"team/x","actions":["pull"]}]`; string(got) != want {
		t.Errorf("granted %s; want %s", got, want)
	}
	if g.RefreshToken != "" {
		t.Errorf("a refresh token without offline access")
	}
	claims := decodeClaims(t, g.Token)
	if claims["sub"] != "bob" || claims["aud"] != "regcache" || claims["iss"] != "regcache" {
		t.Errorf("claims %v", claims)
	}
	if exp := int64(claims["exp"].(float64)); exp != f.clock.Now().Add(auth.DefaultTokenTTL).Unix() {
		t.Errorf("exp %d; want now + %v", exp, auth.DefaultTokenTTL)
	}
}

func decodeClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Tokens are standard registry tokens: distribution's own verifier
// accepts them with the public key.
func TestTokensVerifyWithDistribution(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *auth.Options) { o.Now = time.Now })
	alice, err := f.a.Login(local, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	g, err := f.a.Issue(alice, auth.ParseScopes("repository:lab/app:pull,push"), false)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := token.NewToken(g.Token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	pub := f.key.Public().(ed25519.PublicKey)
	claims, err := tok.Verify(token.VerifyOptions{TrustedIssuers: []string{"regcache"}, AcceptedAudiences: []string{"regcache"},
		TrustedKeys: map[string]crypto.PublicKey{auth.KeyID(pub): pub}})
	if err != nil {
		t.Fatalf("distribution's verifier: %v", err)
	}
	if claims.Subject != "alice" || len(claims.Access) != 1 || claims.Access[0].Name != "lab/app" || strings.Join(claims.Access[0].Actions, ",") != "pull,push" {
		t.Errorf("claims %+v", claims)
	}
}

// A token is refused once expired, when tampered with, and when its user
// left the htpasswd file.
func TestTokenLifetimeAndIntegrity(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	need := []auth.Access{auth.Repository("lab/app", "pull")}
	tok := f.token(t, "bob", "bob-pw", "repository:lab/app:pull")
	if _, err := f.a.Authorize(tok, need); err != nil {
		t.Fatal(err)
	}
	// Tampered: the claims changed to another user, the signature kept.
	parts := strings.Split(tok, ".")
	claims := decodeClaims(t, tok)
	claims["sub"] = "alice"
	raw, _ := json.Marshal(claims)
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + parts[2]
	if _, err := f.a.Authorize(forged, need); !errors.Is(err, auth.ErrUnauthenticated) || !errors.Is(err, auth.ErrInvalidToken) || !strings.Contains(err.Error(), "signature") {
		t.Errorf("forged token: %v", err)
	}
	// alg none, the classic.
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."
	if _, err := f.a.Authorize(none, need); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("alg none: %v", err)
	}
	f.clock.Advance(auth.DefaultTokenTTL - time.Second)
	if _, err := f.a.Authorize(tok, need); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	f.clock.Advance(time.Second)
	if _, err := f.a.Authorize(tok, need); !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	fresh := f.token(t, "bob", "bob-pw", "repository:lab/app:pull")
	htpasswd(t, f.file, map[string]string{"alice": "alice-pw"})
	f.clock.Advance(2 * time.Second) // the file is looked at once a second
	if _, err := f.a.Authorize(fresh, need); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("token of a removed user: %v", err)
	}
}

// Refresh tokens (docker login keeps one instead of the password) work
// until the user gets another password; they are not access tokens.
func TestRefreshTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice, _ := f.a.Login(local, "alice", "alice-pw")
	g, err := f.a.Issue(alice, nil, true)
	if err != nil || g.RefreshToken == "" {
		t.Fatalf("offline issue: %v %q", err, g.RefreshToken)
	}
	if id, err := f.a.Refresh(local, g.RefreshToken); err != nil || id.Name != "alice" {
		t.Fatalf("refresh: %v %v", id, err)
	}
	if _, err := f.a.Authorize(g.RefreshToken, []auth.Access{auth.Repository("lab/app", "pull")}); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("a refresh token used as an access token: %v", err)
	}
	if _, err := f.a.Refresh(local, g.Token); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("an access token used as a refresh token: %v", err)
	}
	if g, _ := f.a.Issue(auth.Identity{}, nil, true); g.RefreshToken != "" {
		t.Errorf("an anonymous client got a refresh token")
	}
	htpasswd(t, f.file, map[string]string{"alice": "new-pw", "bob": "bob-pw"})
	f.clock.Advance(2 * time.Second)
	if _, err := f.a.Refresh(local, g.RefreshToken); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("refresh after a password change: %v", err)
	}
}

// N failed logins from one address block it (right password or not)
// until the window ends; another address is not affected; a success
// does not reset the count.
func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t) // 3 failures per minute
	attacker, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	login := func(from netip.Addr, user, pass string) error { _, err := f.a.Login(from, user, pass); return err }
	if err := login(attacker, "alice", "wrong"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := login(attacker, "bob", "bob-pw"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	f.clock.Advance(10 * time.Second)
	for i := 0; i < 2; i++ {
		if err := login(attacker, "nobody", "x"); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("unknown user: %v", err)
		}
	}
	err := login(attacker, "alice", "alice-pw")
	var re *auth.RetryError
	if !errors.As(err, &re) || !errors.Is(err, auth.ErrTooManyAttempts) || re.RetryAfter != 50*time.Second {
		t.Fatalf("after 3 failures, the right password: %v; want a RetryError of 50s", err)
	}
	if err := login(other, "alice", "alice-pw"); err != nil {
		t.Errorf("another address: %v", err)
	}
	f.clock.Advance(50 * time.Second)
	if err := login(attacker, "alice", "alice-pw"); err != nil {
		t.Errorf("after the window: %v", err)
	}
	// IPv6: one /64 is one host.
	a6, b6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	for i := 0; i < 3; i++ {
		login(a6, "alice", "wrong")
	}
	if err := login(b6, "alice", "alice-pw"); !errors.Is(err, auth.ErrTooManyAttempts) {
		t.Errorf("another address of the same /64: %v", err)
	}
}

// A failed login is logged with its address, and with the user name only
// when it is a user of the file: a password typed as the user name never
// reaches the log.
func TestFailedLoginLog(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	f := newFixture(t, func(o *auth.Options) { o.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	from := netip.MustParseAddr("192.0.2.7")
	f.a.Login(from, "alice", "wrong")
	f.a.Login(from, "s3cret-typed-as-user", "")
	out := logs.String()
	if !strings.Contains(out, `msg="login failed" user=alice from=192.0.2.7`) || strings.Contains(out, "s3cret-typed-as-user") ||
		!strings.Contains(out, `user="<not a user of the htpasswd file>" from=192.0.2.7`) {
		t.Errorf("log:\n%s", out)
	}
}

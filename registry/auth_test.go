package registry_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/crypto/bcrypt"

	"github.com/regcache/regcache/auth"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/registry"
)

// Users of every auth stack, and their passwords.
var authUsers = map[string]string{"alice": "alice-s3cret", "bob": "bob-s3cret", "carol": "carol-s3cret"}

// Access rules of every auth stack: alice pulls the hub cache; alice
// pushes lab/*, bob only pulls it; only carol pulls lab/secret; open/* is
// open to anonymous pulls; alice lists the catalog.
var authRules = []auth.AccessRule{
	{Repository: "hub/*", Pull: []string{"alice"}},
	{Repository: "lab/*", Pull: []string{"bob"}, Push: []string{"alice"}},
	{Repository: "lab/secret", Pull: []string{"carol"}},
	{Repository: "open/*", AnonymousPull: true},
}

// authStack is regcache with client authentication required, in front of
// an upstream holding library/app:v1 (cached as hub/app by a rule).
type authStack struct {
	*stack
	elapsed atomic.Int64 // nanoseconds the Authority's clock moved on from authEpoch
	logs    string       // the log file
	key     ed25519.PrivateKey
	digest  string // of library/app:v1
	img     v1.Image
}

// authEpoch is when the clock of every auth stack starts.
var authEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *authStack) now() time.Time          { return authEpoch.Add(time.Duration(s.elapsed.Load())) }
func (s *authStack) advance(d time.Duration) { s.elapsed.Add(int64(d)) }

// logText returns what the stack logged so far.
func (s *authStack) logText(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(s.logs)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// logFile creates a file for a stack's log: written by the server and
// read by the test without sharing memory.
func logFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "regcache.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func newAuthStack(t *testing.T, opts ...func(*stackConfig)) *authStack {
	t.Helper()
	up := newUpstream(t)
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/app:v1", img)
	d, _ := img.Digest()
	logs := logFile(t)
	s := &authStack{logs: logs.Name(), digest: d.String(), img: img}
	_, s.key, _ = ed25519.GenerateKey(rand.Reader)
	sc := stackConfig{
		upstreams: map[string]string{"docker.io": up.URL},
		rules:     []cache.Rule{hubRule},
		auth:      newAuthority(t, s.now, logs, s.key, "regcache"),
		logs:      logs,
	}
	for _, o := range opts {
		o(&sc)
	}
	s.stack = newStack(t, sc)
	return s
}

// newAuthority is an Authority with the users and rules of every auth
// stack, the clock now and the signing key, for service.
func newAuthority(t *testing.T, now func() time.Time, logs io.Writer, key ed25519.PrivateKey, service string) *auth.Authority {
	t.Helper()
	file := filepath.Join(t.TempDir(), "htpasswd")
	var lines strings.Builder
	for u, p := range authUsers {
		h, _ := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		fmt.Fprintf(&lines, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(file, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logs, nil))
	users, err := auth.LoadUsers(file, now, log)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := auth.NewRules(authRules, []string{"alice"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Options{Service: service, Users: users, Rules: rules, Key: key, Now: now, Log: log,
		MaxFailures: 3, FailureWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tokenResp is the token endpoint's answer.
type tokenResp struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
}

// getToken asks the token endpoint (GET) for scopes as user ("" for
// anonymous) and fails the test unless it answers 200.
func (s *authStack) getToken(t *testing.T, user string, scopes ...string) string {
	t.Helper()
	resp, body := s.tokenRequest(t, user, authUsers[user], nil, scopes...)
	var tr tokenResp
	if resp.StatusCode != 200 || json.Unmarshal(body, &tr) != nil || tr.Token == "" || tr.Token != tr.AccessToken {
		t.Fatalf("token for %q %v: %d %s", user, scopes, resp.StatusCode, body)
	}
	return tr.Token
}

// tokenRequest sends GET /v2/token with Basic credentials (none when user
// is "") and extra headers.
func (s *authStack) tokenRequest(t *testing.T, user, pass string, header map[string]string, scopes ...string) (*http.Response, []byte) {
	t.Helper()
	q := url.Values{"service": {"regcache"}, "scope": scopes}
	h := map[string]string{}
	for k, v := range header {
		h[k] = v
	}
	if user != "" {
		h["Authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	return do(t, "GET", s.url+"/v2/token?"+q.Encode(), h, nil)
}

// bearer is the Authorization header of a token.
func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// The authentication and authorisation table: every refusal carries the
// spec's status, error code and (for 401) the Bearer challenge with the
// scope the request needs.
func TestClientAuthTable(t *testing.T) {
	t.Parallel()
	s := newAuthStack(t)
	host := strings.TrimPrefix(s.url, "http://")
	realm := `Bearer realm="` + s.url + `/v2/token",service="regcache"`
	hubPull := realm + `,scope="repository:hub/app:pull"`
	manifest := "/v2/hub/app/manifests/v1"

	aliceHub := s.getToken(t, "alice", "repository:hub/app:pull")
	otherService, err := newAuthority(t, s.now, io.Discard, s.key, "another-registry").Issue(auth.Identity{Name: "alice"}, auth.ParseScopes("repository:hub/app:pull"), false)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, err := newAuthority(t, s.now, io.Discard, otherKey, "regcache").Issue(auth.Identity{Name: "alice"}, auth.ParseScopes("repository:hub/app:pull"), false)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		method    string
		path      string
		header    map[string]string
		status    int
		code      string // "" for success
		challenge string // exact WWW-Authenticate, "" for none
		message   string // in the error message
	}{
		{"version check, anonymous", "GET", "/v2/", nil, 401, "UNAUTHORIZED", realm, "docker login " + host},
		{"pull, anonymous", "GET", manifest, nil, 401, "UNAUTHORIZED", hubPull, "pull hub/app"},
		{"pull HEAD, anonymous", "HEAD", manifest, nil, 401, "", hubPull, ""},
		{"pull, anonymous token", "GET", manifest, bearer(s.getToken(t, "", "repository:hub/app:pull")), 401, "UNAUTHORIZED", hubPull, "pull hub/app"},
		{"pull, right user", "GET", manifest, bearer(aliceHub), 200, "", "", ""},
		{"version check, right user", "GET", "/v2/", bearer(aliceHub), 200, "", "", ""},
		{"right user, wrong repository", "GET", manifest, bearer(s.getToken(t, "bob", "repository:hub/app:pull")), 403, "DENIED", "", `user "bob" may not pull hub/app`},
		{"token with the wrong scope", "GET", manifest, bearer(s.getToken(t, "alice", "repository:lab/app:pull")), 401, "UNAUTHORIZED",
			hubPull + `,error="insufficient_scope"`, "does not grant pull on hub/app"},
		{"token for another service", "GET", manifest, bearer(otherService.Token), 401, "UNAUTHORIZED", hubPull + `,error="invalid_token"`, `issued for service "another-registry"`},
		{"token signed by another key", "GET", manifest, bearer(otherSigner.Token), 401, "UNAUTHORIZED", hubPull + `,error="invalid_token"`, "not signed by this registry's key"},
		{"tampered token", "GET", manifest, bearer(tamper(t, aliceHub)), 401, "UNAUTHORIZED", hubPull + `,error="invalid_token"`, "invalid token: the signature does not verify"},
		{"anonymous pull where allowed", "GET", "/v2/open/thing/tags/list", nil, 404, "NAME_UNKNOWN", "", ""},
		// containerd's ns: authorised (and challenged) by the routed name.
		{"ns, anonymous", "GET", "/v2/library/app/manifests/v1?ns=docker.io", nil, 401, "UNAUTHORIZED", hubPull, ""},
		{"ns, right user", "GET", "/v2/library/app/manifests/v1?ns=docker.io", bearer(aliceHub), 200, "", "", ""},
		{"ns no rule covers, anonymous", "GET", "/v2/library/app/manifests/v1?ns=quay.io", nil, 401, "UNAUTHORIZED", realm, ""},
		{"ns no rule covers, logged in", "GET", "/v2/library/app/manifests/v1?ns=quay.io", bearer(aliceHub), 404, "NAME_UNKNOWN", "", ""},
		// A path-prefixed mirror name: the token endpoint routes it too.
		{"path-prefixed name", "GET", "/v2/docker.io/library/app/manifests/v1", bearer(s.getToken(t, "alice", "repository:docker.io/library/app:pull")), 200, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, s.url+tc.path, tc.header, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s: %d %s; want %d", tc.method, tc.path, resp.StatusCode, body, tc.status)
			}
			if tc.code != "" {
				if got := ociCode(t, body); got != tc.code {
					t.Errorf("code %s; want %s (%s)", got, tc.code, body)
				}
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate:\n got %s\nwant %s", got, tc.challenge)
			}
			if msg := ociMessage(body); !strings.Contains(msg, tc.message) {
				t.Errorf("message %q; want it to say %q", msg, tc.message)
			}
			if tc.status == 200 && tc.method == "GET" && strings.Contains(tc.path, "/manifests/") && resp.Header.Get("Docker-Content-Digest") != s.digest {
				t.Errorf("digest %s; want %s", resp.Header.Get("Docker-Content-Digest"), s.digest)
			}
			if v := resp.Header.Get("Docker-Distribution-API-Version"); v != "registry/2.0" {
				t.Errorf("Docker-Distribution-API-Version %q", v)
			}
		})
	}
	t.Run("expired token", func(t *testing.T) {
		tok := s.getToken(t, "alice", "repository:hub/app:pull")
		s.advance(auth.DefaultTokenTTL - time.Second)
		if resp, body := do(t, "GET", s.url+manifest, bearer(tok), nil); resp.StatusCode != 200 {
			t.Fatalf("a second before expiry: %d %s", resp.StatusCode, body)
		}
		s.advance(time.Second)
		resp, body := do(t, "GET", s.url+manifest, bearer(tok), nil)
		if resp.StatusCode != 401 || ociCode(t, body) != "UNAUTHORIZED" || !strings.Contains(string(body), "expired") ||
			resp.Header.Get("WWW-Authenticate") != hubPull+`,error="invalid_token"` {
			t.Fatalf("expired token: %d %s %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
	})
	t.Run("wrong password and unknown user answer alike", func(t *testing.T) {
		r1, b1 := s.tokenRequest(t, "alice", "wrong-password", nil, "repository:hub/app:pull")
		r2, b2 := s.tokenRequest(t, "mallory", "wrong-password", nil, "repository:hub/app:pull")
		for _, r := range []*http.Response{r1, r2} {
			if r.StatusCode != 401 || r.Header.Get("WWW-Authenticate") != `Basic realm="regcache token endpoint"` {
				t.Errorf("%d %q; want 401 with a Basic challenge", r.StatusCode, r.Header.Get("WWW-Authenticate"))
			}
		}
		if ociCode(t, b1) != "UNAUTHORIZED" || !bytes.Equal(b1, b2) {
			t.Errorf("bodies differ or wrong code:\n%s\n%s", b1, b2)
		}
		if strings.Contains(string(b1), "wrong-password") || strings.Contains(string(b1), "mallory") {
			t.Errorf("the body repeats the credentials: %s", b1)
		}
	})
	// Never a password or a token in a log line.
	logs := s.logText(t)
	for _, secret := range []string{authUsers["alice"], authUsers["bob"], "wrong-password", aliceHub, otherService.Token} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold %q:\n%s", secret, logs)
		}
	}
}

// ociMessage returns the message of a distribution-spec error body.
func ociMessage(body []byte) string {
	var e struct {
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Message
}

// tamper changes a token's user, keeping the signature.
func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(raw, []byte(`"sub":"alice"`), []byte(`"sub":"carol"`), 1)
	if bytes.Equal(forged, raw) {
		t.Fatalf("no sub claim in %s", raw)
	}
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]
}

// Requests with the methods of a push need push (and a mount pull on its
// source) on the local repository: refused with 401 or 403, or passed to
// the handler, which answers as it would without authentication.
func TestClientAuthPush(t *testing.T) {
	t.Parallel()
	s := newAuthStack(t, func(sc *stackConfig) { sc.local = true })
	realm := `Bearer realm="` + s.url + `/v2/token",service="regcache"`
	alicePush := s.getToken(t, "alice", "repository:lab/app:pull,push")
	bobPush := s.getToken(t, "bob", "repository:lab/app:pull,push")
	digest := "sha256:" + strings.Repeat("a", 64)
	mount := "/v2/lab/app/blobs/uploads/?mount=" + digest + "&from="
	for _, tc := range []struct {
		name, method, path string
		token              string
		status             int
		code, challenge    string
	}{
		{"manifest put, anonymous", "PUT", "/v2/lab/app/manifests/v1", "", 401, "UNAUTHORIZED", realm + `,scope="repository:lab/app:pull,push"`},
		{"manifest put, puller", "PUT", "/v2/lab/app/manifests/v1", bobPush, 403, "DENIED", ""},
		{"manifest put, pusher", "PUT", "/v2/lab/app/manifests/v1", alicePush, 400, "MANIFEST_INVALID", ""},
		{"upload, pusher", "POST", "/v2/lab/app/blobs/uploads/", alicePush, 202, "", ""},
		{"upload chunk, puller", "PATCH", "/v2/lab/app/blobs/uploads/some-id", bobPush, 403, "DENIED", ""},
		{"delete, puller", "DELETE", "/v2/lab/app/manifests/" + digest, bobPush, 403, "DENIED", ""},
		{"delete, pusher", "DELETE", "/v2/lab/app/manifests/" + digest, alicePush, 404, "MANIFEST_UNKNOWN", ""},
		{"push with a pull token", "PUT", "/v2/lab/app/manifests/v1", s.getToken(t, "alice", "repository:lab/app:pull"), 401, "UNAUTHORIZED",
			realm + `,scope="repository:lab/app:pull,push",error="insufficient_scope"`},
		{"mount from a repository the pusher may not pull", "POST", mount + "lab/secret", alicePush, 403, "DENIED", ""},
		{"mount, the token lacks the source", "POST", mount + "lab/other", alicePush, 401, "UNAUTHORIZED",
			realm + `,scope="repository:lab/app:pull,push repository:lab/other:pull",error="insufficient_scope"`},
		{"mount with both scopes", "POST", mount + "lab/other", s.getToken(t, "alice", "repository:lab/app:pull,push", "repository:lab/other:pull"), 202, "", ""},
		{"catalog, anonymous", "GET", "/v2/_catalog", "", 401, "UNAUTHORIZED", realm + `,scope="registry:catalog:*"`},
		{"catalog, not allowed", "GET", "/v2/_catalog", s.getToken(t, "bob", "registry:catalog:*"), 403, "DENIED", ""},
		{"catalog, allowed", "GET", "/v2/_catalog", s.getToken(t, "alice", "registry:catalog:*"), 200, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h map[string]string
			if tc.token != "" {
				h = bearer(tc.token)
			}
			resp, body := do(t, tc.method, s.url+tc.path, h, nil)
			code := ""
			if tc.code != "" {
				code = ociCode(t, body)
			}
			if resp.StatusCode != tc.status || code != tc.code || resp.Header.Get("WWW-Authenticate") != tc.challenge {
				t.Fatalf("%s %s: %d %s %q; want %d %s %q", tc.method, tc.path, resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"), tc.status, tc.code, tc.challenge)
			}
		})
	}
}

// The token endpoint's flows: GET with offline_token, and the OAuth2 POST
// with grant_type password and refresh_token, granting only what is
// allowed of what is asked.
func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	s := newAuthStack(t)
	post := func(t *testing.T, form url.Values) (*http.Response, tokenResp, []byte) {
		t.Helper()
		resp, body := do(t, "POST", s.url+"/v2/token", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, strings.NewReader(form.Encode()))
		var tr tokenResp
		json.Unmarshal(body, &tr)
		return resp, tr, body
	}
	resp, tr, body := post(t, url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {authUsers["bob"]}, "service": {"regcache"},
		"client_id": {"containerd-client"}, "access_type": {"offline"}, "scope": {"repository:lab/app:pull,push repository:hub/app:pull"}})
	if resp.StatusCode != 200 || tr.AccessToken == "" || tr.RefreshToken == "" || tr.ExpiresIn != 300 || tr.Scope != "repository:lab/app:pull" {
		t.Fatalf("password grant: %d %s; want a token for repository:lab/app:pull only, and a refresh token", resp.StatusCode, body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	if r, b := do(t, "GET", s.url+"/v2/lab/app/tags/list", bearer(tr.AccessToken), nil); r.StatusCode != 404 || ociCode(t, b) != "NAME_UNKNOWN" {
		t.Errorf("tags with the token: %d %s; want the handler's NAME_UNKNOWN", r.StatusCode, b)
	}
	resp, tr2, body := post(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "service": {"regcache"},
		"client_id": {"docker"}, "scope": {"repository:lab/app:pull"}})
	if resp.StatusCode != 200 || tr2.AccessToken == "" || tr2.RefreshToken != "" || tr2.Scope != "repository:lab/app:pull" {
		t.Fatalf("refresh grant: %d %s", resp.StatusCode, body)
	}
	for _, form := range []url.Values{
		{"grant_type": {"refresh_token"}, "refresh_token": {tr.AccessToken}},
		{"grant_type": {"password"}, "username": {"bob"}, "password": {"nope"}},
	} {
		if resp, _, body := post(t, form); resp.StatusCode != 401 || ociCode(t, body) != "UNAUTHORIZED" {
			t.Errorf("%v: %d %s; want 401", form.Get("grant_type"), resp.StatusCode, body)
		}
	}
	for _, form := range []url.Values{
		{"grant_type": {"authorization_code"}},
		{"grant_type": {"password"}},
		{"grant_type": {"password"}, "username": {"bob"}, "password": {authUsers["bob"]}, "service": {"another"}},
	} {
		if resp, _, body := post(t, form); resp.StatusCode != 400 || ociCode(t, body) != "UNSUPPORTED" {
			t.Errorf("%v: %d %s; want 400", form, resp.StatusCode, body)
		}
	}
	// GET with offline_token, as docker login asks.
	q := url.Values{"service": {"regcache"}, "offline_token": {"true"}, "client_id": {"docker"}}
	resp, body = do(t, "GET", s.url+"/v2/token?"+q.Encode(), map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+authUsers["alice"]))}, nil)
	if json.Unmarshal(body, &tr) != nil || resp.StatusCode != 200 || tr.RefreshToken == "" {
		t.Errorf("GET offline_token: %d %s", resp.StatusCode, body)
	}
}

// A real client, go-containerregistry, logs in through the token flow
// and pulls; a user without the right is refused with DENIED.
func TestClientAuthWithGoContainerregistry(t *testing.T) {
	t.Parallel()
	s := newAuthStack(t)
	ref, err := name.ParseReference(strings.TrimPrefix(s.url, "http://")+"/hub/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	get := func(user, pass string) (*remote.Descriptor, error) {
		a := authn.Anonymous
		if user != "" {
			a = &authn.Basic{Username: user, Password: pass}
		}
		return remote.Get(ref, remote.WithContext(t.Context()), remote.WithAuth(a))
	}
	desc, err := get("alice", authUsers["alice"])
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	if desc.Digest.String() != s.digest {
		t.Errorf("digest %s; want %s", desc.Digest, s.digest)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("layer: %v", err)
		}
		rc.Close()
	}
	for _, tc := range []struct {
		user, pass string
		status     int
	}{{"bob", authUsers["bob"], 403}, {"alice", "wrong", 401}, {"", "", 401}} {
		_, err := get(tc.user, tc.pass)
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != tc.status {
			t.Errorf("%q: %v; want status %d", tc.user, err, tc.status)
		}
	}
}

// Failed logins are rate-limited per client address: the Nth failure
// blocks the address (429 TOOMANYREQUESTS with Retry-After, the right
// password too), another address is not affected, and the address may
// log in again after the window. Behind a trusted proxy the address is
// the one X-Forwarded-For names; from anyone else that header is ignored.
func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	s := newAuthStack(t, func(sc *stackConfig) { sc.trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} })
	from := func(addr string) map[string]string {
		return map[string]string{"X-Forwarded-For": "203.0.113.9, " + addr}
	}
	attacker, neighbour := from("198.51.100.7"), from("198.51.100.8")
	for i := 0; i < 3; i++ {
		if resp, body := s.tokenRequest(t, "alice", "guess", attacker); resp.StatusCode != 401 {
			t.Fatalf("failure %d: %d %s", i+1, resp.StatusCode, body)
		}
		s.advance(10 * time.Second)
	}
	resp, body := s.tokenRequest(t, "alice", authUsers["alice"], attacker)
	if resp.StatusCode != 429 || ociCode(t, body) != "TOOMANYREQUESTS" || resp.Header.Get("Retry-After") != "30" {
		t.Fatalf("after 3 failures: %d Retry-After %q %s; want 429 TOOMANYREQUESTS, Retry-After 30", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if resp, body := s.tokenRequest(t, "alice", authUsers["alice"], neighbour); resp.StatusCode != 200 {
		t.Errorf("another address: %d %s", resp.StatusCode, body)
	}
	s.advance(30 * time.Second)
	if resp, body := s.tokenRequest(t, "alice", authUsers["alice"], attacker); resp.StatusCode != 200 {
		t.Errorf("after the window: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(s.logText(t), "from=198.51.100.7") {
		t.Errorf("the block was not logged with the client address:\n%s", s.logText(t))
	}

	// Without trusted proxies, X-Forwarded-For changes nothing.
	u := newAuthStack(t)
	for i := 0; i < 3; i++ {
		u.tokenRequest(t, "alice", "guess", from(fmt.Sprintf("198.51.100.%d", i)))
	}
	if resp, _ := u.tokenRequest(t, "alice", authUsers["alice"], from("198.51.100.99")); resp.StatusCode != 429 {
		t.Errorf("an untrusted X-Forwarded-For escaped the limit: %d", resp.StatusCode)
	}
}

// routeChange decorates a Backend: right after the first Route of a
// request with ns, a rule changes (a rule change racing a request, made
// deterministic).
type routeChange struct {
	registry.Backend
	once   sync.Once
	change func()
}

func (b *routeChange) Route(ctx context.Context, name, ns string) (string, error) {
	local, err := b.Backend.Route(ctx, name, ns)
	if ns != "" {
		b.once.Do(b.change)
	}
	return local, err
}

// What is served is what the gate authorised: a rule created between the
// gate's routing and the handler's (here docker.io/library/app -> secret/app,
// which alice may not pull) does not make the request read another
// repository than hub/app.
func TestClientAuthServesWhatWasAuthorised(t *testing.T) {
	t.Parallel()
	var s *authStack
	s = newAuthStack(t, func(sc *stackConfig) {
		sc.backend = func(b registry.Backend) registry.Backend {
			return &routeChange{Backend: b, change: func() {
				if _, err := s.store.Create(context.Background(), cache.Rule{Name: "secret-app", Source: "docker.io/library/app", Target: "secret/app"}); err != nil {
					t.Errorf("create the racing rule: %v", err)
				}
			}}
		}
	})
	tok := s.getToken(t, "alice", "repository:hub/app:pull")
	resp, body := do(t, "GET", s.url+"/v2/library/app/manifests/v1?ns=docker.io", bearer(tok), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for repo, want := range map[string]bool{"hub/app": true, "secret/app": false} {
		if has, err := s.meta.HasRepo(t.Context(), repo); err != nil || has != want {
			t.Errorf("after the request, %s stored: %v (%v); want %v", repo, has, err, want)
		}
	}
	// The rule is in force for the next request: alice is denied.
	if resp, body := do(t, "GET", s.url+"/v2/library/app/manifests/v1?ns=docker.io", bearer(tok), nil); resp.StatusCode != 403 {
		t.Errorf("next request: %d %s; want 403 (secret/app)", resp.StatusCode, body)
	}
}

// The access log names the user a request was authenticated as, and no
// user for an anonymous one.
func TestAccessLogNamesTheUser(t *testing.T) {
	t.Parallel()
	s := newAuthStack(t)
	tok := s.getToken(t, "alice", "repository:hub/app:pull")
	if resp, body := do(t, "GET", s.url+"/v2/hub/app/manifests/v1", bearer(tok), nil); resp.StatusCode != 200 {
		t.Fatalf("pull as alice: %s %s", resp.Status, body)
	}
	do(t, "GET", s.url+"/v2/", nil, nil) // anonymous: 401
	var alice, anonymous bool
	for _, line := range strings.Split(s.logText(t), "\n") {
		switch {
		case strings.Contains(line, "msg=request") && strings.Contains(line, "path=/v2/hub/app/manifests/v1"):
			alice = strings.Contains(line, "user=alice")
		case strings.Contains(line, "msg=request") && strings.Contains(line, "path=/v2/ ") && strings.Contains(line, "status=401"):
			anonymous = !strings.Contains(line, "user=")
		}
	}
	if !alice || !anonymous {
		t.Errorf("access log: alice's pull names her: %v; the anonymous request names no user: %v\n%s", alice, anonymous, s.logText(t))
	}
}

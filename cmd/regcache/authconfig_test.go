package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/regcache/regcache/auth"
)

const authFile = `auth:
  htpasswd: /file/htpasswd
  realm: https://file.example.com/v2/token
  service: file-service
  signingKey: /file/key.pem
  tokenTTL: 10m
  refreshTokenTTL: 24h
  access:
    - repository: "lab/*"
      pull: ["*"]
      push: [alice]
    - repository: open
      anonymousPull: true
  catalog: [alice]
  loginFailures: {max: 5, window: 2m}
trustedProxies: [10.0.0.0/8, 192.0.2.1]
`

// The auth settings come from the file, REGCACHE_* variables and flags,
// in rising precedence.
func TestAuthConfig(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "config.yaml", authFile)
	fromFile := AuthConfig{Htpasswd: "/file/htpasswd", Realm: "https://file.example.com/v2/token", Service: "file-service",
		SigningKey: "/file/key.pem", TokenTTL: 10 * time.Minute, RefreshTokenTTL: 24 * time.Hour,
		Access: []auth.AccessRule{
			{Repository: "lab/*", Pull: []string{"*"}, Push: []string{"alice"}},
			{Repository: "open", AnonymousPull: true},
		},
		Catalog: []string{"alice"}, LoginFailures: LoginFailures{Max: 5, Window: 2 * time.Minute}}
	env := map[string]string{"REGCACHE_AUTH_HTPASSWD": "/env/htpasswd", "REGCACHE_AUTH_REALM": "https://env.example.com/v2/token",
		"REGCACHE_AUTH_SIGNING_KEY": "/env/key.pem", "REGCACHE_AUTH_TOKEN_TTL": "20m", "REGCACHE_TRUSTED_PROXIES": "10.1.0.0/16, 10.2.0.0/16"}
	flags := []string{"--auth-htpasswd", "/flag/htpasswd", "--auth-realm", "https://flag.example.com/v2/token",
		"--auth-signing-key", "/flag/key.pem", "--auth-token-ttl", "30m", "--trusted-proxy", "fd00::/8", "--trusted-proxy", "127.0.0.1"}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    AuthConfig
		proxies []string
	}{
		{"off by default", nil, nil, AuthConfig{}, nil},
		{"file", []string{"--config", file}, nil, fromFile, []string{"10.0.0.0/8", "192.0.2.1"}},
		{"env beats file", []string{"--config", file}, env, with(fromFile, func(a *AuthConfig) {
			a.Htpasswd, a.Realm, a.SigningKey, a.TokenTTL = "/env/htpasswd", "https://env.example.com/v2/token", "/env/key.pem", 20*time.Minute
		}), []string{"10.1.0.0/16", "10.2.0.0/16"}},
		{"flags beat env", append([]string{"--config", file}, flags...), env, with(fromFile, func(a *AuthConfig) {
			a.Htpasswd, a.Realm, a.SigningKey, a.TokenTTL = "/flag/htpasswd", "https://flag.example.com/v2/token", "/flag/key.pem", 30*time.Minute
		}), []string{"fd00::/8", "127.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseServe(t, tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Auth, tc.want) || !reflect.DeepEqual(cfg.TrustedProxies, tc.proxies) {
				t.Errorf("auth:\n got  %+v %q\n want %+v %q", cfg.Auth, cfg.TrustedProxies, tc.want, tc.proxies)
			}
		})
	}
}

func with(a AuthConfig, f func(*AuthConfig)) AuthConfig {
	f(&a)
	return a
}

// Bad auth settings are refused naming the field, the value and what is
// accepted.
func TestAuthConfigErrors(t *testing.T) {
	t.Parallel()
	on := "auth:\n  htpasswd: /x\n"
	for _, tc := range []struct {
		name, file string
		args       []string
		env        map[string]string
		want       string
	}{
		{"rules without htpasswd", "auth:\n  access:\n    - repository: lab/*\n", nil, nil, "auth.access is set but client authentication is off: set auth.htpasswd (--auth-htpasswd)"},
		{"realm without htpasswd", "", []string{"--auth-realm", "https://x/v2/token"}, nil, "auth.realm is set but client authentication is off"},
		{"relative realm", on + "  realm: /v2/token\n", nil, nil, `auth.realm "/v2/token": want the absolute http(s) URL`},
		{"ftp realm", on, []string{"--auth-realm", "ftp://x/token"}, nil, `auth.realm "ftp://x/token"`},
		{"short token lifetime", on, []string{"--auth-token-ttl", "30s"}, nil, "auth.tokenTTL 30s: want between 1m and 24h"},
		{"bad token lifetime env", on, nil, map[string]string{"REGCACHE_AUTH_TOKEN_TTL": "soon"}, `REGCACHE_AUTH_TOKEN_TTL="soon": want a duration`},
		{"refresh shorter than tokens", on + "  tokenTTL: 1h\n  refreshTokenTTL: 10m\n", nil, nil, "auth.refreshTokenTTL 10m0s: want between the token lifetime and 8784h"},
		{"login failures", on + "  loginFailures: {max: 3, window: 10ms}\n", nil, nil, "auth.loginFailures {max: 3, window: 10ms}: want max at least 1 and a window between 1s and 24h"},
		{"service with a quote", on + "  service: 'a\"b'\n", nil, nil, `auth.service "a\"b"`},
		{"bad pattern", on + "  access:\n    - repository: Lab/*\n", nil, nil, `auth.access[0].repository "Lab/*": want a repository name (lab/app), a prefix ending in /* (lab/*), or * for every repository`},
		{"bad user", on + "  access:\n    - repository: lab/*\n      push: [\"a b\"]\n", nil, nil, `auth.access[0].push[0] "a b": want a user name of the htpasswd file, or * for every user`},
		{"bad proxy", "", []string{"--trusted-proxy", "10.0.0.0/33"}, nil, `trustedProxies[0] "10.0.0.0/33": want an IP address or a CIDR prefix`},
		{"bad proxy env", "", nil, map[string]string{"REGCACHE_TRUSTED_PROXIES": "10.0.0.1,proxy.local"}, `trustedProxies[1] "proxy.local"`},
		{"typo in auth", "auth:\n  htpasswd: /x\n  acess: []\n", nil, nil, `line 3: unknown key "acess" in auth (did you mean "access"?)`},
		{"typo in a rule", on + "  access:\n    - repository: lab/*\n      pul: [bob]\n", nil, nil, `line 5: unknown key "pul" in auth.access[0] (did you mean "pull"?); accepted keys: anonymousPull, pull, push, repository`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, "config.yaml", tc.file)}, args...)
			}
			_, err := parseServe(t, args, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want %q", err, tc.want)
			}
		})
	}
}

// serve with a htpasswd file of another hash kind refuses to start,
// naming the line, before it creates anything.
func TestServeRefusesNonBcryptHtpasswd(t *testing.T) {
	t.Parallel()
	htpasswd := writeFile(t, "htpasswd", "# users\nalice:$apr1$x9bE7uzN$5ahM5rqVxZzQvN5sGk9vB.\n")
	dataDir := filepath.Join(t.TempDir(), "new", "data")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, _, err := runCLI(t, ctx, nil, "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--auth-htpasswd", htpasswd)
	want := fmt.Sprintf(`htpasswd file %s, line 2: user "alice": the password hash is Apache MD5 ($apr1$); only bcrypt`, htpasswd)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("serve: %v; want %q", err, want)
	}
	if strings.Contains(err.Error(), "5ahM5rqV") {
		t.Errorf("the error shows the hash: %v", err)
	}
	if _, serr := os.Stat(filepath.Dir(dataDir)); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("serve created %s before refusing to start (%v)", filepath.Dir(dataDir), serr)
	}
}

// serve with --auth-htpasswd challenges clients, generates its signing
// key (0600) and issues tokens to the users of the file.
func TestServeWithClientAuth(t *testing.T) {
	t.Parallel()
	hash, _ := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.MinCost)
	htpasswd := writeFile(t, "htpasswd", "alice:"+string(hash)+"\n")
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	base, done := startServe(t, ctx, "--data-dir", dataDir, "--log-level", "error", "--auth-htpasswd", htpasswd)
	resp, err := http.Get(base + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := `Bearer realm="` + base + `/v2/token",service="regcache"`; resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("/v2/: %d %q; want 401 %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "token-signing.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key: %v %v; want a 0600 file", fi, err)
	}
	req, _ := http.NewRequest("GET", base+"/v2/token?"+url.Values{"service": {"regcache"}, "scope": {"repository:lab/app:pull"}}.Encode(), nil)
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:alice-pw")))
	tr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Token string `json:"token"`
	}
	json.NewDecoder(tr.Body).Decode(&body)
	tr.Body.Close()
	if tr.StatusCode != 200 || body.Token == "" {
		t.Fatalf("token: %d", tr.StatusCode)
	}
	req, _ = http.NewRequest("GET", base+"/v2/", nil)
	req.Header.Set("Authorization", "Bearer "+body.Token)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("/v2/ with the token: %s", r.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after cancel: %v", err)
	}
}

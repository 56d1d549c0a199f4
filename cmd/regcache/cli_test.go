package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
	"github.com/regcache/regcache/storage"
)

const cliToken = "cli-test-token-0123456789abcdef"

// credSets is a Credentials with a fixed list of anonymous credential sets.
type credSets map[string]string // set -> login server

// LoginServer returns the login server of a known set.
func (c credSets) LoginServer(_ context.Context, set string) (string, bool, error) {
	server, ok := c[set]
	return server, ok, nil
}

func (credSets) Refused(string, string, bool) {}

func (c credSets) Authenticator(context.Context, string) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

// cliServer is the real registry handler, wired as serve wires it, with
// one config rule and one API rule.
type cliServer struct {
	url   string
	store *cache.Store
	dir   string // the data directory
	blobs *storage.Blobs
	meta  *storage.Meta
}

var (
	cliConfigRule = cache.Rule{Name: "cfg-alpine", Source: "docker.io/library/alpine", Target: "alpine"}
	cliAPIRule    = cache.Rule{Name: "Ubuntu", Source: "docker.io/library/ubuntu", Target: "ubuntu", CredentialSet: "team"}
)

func newCLIServer(t *testing.T) *cliServer {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	endpoints, err := cache.NewEndpoints(nil)
	if err != nil {
		t.Fatal(err)
	}
	creds := credSets{"team": "docker.io", "other-team": "docker.io", "ghcr-team": "ghcr.io"}
	store, err := cache.NewStore(ctx, meta, creds, []cache.Rule{cliConfigRule}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, cliAPIRule); err != nil {
		t.Fatal(err)
	}
	puller := cache.NewPuller(store, endpoints, creds, blobs, meta, logger, cache.Options{})
	t.Cleanup(puller.Close)
	fsck := storage.NewChecker(blobs, meta, filepath.Join(dir, "quarantine"))
	reporter := status.NewReporter(status.Sources{Rules: store, Fills: puller, Store: blobs}, "v-cli-test", time.Now(), nil)
	h, err := registry.New(registry.Config{Backend: puller, Rules: store, AdminToken: cliToken, Log: logger, Fsck: fsck, Status: reporter})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &cliServer{url: srv.URL, store: store, dir: dir, blobs: blobs, meta: meta}
}

// runCLI runs the command line with a map-backed environment.
func runCLI(t *testing.T, ctx context.Context, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(ctx, args, &out, &errOut, mapEnv(env))
	return out.String(), errOut.String(), err
}

// endpointOf is the endpoint the CLI test server (no --upstream) reaches
// the upstream of a rule source at.
func endpointOf(source string) string {
	host, _, _ := strings.Cut(source, "/")
	if host == cache.DockerHub {
		return "https://registry-1.docker.io"
	}
	return "https://" + host
}

// decodeRule decodes a printed rule, checking the endpoint it shows.
func decodeRule(t *testing.T, s string) cache.Rule {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var r registry.RuleView
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("output %q is not a rule: %v", s, err)
	}
	if r.UpstreamEndpoint != endpointOf(r.Source) {
		t.Errorf("rule %s shows upstream endpoint %q, want %q", r.Name, r.UpstreamEndpoint, endpointOf(r.Source))
	}
	return r.Rule
}

// decodeRules decodes a printed rule list, checking the endpoints.
func decodeRules(t *testing.T, s string) []cache.Rule {
	t.Helper()
	var views []registry.RuleView
	if err := json.Unmarshal([]byte(s), &views); err != nil {
		t.Fatalf("output %q is not a rule list: %v", s, err)
	}
	rs := make([]cache.Rule, len(views))
	for i, v := range views {
		if v.UpstreamEndpoint != endpointOf(v.Source) {
			t.Errorf("rule %s shows upstream endpoint %q, want %q", v.Name, v.UpstreamEndpoint, endpointOf(v.Source))
		}
		rs[i] = v.Rule
	}
	return rs
}

// tableRows returns the whitespace-separated fields of each line after the
// header, without the last column, the upstream endpoint, which it checks.
func tableRows(t *testing.T, s string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if want := []string{"NAME", "SOURCE", "REPOSITORY", "TARGET", "REPOSITORY", "CREDENTIAL", "SET", "TAG", "TTL", "ORIGIN", "UPSTREAM", "ENDPOINT"}; !slices.Equal(strings.Fields(lines[0]), want) {
		t.Fatalf("table header = %q, want the columns %q", lines[0], want)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 2 || f[len(f)-1] != endpointOf(f[1]) {
			t.Errorf("row %q does not end with the upstream endpoint of its source", l)
			continue
		}
		rows = append(rows, f[:len(f)-1])
	}
	return rows
}

func TestCacheCommands(t *testing.T) {
	t.Parallel()
	apiRule := cliAPIRule
	apiRule.Origin = cache.OriginAPI
	cfgRule := cliConfigRule
	cfgRule.Origin = cache.OriginConfig
	tests := []struct {
		name    string
		args    []string
		wantErr []string // substrings of the error; nil means success
		check   func(t *testing.T, stdout string, s *cliServer)
	}{
		{
			name: "create",
			args: []string{"cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				want := cache.Rule{Name: "HubLibrary", Source: "docker.io/library/*", Target: "hub/*", Origin: cache.OriginAPI}
				if got := decodeRule(t, stdout); got != want {
					t.Errorf("printed %+v, want %+v", got, want)
				}
				if got, err := s.store.Get("HubLibrary"); err != nil || got != want {
					t.Errorf("server holds %+v (%v), want %+v", got, err, want)
				}
			},
		},
		{
			name: "create with long flags and credential set",
			args: []string{"cache", "create", "--name", "GhcrTeam", "--source-repo", "ghcr.io/team/*", "--target-repo", "ghcr/*", "--cred-set", "ghcr-team"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				want := cache.Rule{Name: "GhcrTeam", Source: "ghcr.io/team/*", Target: "ghcr/*", CredentialSet: "ghcr-team", Origin: cache.OriginAPI}
				if got := decodeRule(t, stdout); got != want {
					t.Errorf("printed %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "create as table",
			args: []string{"cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*", "-o", "table"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				rows := tableRows(t, stdout)
				if want := [][]string{{"HubLibrary", "docker.io/library/*", "hub/*", "-", "default", "api"}}; !slices.EqualFunc(rows, want, slices.Equal) {
					t.Errorf("rows = %q, want %q", rows, want)
				}
			},
		},
		{
			name:    "create invalid",
			args:    []string{"cache", "create", "-n", "ab", "-s", "docker.io/library/x", "-t", "x"},
			wantErr: []string{"INVALID_FIELD", `"ab"`},
		},
		{
			name:    "create conflicting",
			args:    []string{"cache", "create", "-n", "Ubuntu2", "-s", "quay.io/x/ubuntu", "-t", "ubuntu"},
			wantErr: []string{"CONFLICT", "Ubuntu"},
		},
		{
			name:    "create without target",
			args:    []string{"cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*"},
			wantErr: []string{"target-repo"},
		},
		{
			name: "list",
			args: []string{"cache", "list"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				if got, want := decodeRules(t, stdout), []cache.Rule{apiRule, cfgRule}; !slices.Equal(got, want) {
					t.Errorf("list = %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "list as table",
			args: []string{"cache", "list", "-o", "table"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				want := [][]string{
					{"Ubuntu", "docker.io/library/ubuntu", "ubuntu", "team", "default", "api"},
					{"cfg-alpine", "docker.io/library/alpine", "alpine", "-", "default", "config"},
				}
				if rows := tableRows(t, stdout); !slices.EqualFunc(rows, want, slices.Equal) {
					t.Errorf("rows = %q, want %q", rows, want)
				}
			},
		},
		{
			name:    "list in an unknown format",
			args:    []string{"cache", "list", "-o", "xml"},
			wantErr: []string{`"xml"`},
		},
		{
			name: "show",
			args: []string{"cache", "show", "-n", "Ubuntu"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				if got := decodeRule(t, stdout); got != apiRule {
					t.Errorf("show = %+v, want %+v", got, apiRule)
				}
			},
		},
		{
			name:    "show missing",
			args:    []string{"cache", "show", "-n", "missing-rule"},
			wantErr: []string{"missing-rule", "NOT_FOUND"},
		},
		{
			name: "update credential set",
			args: []string{"cache", "update", "-n", "Ubuntu", "-c", "other-team"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				if got := decodeRule(t, stdout); got.CredentialSet != "other-team" {
					t.Errorf("printed %+v, want credential set other-team", got)
				}
				if got, _ := s.store.Get("Ubuntu"); got.CredentialSet != "other-team" {
					t.Errorf("server holds %+v", got)
				}
			},
		},
		{
			name: "update remove credential set",
			args: []string{"cache", "update", "-n", "Ubuntu", "--remove-cred-set"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				want := apiRule
				want.CredentialSet = ""
				if got := decodeRule(t, stdout); got != want {
					t.Errorf("printed %+v, want %+v", got, want)
				}
				if got, _ := s.store.Get("Ubuntu"); got != want {
					t.Errorf("server holds %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "update tag ttl keeps the credential set",
			args: []string{"cache", "update", "-n", "Ubuntu", "--tag-ttl", "90m"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				if got, _ := s.store.Get("Ubuntu"); got.TagTTL != "1h30m0s" || got.CredentialSet != "team" {
					t.Errorf("server holds %+v, want tag TTL 1h30m0s and credential set team", got)
				}
			},
		},
		{
			name:    "update tag ttl refused",
			args:    []string{"cache", "update", "-n", "Ubuntu", "--tag-ttl", "soon"},
			wantErr: []string{"tagTTL", "soon"},
		},
		{
			name:    "update with neither flag",
			args:    []string{"cache", "update", "-n", "Ubuntu"},
			wantErr: []string{"--cred-set", "--remove-cred-set"},
		},
		{
			name:    "update with both flags",
			args:    []string{"cache", "update", "-n", "Ubuntu", "-c", "team", "--remove-cred-set"},
			wantErr: []string{"not both"},
		},
		{
			name:    "update config rule",
			args:    []string{"cache", "update", "-n", "cfg-alpine", "-c", "team"},
			wantErr: []string{"READ_ONLY"},
		},
		{
			name: "delete",
			args: []string{"cache", "delete", "-n", "Ubuntu"},
			check: func(t *testing.T, stdout string, s *cliServer) {
				if stdout != "" {
					t.Errorf("delete printed %q", stdout)
				}
				if _, err := s.store.Get("Ubuntu"); !errors.Is(err, cache.ErrRuleNotFound) {
					t.Errorf("rule still on the server: %v", err)
				}
			},
		},
		{
			name:    "delete config rule",
			args:    []string{"cache", "delete", "-n", "cfg-alpine"},
			wantErr: []string{"READ_ONLY"},
		},
		{
			name:    "delete missing",
			args:    []string{"cache", "delete", "-n", "missing-rule"},
			wantErr: []string{"missing-rule", "NOT_FOUND"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newCLIServer(t)
			before := s.store.List()
			args := append(slices.Clone(tt.args), "--server", s.url, "--token", cliToken)
			stdout, _, err := runCLI(t, t.Context(), nil, args...)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("succeeded, want an error; output %q", stdout)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				if after := s.store.List(); !slices.Equal(after, before) {
					t.Errorf("a failed command changed the rules: %+v -> %+v", before, after)
				}
				return
			}
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			tt.check(t, stdout, s)
		})
	}
}

func TestAdminTokenSources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup returns the extra args and environment, given the server URL
		// and a fresh directory.
		setup   func(t *testing.T, url, dir string) ([]string, map[string]string)
		wantErr []string
	}{
		{
			name: "token flag",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				return []string{"--server", url, "--token", cliToken}, nil
			},
		},
		{
			name: "token env",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				return []string{"--server", url}, map[string]string{"REGCACHE_TOKEN": cliToken}
			},
		},
		{
			name: "token flag beats env",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				return []string{"--server", url, "--token", cliToken}, map[string]string{"REGCACHE_TOKEN": "wrong"}
			},
		},
		{
			name: "token env beats token file",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				return []string{"--server", url, "--token-file", filepath.Join(dir, "absent")}, map[string]string{"REGCACHE_TOKEN": cliToken}
			},
		},
		{
			name: "token file",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				p := filepath.Join(dir, "token")
				if err := os.WriteFile(p, []byte(cliToken+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return []string{"--server", url, "--token-file", p}, nil
			},
		},
		{
			name: "token file in REGCACHE_DATA_DIR, server from REGCACHE_SERVER",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(cliToken+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return nil, map[string]string{"REGCACHE_DATA_DIR": dir, "REGCACHE_SERVER": url + "/"}
			},
		},
		{
			name: "missing token file",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				return []string{"--server", url, "--token-file", filepath.Join(dir, "no-such-token")}, nil
			},
			wantErr: []string{"no-such-token"},
		},
		{
			name: "missing default token file",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				return []string{"--server", url}, map[string]string{"REGCACHE_DATA_DIR": dir}
			},
			wantErr: []string{"admin.token", "--token"},
		},
		{
			name: "wrong token",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				return []string{"--server", url, "--token", "wrong"}, nil
			},
			wantErr: []string{"UNAUTHORIZED"},
		},
		{
			name: "server without scheme",
			setup: func(t *testing.T, url, dir string) ([]string, map[string]string) {
				return []string{"--server", strings.TrimPrefix(url, "http://"), "--token", cliToken}, nil
			},
			wantErr: []string{"--server"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newCLIServer(t)
			dir := t.TempDir()
			extra, env := tt.setup(t, s.url, dir)
			stdout, _, err := runCLI(t, t.Context(), env, append([]string{"cache", "list"}, extra...)...)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("run: %v", err)
				}
				if got := decodeRules(t, stdout); len(got) != 2 {
					t.Errorf("list = %+v, want the two rules", got)
				}
				return
			}
			if err == nil {
				t.Fatalf("succeeded, want an error; output %q", stdout)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), cliToken) {
				t.Errorf("error %q leaks the token", err)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"cache create", []string{"cache", "create", "--help"}, []string{
			"regcache cache create -n Ubuntu -s docker.io/library/ubuntu -t ubuntu",
			"-c MyGhcrCredSet", "--name", "--source-repo", "--target-repo", "--cred-set", "--token-file",
		}},
		{"cache update", []string{"cache", "update", "--help"}, []string{"--remove-cred-set", "-n Ubuntu -c NewCredSet"}},
		{"serve", []string{"serve", "--help"}, []string{"--upstream", "docker.io=http://127.0.0.1:5001", "REGCACHE_CONFIG"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stdout, _, err := runCLI(t, t.Context(), nil, tt.args...)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("help does not mention %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// serve refuses a bad configuration before it creates anything or listens.
func TestServeInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string // config file content, "" for none
		wantErr string
	}{
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: `"loud"`},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: `"xml"`},
		{name: "upstream without =", args: []string{"--upstream", "docker.io"}, wantErr: `"docker.io"`},
		{name: "ftp upstream", args: []string{"--upstream", "docker.io=ftp://mirror.example.com"}, wantErr: "ftp://mirror.example.com"},
		{name: "bad env upstream", env: map[string]string{"REGCACHE_UPSTREAM": "docker.io=http://x/path"}, wantErr: "http://x/path"},
		{name: "unknown flag", args: []string{"--no-such-flag"}, wantErr: "no-such-flag"},
		{name: "positional argument", args: []string{"extra"}, wantErr: "extra"},
		{name: "missing config file", args: []string{"--config", "/nonexistent/regcache.yaml"}, wantErr: "/nonexistent/regcache.yaml"},
		{name: "unknown config key", file: "listn: \":5000\"\n", wantErr: "listn"},
		{name: "invalid config rule", file: "rules:\n  - name: cfg\n    source: docker.io/library/x\n    target: x\n", wantErr: `"cfg"`},
		{name: "listen address without port", args: []string{"--listen", "nonsense"}, wantErr: `listen "nonsense"`},
		{name: "listen port out of range", args: []string{"--listen", "127.0.0.1:99999"}, wantErr: `listen "127.0.0.1:99999"`},
		{name: "port in use", args: []string{"--listen", busyAddr(t)}, wantErr: "address already in use"}, // e2e/peers retries another port on this
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Two levels that do not exist yet: neither may be created.
			dataDir := filepath.Join(t.TempDir(), "new", "data")
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, tt.args...)
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, "config.yaml", tt.file))
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, _, err := runCLI(t, ctx, tt.env, args...)
			if err == nil || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				t.Fatalf("serve returned %v; want a prompt configuration error", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
			if _, serr := os.Stat(filepath.Dir(dataDir)); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("serve created %s before refusing to start (%v)", filepath.Dir(dataDir), serr)
			}
		})
	}
}

// busyAddr returns the address of a loopback listener held until the test
// ends.
func busyAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startServe runs serve in process on a free loopback port with args
// until ctx ends, and returns its base URL once /healthz answers, and the
// channel serve's result arrives on.
func startServe(t *testing.T, ctx context.Context, args ...string) (string, <-chan error) {
	t.Helper()
	addr := freeAddr(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := runCLI(t, ctx, nil, append([]string{"serve", "--listen", addr}, args...)...)
		done <- err
	}()
	url := "http://" + addr
	waitHealthy(t, url, done)
	return url, done
}

// serve starts, writes the admin token, answers the CLI, and stops cleanly
// when its context ends.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	url, done := startServe(t, ctx, "--data-dir", dataDir, "--log-level", "error")
	fi, err := os.Stat(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatalf("admin token not written: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode = %v, want 0600", fi.Mode().Perm())
	}
	env := map[string]string{"REGCACHE_DATA_DIR": dataDir, "REGCACHE_SERVER": url}
	if _, _, err := runCLI(t, t.Context(), env, "cache", "create", "-n", "HubLibrary", "-s", "docker.io/library/*", "-t", "hub/*"); err != nil {
		t.Fatalf("cache create: %v", err)
	}
	stdout, _, err := runCLI(t, t.Context(), env, "cache", "list")
	if err != nil {
		t.Fatalf("cache list: %v", err)
	}
	if rules := decodeRules(t, stdout); len(rules) != 1 || rules[0].Name != "HubLibrary" {
		t.Errorf("list = %+v", rules)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel: %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	if resp, err := http.Get(url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("%s still answers after serve returned", url)
	}
}

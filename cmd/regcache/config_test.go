package main

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/regcache/regcache/cache"
)

// mapEnv is a getenv backed by a map.
func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// parseServe parses args with the flags of `serve` and loads the config.
func parseServe(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	serveFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return loadConfig(fs, mapEnv(env))
}

const fullFile = `listen: "file:1"
dataDir: /file/data
adminTokenFile: /file/token
logLevel: warn
logFormat: json
upstreams:
  docker.io: http://file-docker:5000
  ghcr.io: https://file-ghcr
rules:
  - name: ubuntu
    source: docker.io/library/ubuntu
    target: ubuntu
  - name: hub-library
    source: docker.io/library/*
    target: hub/*
    credentialSet: hub-creds
`

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "config.yaml", fullFile)
	otherFile := writeFile(t, "other.yaml", "listen: \"other:1\"\n")
	fileRules := []cache.Rule{
		{Name: "ubuntu", Source: "docker.io/library/ubuntu", Target: "ubuntu"},
		{Name: "hub-library", Source: "docker.io/library/*", Target: "hub/*", CredentialSet: "hub-creds"},
	}
	fromFile := Config{
		Listen: "file:1", DataDir: "/file/data", AdminTokenFile: "/file/token", LogLevel: "warn", LogFormat: "json",
		Upstreams: map[string]string{"docker.io": "http://file-docker:5000", "ghcr.io": "https://file-ghcr"},
		Rules:     fileRules,
	}
	with := func(c Config, f func(*Config)) Config {
		c.Upstreams = map[string]string{}
		for k, v := range fromFile.Upstreams {
			c.Upstreams[k] = v
		}
		f(&c)
		return c
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want Config
	}{
		{
			name: "defaults",
			want: Config{Listen: ":5000", DataDir: "./regcache-data", LogLevel: "info", LogFormat: "text", Upstreams: map[string]string{}},
		},
		{
			name: "file by flag",
			args: []string{"--config", file},
			want: fromFile,
		},
		{
			name: "file by env",
			env:  map[string]string{"REGCACHE_CONFIG": file},
			want: fromFile,
		},
		{
			name: "config flag beats config env",
			args: []string{"--config", file},
			env:  map[string]string{"REGCACHE_CONFIG": otherFile},
			want: fromFile,
		},
		{
			name: "env beats file",
			args: []string{"--config", file},
			env: map[string]string{
				"REGCACHE_LISTEN": "env:2", "REGCACHE_DATA_DIR": "/env/data", "REGCACHE_ADMIN_TOKEN_FILE": "/env/token",
				"REGCACHE_LOG_LEVEL": "debug", "REGCACHE_LOG_FORMAT": "text",
			},
			want: with(fromFile, func(c *Config) {
				c.Listen, c.DataDir, c.AdminTokenFile, c.LogLevel, c.LogFormat = "env:2", "/env/data", "/env/token", "debug", "text"
			}),
		},
		{
			name: "flags beat env and file",
			args: []string{"--config", file, "--listen", "flag:3", "--data-dir", "/flag/data", "--admin-token-file", "/flag/token",
				"--log-level", "error", "--log-format", "json"},
			env: map[string]string{
				"REGCACHE_LISTEN": "env:2", "REGCACHE_DATA_DIR": "/env/data", "REGCACHE_ADMIN_TOKEN_FILE": "/env/token",
				"REGCACHE_LOG_LEVEL": "debug", "REGCACHE_LOG_FORMAT": "text",
			},
			want: with(fromFile, func(c *Config) {
				c.Listen, c.DataDir, c.AdminTokenFile, c.LogLevel, c.LogFormat = "flag:3", "/flag/data", "/flag/token", "error", "json"
			}),
		},
		{
			name: "flag set to the default still beats env",
			args: []string{"--listen", ":5000"},
			env:  map[string]string{"REGCACHE_LISTEN": "env:2"},
			want: Config{Listen: ":5000", DataDir: "./regcache-data", LogLevel: "info", LogFormat: "text", Upstreams: map[string]string{}},
		},
		{
			name: "env without file",
			env:  map[string]string{"REGCACHE_LISTEN": "127.0.0.1:6000", "REGCACHE_LOG_LEVEL": "WARN"},
			want: Config{Listen: "127.0.0.1:6000", DataDir: "./regcache-data", LogLevel: "WARN", LogFormat: "text", Upstreams: map[string]string{}},
		},
		{
			name: "upstreams merge file, env and flags",
			args: []string{"--config", file, "--upstream", "quay.io=http://flag-quay:1", "--upstream", "ghcr.io=http://flag-ghcr:1"},
			env:  map[string]string{"REGCACHE_UPSTREAM": "ghcr.io=http://env-ghcr:1, docker.io=http://env-docker:1,gcr.io=https://env-gcr"},
			want: with(fromFile, func(c *Config) {
				c.Upstreams = map[string]string{
					"docker.io": "http://env-docker:1", // env over file
					"ghcr.io":   "http://flag-ghcr:1",  // flag over env over file
					"quay.io":   "http://flag-quay:1",  // flag only
					"gcr.io":    "https://env-gcr",     // env only
				}
			}),
		},
		{
			name: "repeated upstream flag for one host, last wins",
			args: []string{"--upstream", "docker.io=http://a:1", "--upstream", "docker.io=http://b:1"},
			want: Config{Listen: ":5000", DataDir: "./regcache-data", LogLevel: "info", LogFormat: "text",
				Upstreams: map[string]string{"docker.io": "http://b:1"}},
		},
		{
			name: "empty file keeps defaults",
			args: []string{"--config", writeFile(t, "empty.yaml", "")},
			want: Config{Listen: ":5000", DataDir: "./regcache-data", LogLevel: "info", LogFormat: "text", Upstreams: map[string]string{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseServe(t, tt.args, tt.env)
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string // config file content; "" for none
		args    []string
		env     map[string]string
		wantErr []string // substrings of the error
	}{
		{name: "unknown top-level key", file: "listn: \":5000\"\n", wantErr: []string{"listn"}},
		{name: "unknown rule key", file: "rules:\n  - name: ubuntu\n    sourceRepository: docker.io/library/ubuntu\n    target: ubuntu\n", wantErr: []string{"sourceRepository"}},
		{name: "origin is not settable", file: "rules:\n  - name: ubuntu\n    source: docker.io/library/ubuntu\n    target: ubuntu\n    origin: api\n", wantErr: []string{"origin"}},
		{name: "invalid rule", file: "rules:\n  - name: ub\n    source: docker.io/library/ubuntu\n    target: ubuntu\n", wantErr: []string{`"ub"`}},
		{name: "conflicting rules", file: "rules:\n  - name: ubuntu\n    source: docker.io/library/ubuntu\n    target: ubuntu\n  - name: ubuntu-quay\n    source: quay.io/x/ubuntu\n    target: ubuntu\n", wantErr: []string{"ubuntu-quay", "conflicts"}},
		{name: "bad YAML", file: "listen: [\n", wantErr: []string{"config file"}},
		{name: "missing file", args: []string{"--config", "/nonexistent/regcache.yaml"}, wantErr: []string{"/nonexistent/regcache.yaml"}},
		{name: "ftp upstream flag", args: []string{"--upstream", "docker.io=ftp://mirror.example.com"}, wantErr: []string{"ftp://mirror.example.com"}},
		{name: "upstream with path", args: []string{"--upstream", "docker.io=https://mirror.example.com/v2"}, wantErr: []string{"https://mirror.example.com/v2"}},
		{name: "upstream with credentials", args: []string{"--upstream", "docker.io=https://u:s3cr3t-pw@mirror.example.com"}, wantErr: []string{"credentials"}},
		{name: "upstream without =", args: []string{"--upstream", "docker.io"}, wantErr: []string{`"docker.io"`}},
		{name: "upstream without url", args: []string{"--upstream", "docker.io="}, wantErr: []string{`"docker.io="`}},
		{name: "upstream bad host", args: []string{"--upstream", "not a host=http://x"}, wantErr: []string{"not a host"}},
		{name: "ftp upstream env", env: map[string]string{"REGCACHE_UPSTREAM": "ghcr.io=http://ok:1,docker.io=ftp://env.example.com"}, wantErr: []string{"ftp://env.example.com"}},
		{name: "upstream env without =", env: map[string]string{"REGCACHE_UPSTREAM": "ghcr.io"}, wantErr: []string{`"ghcr.io"`}},
		{name: "ftp upstream file", file: "upstreams:\n  docker.io: ftp://file.example.com\n", wantErr: []string{"ftp://file.example.com"}},
		{name: "bad log level flag", args: []string{"--log-level", "loud"}, wantErr: []string{`"loud"`}},
		{name: "bad log level env", env: map[string]string{"REGCACHE_LOG_LEVEL": "verbose"}, wantErr: []string{`"verbose"`}},
		{name: "bad log level file", file: "logLevel: chatty\n", wantErr: []string{`"chatty"`}},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: []string{`"xml"`}},
		{name: "empty listen flag", args: []string{"--listen", ""}, wantErr: []string{"listen"}},
		{name: "empty data dir flag", args: []string{"--data-dir", ""}, wantErr: []string{"dataDir"}},
		{name: "bad heap floor flag", args: []string{"--heap-floor", "lots"}, wantErr: []string{"heapFloor", `"lots"`, "512MiB"}},
		{name: "bad heap floor env", env: map[string]string{"REGCACHE_HEAP_FLOOR": "-1MiB"}, wantErr: []string{"heapFloor", `"-1MiB"`}},
		{name: "bad heap floor file", file: "heapFloor: 64 megs\n", wantErr: []string{"heapFloor", `"64 megs"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, "config.yaml", tt.file)}, args...)
			}
			cfg, err := parseServe(t, args, tt.env)
			if err == nil {
				t.Fatalf("loadConfig accepted it: %+v", cfg)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t-pw") {
				t.Errorf("error %q leaks a credential", err)
			}
		})
	}
}

// TestUpstreamAliases: Docker Hub's aliases name one login server, so a flag
// given under one alias overrides the environment under another, every time.
func TestUpstreamAliases(t *testing.T) {
	t.Parallel()
	for range 20 {
		cfg, err := parseServe(t, []string{"--upstream", "index.docker.io=http://127.0.0.1:2"},
			map[string]string{"REGCACHE_UPSTREAM": "docker.io=http://127.0.0.1:1,GHCR.io=http://127.0.0.1:3"})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"docker.io": "http://127.0.0.1:2", "ghcr.io": "http://127.0.0.1:3"}
		if len(cfg.Upstreams) != len(want) || cfg.Upstreams["docker.io"] != want["docker.io"] || cfg.Upstreams["ghcr.io"] != want["ghcr.io"] {
			t.Fatalf("upstreams = %v, want %v", cfg.Upstreams, want)
		}
	}
	file := writeFile(t, "c.yaml", "upstreams:\n  docker.io: http://127.0.0.1:1\n  registry-1.docker.io: http://127.0.0.1:2\n")
	if _, err := parseServe(t, []string{"--config", file}, nil); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Fatalf("two aliases of docker.io in the file: err = %v, want 'listed twice'", err)
	}
}

// TestUnknownConfigKeys: a key the config file does not know is refused
// with what an operator needs to fix it: the file, the line, where the key
// is, a close match when there is one, and the keys accepted there (never
// Go type names).
func TestUnknownConfigKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		want []string
	}{
		{
			name: "top level typo",
			file: "listen: \":5000\"\nrulez: []\n",
			want: []string{`line 2: unknown key "rulez" at the top level (did you mean "rules"?)`,
				"accepted keys: " + strings.Join(yamlKeys(reflect.TypeFor[Config]()), ", ")},
		},
		{
			name: "case",
			file: "datadir: /var/lib/regcache\n",
			want: []string{`line 1: unknown key "datadir" at the top level (did you mean "dataDir"?)`},
		},
		{
			name: "rule key",
			file: "rules:\n  - name: ubuntu\n    source: docker.io/library/ubuntu\n    target: ubuntu\n  - name: alpine\n    sourceRepository: docker.io/library/alpine\n    target: alpine\n",
			want: []string{`line 6: unknown key "sourceRepository" in rules[1]`, "accepted keys: credentialSet, deletedTags, maxStale, name, source, tagTTL, target"},
		},
		{
			name: "rule origin",
			file: "rules:\n  - name: ubuntu\n    source: docker.io/library/ubuntu\n    target: ubuntu\n    origin: api\n",
			want: []string{`line 5: unknown key "origin" in rules[0]`},
		},
		{
			name: "credential set key",
			file: "credentialSets:\n  - name: hub\n    loginServer: docker.io\n    usernameSecret: env://REGCACHE_SECRET_U\n    password: x\n",
			want: []string{`line 5: unknown key "password" in credentialSets[0]`, "accepted keys: loginServer, name, passwordSecret, usernameSecret"},
		},
		{
			name: "vault key",
			file: "vault:\n  address: https://vault.example.com:8200\n  token: s.abc\n",
			want: []string{`line 3: unknown key "token" in vault`, "tokenFile"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "config.yaml", tt.file)
			_, err := parseServe(t, []string{"--config", path}, nil)
			if err == nil {
				t.Fatal("loadConfig accepted an unknown key")
			}
			for _, w := range append([]string{"config file " + path + ", "}, tt.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			for _, bad := range []string{"main.Config", "cache.Rule", "credentials.", "not found in type"} {
				if strings.Contains(err.Error(), bad) {
					t.Errorf("error %q speaks of Go types (%q)", err, bad)
				}
			}
			if strings.Contains(err.Error(), "s.abc") {
				t.Errorf("error %q repeats a value", err)
			}
		})
	}
}

// yamlKeys lists the yaml keys of the fields of struct type t, sorted: the
// keys a config file may use at that level.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		k, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case opts == "inline":
			keys = append(keys, yamlKeys(f.Type)...)
		case k != "" && k != "-":
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// runMainEnv makes the test binary run main() instead of the tests, so that
// TestExitCodes sees the exit status of the real program.
const runMainEnv = "REGCACHE_CMD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0) // main exits by itself on error
	}
	os.Exit(m.Run())
}

// TestExitCodes runs the program (this test binary, as main) and checks the
// documented exit status: 0 success, 1 a failure, 2 a command line that
// cannot run as given (with a hint to --help).
func TestExitCodes(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unreachable := []string{"--server", "http://" + freeAddr(t), "--token", cliToken}
	tests := []struct {
		name       string
		args       []string
		code       int
		wantStderr []string
		wantStdout string
	}{
		{name: "no arguments prints help", args: nil, code: 0, wantStdout: "Usage:"},
		{name: "help", args: []string{"cache", "--help"}, code: 0, wantStdout: "regcache cache"},
		{name: "version flag", args: []string{"--version"}, code: 0, wantStdout: "regcache "},
		{name: "version", args: []string{"version"}, code: 0, wantStdout: "regcache "},
		{name: "completion", args: []string{"completion", "bash"}, code: 0, wantStdout: "regcache"},
		{name: "unknown command", args: []string{"nosuch"}, code: 2, wantStderr: []string{`unknown command "nosuch" for "regcache"`, "regcache --help"}},
		{name: "unknown subcommand", args: []string{"cache", "lsit"}, code: 2, wantStderr: []string{`unknown command "lsit" for "regcache cache"`, `did you mean "list"?`, "regcache cache --help"}},
		{name: "unknown flag", args: []string{"cache", "list", "--no-such-flag"}, code: 2, wantStderr: []string{"--no-such-flag", "regcache cache list --help"}},
		{name: "bad flag value", args: []string{"serve", "--credential-cache-ttl", "soon"}, code: 2, wantStderr: []string{`"soon"`}},
		{name: "missing required flag", args: []string{"cache", "create", "-n", "Ubuntu"}, code: 2, wantStderr: []string{"source-repo", "regcache cache create --help"}},
		{name: "extra argument", args: []string{"cache", "list", "extra"}, code: 2, wantStderr: []string{"extra"}},
		{name: "nothing to update", args: []string{"cache", "update", "-n", "Ubuntu"}, code: 2, wantStderr: []string{"nothing to update"}},
		{name: "conflicting flags", args: []string{"credential-set", "policy", "-n", "Hub", "--all"}, code: 2, wantStderr: []string{"exactly one"}},
		{name: "unknown output format", args: append([]string{"cache", "list", "-o", "xml"}, unreachable...), code: 2, wantStderr: []string{`"xml"`, "json, table or yaml"}},
		{name: "bad server URL", args: []string{"cache", "list", "--server", "localhost:5000", "--token", cliToken}, code: 2, wantStderr: []string{"--server"}},
		{name: "server unreachable", args: append([]string{"cache", "list"}, unreachable...), code: 1, wantStderr: []string{"cannot reach regcache"}},
		{name: "bad configuration", args: []string{"serve", "--log-level", "loud", "--data-dir", t.TempDir() + "/data"}, code: 1, wantStderr: []string{`"loud"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, exe, tt.args...)
			// A race-enabled binary would sleep a second at exit.
			cmd.Env = append(os.Environ(), runMainEnv+"=1", "GORACE=atexit_sleep_ms=0")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if exitErr, ok := err.(*exec.ExitError); ok {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr.String())
				}
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout does not say %q:\n%s", tt.wantStdout, stdout.String())
			}
		})
	}
}

// TestEveryCommandHasExamples: every command's --help teaches by example,
// and the examples are of that command.
func TestEveryCommandHasExamples(t *testing.T) {
	t.Parallel()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden {
			return
		}
		path := c.CommandPath()
		if !strings.Contains(c.Example, path) {
			t.Errorf("%q has no example of itself in --help (Example: %q)", path, c.Example)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := newRoot(io.Discard, io.Discard, mapEnv(nil))
	walk(root)
	for _, name := range []string{"completion", "help", "version"} {
		if c, _, err := root.Find([]string{name}); err != nil || c.Name() != name {
			t.Errorf("regcache has no %q command", name)
		}
	}
	var help bytes.Buffer
	root.SetOut(&help)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Exit status:\n  0  success\n  1  the command failed", "\n  2  the command line cannot run as given"} {
		if !strings.Contains(help.String(), w) {
			t.Errorf("regcache --help does not document exit codes (%q):\n%s", w, help.String())
		}
	}
}

// TestCompletion: `regcache completion SHELL` prints a completion script for
// each shell cobra supports.
func TestCompletion(t *testing.T) {
	t.Parallel()
	for shell, want := range map[string]string{
		"bash":       "__start_regcache",
		"zsh":        "#compdef regcache",
		"fish":       "complete -c regcache",
		"powershell": "Register-ArgumentCompleter",
	} {
		stdout, _, err := runCLI(t, t.Context(), nil, "completion", shell)
		if err != nil || !strings.Contains(stdout, want) {
			t.Errorf("completion %s: %v; output lacks %q", shell, err, want)
		}
	}
}

// TestVersionInfo: the version line is made of the module version and the
// VCS stamp of the build.
func TestVersionInfo(t *testing.T) {
	t.Parallel()
	platform := runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want versionInfo
		text string
	}{
		{
			name: "release",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/regcache/regcache", Version: "v1.2.3"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.time", Value: "2025-06-01T10:00:00Z"}, {Key: "vcs.modified", Value: "false"},
			}},
			want: versionInfo{Version: "v1.2.3", Commit: "0123456789abcdef0123456789abcdef01234567", CommitTime: "2025-06-01T10:00:00Z", Go: "go1.26.8", Platform: platform},
			text: "regcache v1.2.3 (commit 0123456789abcdef0123456789abcdef01234567, 2025-06-01T10:00:00Z, go1.26.8, " + platform + ")\n",
		},
		{
			name: "modified checkout",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/regcache/regcache", Version: "v0.0.0-20250601100000-0123456789ab+dirty"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.modified", Value: "true"},
			}},
			want: versionInfo{Version: "v0.0.0-20250601100000-0123456789ab+dirty", Commit: "0123456789abcdef0123456789abcdef01234567", Modified: true, Go: "go1.26.8", Platform: platform},
			text: "regcache v0.0.0-20250601100000-0123456789ab+dirty (commit 0123456789abcdef0123456789abcdef01234567, modified, go1.26.8, " + platform + ")\n",
		},
		{
			name: "no VCS stamp",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/regcache/regcache", Version: "(devel)"}},
			want: versionInfo{Version: "(devel)", Go: "go1.26.8", Platform: platform},
			text: "regcache (devel) (commit unknown, go1.26.8, " + platform + ")\n",
		},
		{
			name: "no build info",
			bi:   nil,
			want: versionInfo{Version: "unknown", Go: runtime.Version(), Platform: platform},
			text: "regcache unknown (commit unknown, " + runtime.Version() + ", " + platform + ")\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := newVersionInfo(tt.bi)
			if got != tt.want {
				t.Errorf("newVersionInfo = %+v, want %+v", got, tt.want)
			}
			if got.String() != tt.text {
				t.Errorf("text = %q, want %q", got.String(), tt.text)
			}
		})
	}
}

// TestVersionOfThisBinary: `version` and `--version` report the build
// info of the running binary, as `go version -m` reads it from the file.
func TestVersionOfThisBinary(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("go command not found (CI requires it): %v", err)
		}
		t.Skipf("go command not found: %v", err)
	}
	out, err := exec.CommandContext(t.Context(), goBin, "version", "-m", exe).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	want := versionInfo{Platform: runtime.GOOS + "/" + runtime.GOARCH}
	for i, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case i == 0 && len(f) == 2:
			want.Go = f[1]
		case len(f) >= 3 && f[0] == "mod":
			want.Version = f[2]
		case len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision="):
			want.Commit = strings.TrimPrefix(f[1], "vcs.revision=")
		}
	}
	stdout, _, err := runCLI(t, t.Context(), nil, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got versionInfo
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("version -o json: %v\n%s", err, stdout)
	}
	if got.Version != want.Version || got.Commit != want.Commit || got.Go != want.Go || got.Platform != want.Platform {
		t.Errorf("version -o json = %+v, want %+v (from go version -m)", got, want)
	}
	text, _, err := runCLI(t, t.Context(), nil, "version")
	if err != nil {
		t.Fatal(err)
	}
	flag, _, err := runCLI(t, t.Context(), nil, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if text != got.String() || flag != text {
		t.Errorf("version printed %q and --version %q, want both %q", text, flag, got.String())
	}
}

// TestYAMLOutput: every read command prints YAML with -o yaml, with the
// keys and values of its JSON output.
func TestYAMLOutput(t *testing.T) {
	t.Parallel()
	rules := newCLIServer(t)
	sets := newCredCLIServer(t)
	env := map[string]string{"REGCACHE_TOKEN": cliToken}
	if _, _, err := runCLI(t, t.Context(), env, "credential-set", "create", "-n", "HubSet", "-l", "docker.io", "-u", "env://REGCACHE_SECRET_U", "-p", "env://REGCACHE_SECRET_P", "--server", sets); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"cache", "list", "--server", rules.url},
		{"cache", "show", "-n", "Ubuntu", "--server", rules.url},
		{"credential-set", "list", "--server", sets},
		{"credential-set", "show", "-n", "HubSet", "--server", sets},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			jsonOut, _, err := runCLI(t, t.Context(), env, append(args, "-o", "json")...)
			if err != nil {
				t.Fatal(err)
			}
			yamlOut, _, err := runCLI(t, t.Context(), env, append(args, "-o", "yaml")...)
			if err != nil {
				t.Fatal(err)
			}
			var fromJSON, fromYAML any
			if err := json.Unmarshal([]byte(jsonOut), &fromJSON); err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal([]byte(yamlOut), &fromYAML); err != nil {
				t.Fatalf("-o yaml is not YAML: %v\n%s", err, yamlOut)
			}
			if strings.HasPrefix(strings.TrimSpace(yamlOut), "{") || strings.HasPrefix(strings.TrimSpace(yamlOut), "[") {
				t.Errorf("-o yaml printed JSON-style flow YAML:\n%s", yamlOut)
			}
			// JSON and YAML decode numbers and times alike here: compare
			// through JSON.
			a, _ := json.Marshal(fromJSON)
			b, _ := json.Marshal(fromYAML)
			if !bytes.Equal(a, b) {
				t.Errorf("-o yaml and -o json differ:\n%s\n%s", yamlOut, jsonOut)
			}
		})
	}
	// The keys are the API's, as in JSON (not the config file's).
	out, _, err := runCLI(t, t.Context(), env, "cache", "show", "-n", "Ubuntu", "-o", "yaml", "--server", rules.url)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "sourceRepository: docker.io/library/ubuntu\n") {
		t.Errorf("cache show -o yaml:\n%s", out)
	}
}

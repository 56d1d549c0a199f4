package main

import (
	"strings"
	"testing"
	"time"
)

// The fill idle and upstream header timeouts come from the file, the
// environment or a flag, in rising precedence, and must not be negative.
func TestUpstreamTimeoutsConfig(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "config.yaml", "fillIdleTimeout: 3m\nupstreamHeaderTimeout: 40s\n")
	tests := []struct {
		name         string
		args         []string
		env          map[string]string
		idle, header time.Duration
	}{
		{name: "defaults (zero: the puller's and the transport's own)"},
		{name: "file", args: []string{"--config", file}, idle: 3 * time.Minute, header: 40 * time.Second},
		{name: "env beats file", args: []string{"--config", file},
			env:  map[string]string{"REGCACHE_FILL_IDLE_TIMEOUT": "90s", "REGCACHE_UPSTREAM_HEADER_TIMEOUT": "5s"},
			idle: 90 * time.Second, header: 5 * time.Second},
		{name: "flags beat env", args: []string{"--config", file, "--fill-idle-timeout", "1s", "--upstream-header-timeout", "2s"},
			env:  map[string]string{"REGCACHE_FILL_IDLE_TIMEOUT": "90s", "REGCACHE_UPSTREAM_HEADER_TIMEOUT": "5s"},
			idle: time.Second, header: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseServe(t, tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.FillIdleTimeout != tt.idle || cfg.UpstreamHeaderTimeout != tt.header {
				t.Errorf("fill idle %v, upstream header %v; want %v, %v", cfg.FillIdleTimeout, cfg.UpstreamHeaderTimeout, tt.idle, tt.header)
			}
		})
	}
	for _, bad := range []struct{ file, env, want string }{
		{file: "fillIdleTimeout: -1s\n", want: "fillIdleTimeout -1s: must be positive"},
		{file: "upstreamHeaderTimeout: -2s\n", want: "upstreamHeaderTimeout -2s: must be positive"},
		{env: "soon", want: `REGCACHE_FILL_IDLE_TIMEOUT="soon"`},
	} {
		env := map[string]string{}
		if bad.env != "" {
			env["REGCACHE_FILL_IDLE_TIMEOUT"] = bad.env
		}
		var args []string
		if bad.file != "" {
			args = []string{"--config", writeFile(t, "bad.yaml", bad.file)}
		}
		if _, err := parseServe(t, args, env); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("config %q, env %q: %v; want an error saying %q", bad.file, bad.env, err, bad.want)
		}
	}
}

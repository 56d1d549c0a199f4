package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/local"
)

func TestLocalRepositorySettings(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "local.yaml", "localNamespaces: [lab/*]\nallowDelete: [tags]\nuploadIdleTimeout: 20m\ngcInterval: 2h\ngcGrace: 3h\n")
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		ns      []string
		deletes local.Deletes
		idle    time.Duration
		gc      time.Duration
	}{
		{"defaults", nil, nil, nil, local.AllDeletes, 0, 0},
		{"file", []string{"--config", file}, nil, []string{"lab/*"}, local.Deletes{Tags: true}, 20 * time.Minute, 2 * time.Hour},
		{"env beats file", []string{"--config", file}, map[string]string{"REGCACHE_LOCAL_NAMESPACES": "ci,lab/*", "REGCACHE_ALLOW_DELETE": "none", "REGCACHE_GC_INTERVAL": "-1s"},
			[]string{"ci", "lab/*"}, local.Deletes{}, 20 * time.Minute, -time.Second},
		{"flags beat env", []string{"--local-namespace", "lab", "--local-namespace", "team/x", "--allow-delete", "manifests,blobs", "--upload-idle-timeout", "5m"},
			map[string]string{"REGCACHE_LOCAL_NAMESPACES": "ci"}, []string{"lab", "team/x"}, local.Deletes{Manifests: true, Blobs: true}, 5 * time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseServe(t, tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			d, _ := cfg.deletes()
			if !reflect.DeepEqual(cfg.LocalNamespaces, tc.ns) || d != tc.deletes || cfg.UploadIdleTimeout != tc.idle || cfg.GCInterval != tc.gc {
				t.Fatalf("got namespaces %v, deletes %+v, idle %v, gc %v", cfg.LocalNamespaces, d, cfg.UploadIdleTimeout, cfg.GCInterval)
			}
		})
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad namespace", []string{"--local-namespace", "Lab/*"}, `"Lab/*"`},
		{"bad delete kind", []string{"--allow-delete", "images"}, `allowDelete "images"`},
		{"negative grace", []string{"--gc-grace", "-1m"}, "gcGrace -1m0s"},
	} {
		if _, err := parseServe(t, tc.args, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %s", tc.name, err, tc.want)
		}
	}
}

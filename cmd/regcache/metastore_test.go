package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/regcache/regcache/storage"
)

func TestMetaConfig(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "config.yaml", `meta: etcd
etcd:
  endpoints: [http://file:2379]
  prefix: /from-file/
  caFile: ca.pem
`)
	cfg, err := parseServe(t, []string{"--config", file, "--etcd-prefix", "/from-flag/"},
		map[string]string{"REGCACHE_ETCD_ENDPOINTS": "http://a:2379, http://b:2379"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Meta != "etcd" || !slices.Equal(cfg.Etcd.Endpoints, []string{"http://a:2379", "http://b:2379"}) || cfg.Etcd.Prefix != "/from-flag/" || cfg.Etcd.CAFile != "ca.pem" {
		t.Errorf("loaded %q %+v", cfg.Meta, cfg.Etcd)
	}
	cfg, err = parseServe(t, []string{"--meta", "etcd", "--etcd-endpoints", "https://x:2379"}, nil)
	if err != nil || !slices.Equal(cfg.Etcd.Endpoints, []string{"https://x:2379"}) {
		t.Errorf("flags: %+v, %v", cfg.Etcd, err)
	}
	if cfg, err := parseServe(t, nil, nil); err != nil || cfg.Meta != "" {
		t.Errorf("default: meta %q, %v; want bbolt", cfg.Meta, err)
	}
}

// Bad meta settings name the field, the value and what is accepted.
func TestMetaConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--meta", "redis"}, `meta "redis": want bbolt (<data-dir>/meta.db) or etcd`},
		{[]string{"--meta", "etcd"}, "etcd.endpoints: meta etcd needs at least one client URL"},
		{[]string{"--meta", "etcd", "--etcd-endpoints", "127.0.0.1:2379"}, `etcd.endpoints "127.0.0.1:2379": want a member's http:// or https:// client URL`},
		{[]string{"--meta", "etcd", "--etcd-endpoints", "http://h:2379", "--etcd-cert-file", "c.pem"}, `etcd.certFile "c.pem", etcd.keyFile "": give both`},
		{[]string{"--meta", "etcd", "--etcd-endpoints", "http://h:2379", "--etcd-prefix", "regcache"}, `etcd.prefix "regcache": want a key prefix starting with /`},
	} {
		_, err := parseServe(t, c.args, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error saying %q", c.args, err, c.want)
		}
	}
}

// fsck --data-dir refuses a data directory whose metadata is in etcd: its
// meta.db holds upload sessions only and would pass for an empty store.
func TestFsckRefusesEtcdMeta(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	meta.Close()
	if err := os.WriteFile(filepath.Join(dir, etcdMetaMarker), []byte("etcd endpoints=http://h:2379 prefix=/regcache/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCLI(t, t.Context(), nil, "fsck", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "keeps its metadata in etcd (etcd endpoints=http://h:2379") {
		t.Errorf("fsck of an etcd-meta data directory: %v", err)
	}
}

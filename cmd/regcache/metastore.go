package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/regcache/regcache/archive"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/eviction"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/storage/etcdmeta"
)

// MetaConfig says where metadata lives.
type MetaConfig struct {
	// Meta is bbolt (<dataDir>/meta.db, the default: one server owns it)
	// or etcd (an etcd cluster that several replicas share, see Etcd)
	// (--meta, REGCACHE_META).
	Meta string `yaml:"meta"`
	// Etcd locates the cluster of meta etcd.
	Etcd EtcdConfig `yaml:"etcd"`
}

// EtcdConfig is the etcd: section. A username and password, when the
// cluster has authentication on, come from REGCACHE_ETCD_USERNAME and
// REGCACHE_ETCD_PASSWORD; never from the config file.
type EtcdConfig struct {
	// Endpoints are the members' client URLs (--etcd-endpoints, a comma
	// list; REGCACHE_ETCD_ENDPOINTS).
	Endpoints []string `yaml:"endpoints"`
	// Prefix is prepended to every key (--etcd-prefix,
	// REGCACHE_ETCD_PREFIX; default /regcache/). Replicas that serve the
	// same content share it.
	Prefix string `yaml:"prefix"`
	// CAFile, CertFile and KeyFile are PEM files for TLS: the CA that
	// signed the members' certificates, and a client certificate with its
	// key when the cluster asks for one (--etcd-ca-file, --etcd-cert-file,
	// --etcd-key-file).
	CAFile   string `yaml:"caFile"`
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// metaFlags registers the flags of MetaConfig.
func metaFlags(fs *pflag.FlagSet) {
	fs.String("meta", "", "where metadata lives: bbolt (<data-dir>/meta.db, one server) or etcd (a cluster shared by replicas on one --store s3 bucket, --etcd-*) (env REGCACHE_META; default bbolt)")
	fs.String("etcd-endpoints", "", "comma-separated etcd client URLs of --meta etcd, e.g. https://10.0.0.1:2379,https://10.0.0.2:2379 (env REGCACHE_ETCD_ENDPOINTS)")
	fs.String("etcd-prefix", "", "prefix of every etcd key; replicas serving the same content share it (env REGCACHE_ETCD_PREFIX; default "+etcdmeta.DefaultPrefix+")")
	fs.String("etcd-ca-file", "", "PEM CA certificate that signed the etcd members' certificates (env REGCACHE_ETCD_CA_FILE; default: system roots)")
	fs.String("etcd-cert-file", "", "PEM client certificate for etcd, with --etcd-key-file (env REGCACHE_ETCD_CERT_FILE)")
	fs.String("etcd-key-file", "", "PEM key of --etcd-cert-file (env REGCACHE_ETCD_KEY_FILE)")
}

// load reads the flags and environment variables of MetaConfig over what
// the file set.
func (c *MetaConfig) load(fs *pflag.FlagSet, getenv func(string) string) error {
	for _, s := range []struct {
		dst       *string
		flag, env string
	}{
		{&c.Meta, "meta", "REGCACHE_META"},
		{&c.Etcd.Prefix, "etcd-prefix", "REGCACHE_ETCD_PREFIX"},
		{&c.Etcd.CAFile, "etcd-ca-file", "REGCACHE_ETCD_CA_FILE"},
		{&c.Etcd.CertFile, "etcd-cert-file", "REGCACHE_ETCD_CERT_FILE"},
		{&c.Etcd.KeyFile, "etcd-key-file", "REGCACHE_ETCD_KEY_FILE"},
	} {
		if v := getenv(s.env); v != "" {
			*s.dst = v
		}
		if fs.Changed(s.flag) {
			*s.dst, _ = fs.GetString(s.flag)
		}
	}
	list := ""
	if v := getenv("REGCACHE_ETCD_ENDPOINTS"); v != "" {
		list = v
	}
	if fs.Changed("etcd-endpoints") {
		list, _ = fs.GetString("etcd-endpoints")
	}
	if list != "" {
		c.Etcd.Endpoints = nil
		for _, e := range strings.Split(list, ",") {
			if e = strings.TrimSpace(e); e != "" {
				c.Etcd.Endpoints = append(c.Etcd.Endpoints, e)
			}
		}
	}
	return nil
}

// validate checks the settings; the cluster is reached only at start.
func (c MetaConfig) validate() error {
	switch c.Meta {
	case "", "bbolt":
		return nil
	case "etcd":
	default:
		return fmt.Errorf("meta %q: want bbolt (<data-dir>/meta.db) or etcd (a cluster shared by replicas)", c.Meta)
	}
	if len(c.Etcd.Endpoints) == 0 {
		return errors.New("etcd.endpoints: meta etcd needs at least one client URL (--etcd-endpoints http://127.0.0.1:2379)")
	}
	for _, e := range c.Etcd.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("etcd.endpoints %q: want a member's http:// or https:// client URL without a path, e.g. https://10.0.0.1:2379", e)
		}
	}
	if (c.Etcd.CertFile == "") != (c.Etcd.KeyFile == "") {
		return fmt.Errorf("etcd.certFile %q, etcd.keyFile %q: give both (a client certificate and its key) or neither", c.Etcd.CertFile, c.Etcd.KeyFile)
	}
	if c.Etcd.Prefix != "" && !strings.HasPrefix(c.Etcd.Prefix, "/") {
		return fmt.Errorf("etcd.prefix %q: want a key prefix starting with /, e.g. /regcache/", c.Etcd.Prefix)
	}
	return nil
}

// metaStore is the metadata the server's parts share: storage.Meta
// (bbolt) or etcdmeta.Meta. Each part takes the smaller interface it
// declares; this one lists what the server hands on.
type metaStore interface {
	local.Meta
	cache.MetaStore
	cache.Records
	eviction.Meta
	archive.Meta
	Close() error
}

// etcdMetaMarker is the file of a data directory whose metadata is in
// etcd; it says where, and keeps offline fsck from reading the local
// meta.db (upload sessions only) as if it were the store's metadata.
const etcdMetaMarker = "meta-in-etcd"

// openedMeta is the metadata of a server: the store's, and the local
// bbolt database that keeps upload sessions (they belong to the replica
// holding their partial bytes), which is the same one with meta bbolt.
type openedMeta struct {
	store    metaStore
	sessions *storage.Meta
	checker  *storage.Meta // nil when fsck cannot read the store's metadata
	close    func()
}

// openMeta opens the metadata the config names.
func openMeta(ctx context.Context, cfg Config, getenv func(string) string, log *slog.Logger) (*openedMeta, error) {
	own, err := storage.OpenMeta(filepath.Join(cfg.DataDir, "meta.db"))
	if errors.Is(err, storage.ErrLocked) {
		return nil, fmt.Errorf("%w; stop it or use another --data-dir", err)
	}
	if err != nil {
		return nil, err
	}
	if cfg.Meta != "etcd" {
		return &openedMeta{store: own, sessions: own, checker: own, close: func() { own.Close() }}, nil
	}
	opts := etcdmeta.Options{Endpoints: cfg.Etcd.Endpoints, Prefix: cfg.Etcd.Prefix, DialTimeout: 10 * time.Second, Log: log,
		Username: getenv("REGCACHE_ETCD_USERNAME"), Password: getenv("REGCACHE_ETCD_PASSWORD")}
	if cfg.Etcd.CAFile != "" || cfg.Etcd.CertFile != "" {
		opts.TLS = &etcdmeta.TLS{CAFile: cfg.Etcd.CAFile, CertFile: cfg.Etcd.CertFile, KeyFile: cfg.Etcd.KeyFile}
	}
	shared, err := etcdmeta.Open(ctx, opts)
	if err != nil {
		own.Close()
		return nil, fmt.Errorf("meta etcd: %w", err)
	}
	where := fmt.Sprintf("etcd endpoints=%s prefix=%s\n", strings.Join(cfg.Etcd.Endpoints, ","), cmpOr(cfg.Etcd.Prefix, etcdmeta.DefaultPrefix))
	if err := os.WriteFile(filepath.Join(cfg.DataDir, etcdMetaMarker), []byte(where), 0o644); err != nil {
		shared.Close()
		own.Close()
		return nil, fmt.Errorf("data directory: %w", err)
	}
	log.Info("metadata is stored in etcd", "endpoints", cfg.Etcd.Endpoints, "prefix", cmpOr(cfg.Etcd.Prefix, etcdmeta.DefaultPrefix))
	return &openedMeta{store: shared, sessions: own, close: func() { shared.Close(); own.Close() }}, nil
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// sharedMeta is what a metadata store shared by replicas adds
// (etcdmeta.Meta): change notifications and a lock among replicas.
type sharedMeta interface {
	WatchRecords(ctx context.Context, kind string, changed func())
	TryLock(ctx context.Context, name string) (unlock func(), ok bool, err error)
}

// watchRecords reloads what records of kind hold whenever any replica
// changed them, until ctx ends. A failed reload is logged; the next change
// (or the watch starting over) reloads again.
func watchRecords(ctx context.Context, sm sharedMeta, kind string, reload func(context.Context) error, log *slog.Logger) {
	sm.WatchRecords(ctx, kind, func() {
		if err := reload(ctx); err != nil && ctx.Err() == nil {
			log.Warn("reloading changes another replica made failed", "records", kind, "err", err)
		}
	})
}

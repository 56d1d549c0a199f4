package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/regcache/regcache/accesslog"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/registry"
)

// Config is every setting of `regcache serve`. Each field is set, in rising
// precedence, by its default, the YAML config file, a REGCACHE_* environment
// variable and a command-line flag.
type Config struct {
	// Listen is the address of the registry and admin API (flag --listen,
	// env REGCACHE_LISTEN, default ":5000").
	Listen string `yaml:"listen"`
	// DataDir holds blobs, the metadata database and the generated admin
	// token (--data-dir, REGCACHE_DATA_DIR, default "./regcache-data").
	DataDir string `yaml:"dataDir"`
	// TLSCert and TLSKey are PEM files of the server's certificate (with
	// its chain) and key (--tls-cert, --tls-key; REGCACHE_TLS_CERT,
	// REGCACHE_TLS_KEY). They are loaded again when they change. Without
	// them regcache serves plain HTTP.
	TLSCert string `yaml:"tlsCert"`
	TLSKey  string `yaml:"tlsKey"`
	// AdminTokenFile names a file holding the admin token, e.g. a mounted
	// Secret (--admin-token-file, REGCACHE_ADMIN_TOKEN_FILE). Default:
	// <dataDir>/admin.token, generated on first start.
	AdminTokenFile string `yaml:"adminTokenFile"`
	// Upstreams maps login servers to endpoint URLs (--upstream host=url,
	// repeatable; REGCACHE_UPSTREAM="host=url,host=url").
	Upstreams map[string]string `yaml:"upstreams"`
	// AllowedUpstreams are login servers rules and credential sets may name
	// besides the well-known public registries and those with an endpoint
	// in Upstreams: hosts, or "*.example.com" for every host under a domain
	// (--allow-upstream, repeatable; REGCACHE_ALLOW_UPSTREAM, comma-separated).
	AllowedUpstreams []string `yaml:"allowedUpstreams"`
	// Rules are cache rules declared here; read-only through the admin API.
	Rules []cache.Rule `yaml:"rules"`
	// DefaultRegistry is the login server that repository names matching no
	// rule belong to, for Docker's registry-mirrors, which send Docker Hub
	// paths without a registry (--default-registry,
	// REGCACHE_DEFAULT_REGISTRY; e.g. docker.io). Default: none.
	DefaultRegistry string `yaml:"defaultRegistry"`
	// CredentialSets are credential sets declared here (references to
	// secrets, never secrets); read-only through the admin API. Rules of
	// this file may use them.
	CredentialSets []credentials.Set `yaml:"credentialSets"`
	// Secrets confine what credential sets may reference: env:// variables
	// starting with envPrefix (--secret-env-prefix,
	// REGCACHE_SECRETS_ENV_PREFIX; default REGCACHE_SECRET_) and file://
	// files under fileDirs (--secret-file-dir, repeatable;
	// REGCACHE_SECRETS_FILE_DIRS, comma-separated; default /run/secrets).
	Secrets credentials.SecretLocations `yaml:"secrets"`
	// Vault tells how to reach and log in to HashiCorp Vault for vault://
	// references (default: the standard VAULT_* environment).
	Vault credentials.VaultConfig `yaml:"vault"`
	// CredentialCacheTTL is how long resolved secrets are reused
	// (--credential-cache-ttl, REGCACHE_CREDENTIAL_CACHE_TTL; 0 is the
	// default, 5m).
	CredentialCacheTTL time.Duration `yaml:"credentialCacheTTL"`
	// CredentialHealthInterval is the period of credential set health
	// checks (--credential-health-interval,
	// REGCACHE_CREDENTIAL_HEALTH_INTERVAL; 0 is the default, 1m).
	CredentialHealthInterval time.Duration `yaml:"credentialHealthInterval"`
	// LocalNamespaces are repository prefixes kept for local (pushed)
	// repositories: routing never sends them upstream (not even through
	// DefaultRegistry) and no rule may target them (--local-namespace,
	// repeatable; REGCACHE_LOCAL_NAMESPACES="lab/*,ci/*"). Default: none.
	LocalNamespaces []string `yaml:"localNamespaces"`
	// UploadIdleTimeout removes a blob upload session that received nothing
	// for this long (--upload-idle-timeout, REGCACHE_UPLOAD_IDLE_TIMEOUT;
	// 0 is the default, 1h).
	UploadIdleTimeout time.Duration `yaml:"uploadIdleTimeout"`
	// AllowDelete lists what clients may delete from local repositories:
	// manifests, tags, blobs, or none (--allow-delete,
	// REGCACHE_ALLOW_DELETE; empty is the default, all three). Cached
	// repositories refuse every delete.
	AllowDelete []string `yaml:"allowDelete"`
	// GCInterval is the period of garbage collection of blobs nothing
	// references (--gc-interval, REGCACHE_GC_INTERVAL; default 1h; 0 turns
	// it off, POST /admin/v1/gc still runs one).
	GCInterval time.Duration `yaml:"gcInterval"`
	// GCGrace keeps blobs written or linked more recently than this from
	// garbage collection: the longest a push may take between its first
	// blob and its manifest (--gc-grace, REGCACHE_GC_GRACE; 0 is the
	// default, 1h).
	GCGrace time.Duration `yaml:"gcGrace"`
	// FillIdleTimeout aborts a blob fill whose upstream sent nothing for
	// this long (--fill-idle-timeout, REGCACHE_FILL_IDLE_TIMEOUT; 0 is the
	// default, 2m). A fill making progress is never cut.
	FillIdleTimeout time.Duration `yaml:"fillIdleTimeout"`
	// UpstreamHeaderTimeout bounds the wait for an upstream's response
	// headers (--upstream-header-timeout, REGCACHE_UPSTREAM_HEADER_TIMEOUT;
	// 0 is the default, 30s).
	UpstreamHeaderTimeout time.Duration `yaml:"upstreamHeaderTimeout"`
	// LogLevel is debug, info, warn or error (--log-level, REGCACHE_LOG_LEVEL).
	LogLevel string `yaml:"logLevel"`
	// LogFormat is text or json (--log-format, REGCACHE_LOG_FORMAT).
	LogFormat string `yaml:"logFormat"`
	// Metrics configures /metrics (see metricsConfig).
	Metrics metricsConfig `yaml:"metrics"`
	// HeapFloor is the heap the Go garbage collector lets grow before it
	// runs, however little is live, e.g. 64MiB ("" is the default, 32MiB;
	// 0 runs the collector as Go does by default); a GOGC variable in the
	// environment wins (--heap-floor, REGCACHE_HEAP_FLOOR). See package
	// heapfloor.
	HeapFloor string `yaml:"heapFloor"`
	// Limits bound connections and the time a client may make no progress
	// (maxConns: --max-conns, REGCACHE_MAX_CONNS; maxConnsPerAddress:
	// --max-conns-per-address, REGCACHE_MAX_CONNS_PER_ADDRESS; the
	// timeouts in the file only). Zero values take the defaults.
	Limits limitsConfig `yaml:"limits"`
	// Auth is client authentication of the distribution API (see
	// authconfig.go); off unless auth.htpasswd is set.
	Auth AuthConfig `yaml:"auth"`
	// TrustedProxies are addresses or CIDR prefixes of proxies whose
	// X-Forwarded-For is believed for login rate limits and audit records
	// (--trusted-proxy, repeatable; REGCACHE_TRUSTED_PROXIES).
	TrustedProxies []string `yaml:"trustedProxies"`
	// LifecycleConfig: offline, maxSize, evictLowWater, evictUnusedAfter
	// and notFoundTTL (lifecycle.go).
	LifecycleConfig `yaml:",inline"`
	// StoreConfig: store and the s3 section (store.go).
	StoreConfig `yaml:",inline"`
	// MetaConfig: meta and the etcd section (metastore.go).
	MetaConfig `yaml:",inline"`
	// Cluster: replicas fetching each blob from the upstream once (cluster.go).
	Cluster clusterConfig `yaml:"cluster"`
}

// limitsConfig is the limits: section: the HTTP server's limits, and the
// cache's and the uploads' (zero values take the defaults).
type limitsConfig struct {
	registry.Limits `yaml:",inline"`
	// MaxUpstreamFetches caps the blobs fetched from upstreams at once;
	// more fills wait for a slot (--max-upstream-fetches,
	// REGCACHE_MAX_UPSTREAM_FETCHES; default 64; -1: no cap).
	MaxUpstreamFetches int `yaml:"maxUpstreamFetches"`
	// MaxUploadSize caps one blob pushed into a local repository, e.g.
	// 20GiB (--max-upload-size, REGCACHE_MAX_UPLOAD_SIZE; default: none).
	MaxUploadSize string `yaml:"maxUploadSize"`
}

func defaultConfig() Config {
	return Config{Listen: ":5000", DataDir: "./regcache-data", LogLevel: "info", LogFormat: "text", Upstreams: map[string]string{}}
}

// serveFlags registers the flags of `serve`.
func serveFlags(fs *pflag.FlagSet) {
	d := defaultConfig()
	fs.String("config", "", "YAML config file (env REGCACHE_CONFIG); flags and REGCACHE_* variables override it")
	fs.String("listen", d.Listen, "address to serve the registry and admin API on (env REGCACHE_LISTEN)")
	fs.String("data-dir", d.DataDir, "directory for blobs, metadata and the generated admin token (env REGCACHE_DATA_DIR)")
	fs.String("tls-cert", "", "PEM file of the server certificate and its chain, loaded again when it changes (env REGCACHE_TLS_CERT; with --tls-key)")
	fs.String("tls-key", "", "PEM file of the server certificate's key (env REGCACHE_TLS_KEY)")
	fs.String("admin-token-file", "", "file holding the admin token (env REGCACHE_ADMIN_TOKEN_FILE; default <data-dir>/admin.token, generated on first start)")
	fs.StringArray("upstream", nil, "login server to endpoint URL, e.g. docker.io=https://mirror.example.com or ghcr.io=http://127.0.0.1:5001; repeatable (env REGCACHE_UPSTREAM, comma-separated)")
	fs.StringArray("allow-upstream", nil, "login server rules and credential sets may name besides the well-known registries and those given by --upstream, e.g. registry.example.com or *.corp.example.com; repeatable (env REGCACHE_ALLOW_UPSTREAM, comma-separated)")
	fs.String("default-registry", "", "login server that names matching no rule belong to, e.g. docker.io when regcache is Docker's registry-mirror (env REGCACHE_DEFAULT_REGISTRY)")
	fs.String("secret-env-prefix", "", "env:// secret references must name a variable starting with this (env REGCACHE_SECRETS_ENV_PREFIX; default "+credentials.DefaultEnvPrefix+")")
	fs.StringArray("secret-file-dir", nil, "file:// secret references must name a file under this directory; repeatable (env REGCACHE_SECRETS_FILE_DIRS, comma-separated; default "+credentials.DefaultFileDir+")")
	fs.Duration("credential-cache-ttl", 0, "how long resolved credential set secrets are reused (env REGCACHE_CREDENTIAL_CACHE_TTL; default 5m)")
	fs.Duration("credential-health-interval", 0, "period of credential set health checks (env REGCACHE_CREDENTIAL_HEALTH_INTERVAL; default 1m)")
	fs.StringArray("local-namespace", nil, "repository prefix kept for pushed repositories, e.g. lab/*: never routed upstream, not even by --default-registry; repeatable (env REGCACHE_LOCAL_NAMESPACES, comma-separated)")
	fs.Duration("upload-idle-timeout", 0, "remove a blob upload session that received nothing for this long (env REGCACHE_UPLOAD_IDLE_TIMEOUT; default 1h)")
	fs.StringSlice("allow-delete", nil, "what clients may delete from local repositories: manifests, tags, blobs, or none (env REGCACHE_ALLOW_DELETE; default manifests,tags,blobs)")
	fs.Duration("gc-interval", 0, "period of garbage collection of blobs no manifest references; negative turns it off (env REGCACHE_GC_INTERVAL; default 1h)")
	fs.Duration("gc-grace", 0, "garbage collection keeps blobs written or linked more recently than this (env REGCACHE_GC_GRACE; default 1h)")
	fs.Duration("fill-idle-timeout", 0, "fail a blob fill whose upstream sent nothing for this long (env REGCACHE_FILL_IDLE_TIMEOUT; default 2m)")
	fs.Duration("upstream-header-timeout", 0, "fail an upstream request whose response headers take longer (env REGCACHE_UPSTREAM_HEADER_TIMEOUT; default 30s)")
	fs.String("log-level", d.LogLevel, "debug, info, warn or error (env REGCACHE_LOG_LEVEL)")
	fs.String("log-format", d.LogFormat, "text or json (env REGCACHE_LOG_FORMAT)")
	fs.Bool("metrics", true, "count requests, hits, misses and upstream traffic and serve them on /metrics for Prometheus (env REGCACHE_METRICS)")
	fs.String("metrics-listen", "", "serve /metrics on this address instead of --listen, e.g. 127.0.0.1:9091 (env REGCACHE_METRICS_LISTEN)")
	fs.String("heap-floor", "", "heap the Go garbage collector lets grow before it runs while little is live: fewer collections on a busy server, for at most this much memory; 0: Go's default behaviour (env REGCACHE_HEAP_FLOOR; default 32MiB; GOGC in the environment wins)")
	fs.Int("max-upstream-fetches", 0, fmt.Sprintf("cap on blobs fetched from upstreams at once; more fills wait for a slot (env REGCACHE_MAX_UPSTREAM_FETCHES; default %d; -1: none)", cache.DefaultMaxFills))
	fs.String("max-upload-size", "", "cap on one blob pushed into a local repository, e.g. 20GiB (env REGCACHE_MAX_UPLOAD_SIZE; default: none)")
	fs.Int("max-conns", 0, "cap on open client connections (env REGCACHE_MAX_CONNS; default a third of the open-files limit; -1: none)")
	fs.Int("max-conns-per-address", 0, fmt.Sprintf("cap on open connections from one IP address (env REGCACHE_MAX_CONNS_PER_ADDRESS; default %d; -1: none; raise it behind a load balancer)", registry.DefaultMaxConnsPerAddress))
	authFlags(fs)
	lifecycleFlags(fs)
	storeFlags(fs)
	metaFlags(fs)
	clusterFlags(fs)
}

// loadConfig builds the Config from defaults, the config file, the
// environment and the flags that were set, then validates it.
func loadConfig(fs *pflag.FlagSet, getenv func(string) string) (Config, error) {
	cfg := defaultConfig()
	path, _ := fs.GetString("config")
	if path == "" {
		path = getenv("REGCACHE_CONFIG")
	}
	if path != "" {
		if err := readConfigFile(path, &cfg); err != nil {
			return cfg, err
		}
	}
	str := func(dst *string, flag, env string) {
		if v := getenv(env); v != "" {
			*dst = v
		}
		if fs.Changed(flag) {
			*dst, _ = fs.GetString(flag)
		}
	}
	str(&cfg.Listen, "listen", "REGCACHE_LISTEN")
	str(&cfg.DataDir, "data-dir", "REGCACHE_DATA_DIR")
	str(&cfg.AdminTokenFile, "admin-token-file", "REGCACHE_ADMIN_TOKEN_FILE")
	str(&cfg.Limits.MaxUploadSize, "max-upload-size", "REGCACHE_MAX_UPLOAD_SIZE")
	str(&cfg.HeapFloor, "heap-floor", "REGCACHE_HEAP_FLOOR")
	str(&cfg.TLSCert, "tls-cert", "REGCACHE_TLS_CERT")
	str(&cfg.TLSKey, "tls-key", "REGCACHE_TLS_KEY")
	str(&cfg.DefaultRegistry, "default-registry", "REGCACHE_DEFAULT_REGISTRY")
	cfg.DefaultRegistry = cache.CanonicalHost(cfg.DefaultRegistry)
	for _, d := range []struct {
		dst       *time.Duration
		flag, env string
	}{
		{&cfg.CredentialCacheTTL, "credential-cache-ttl", "REGCACHE_CREDENTIAL_CACHE_TTL"},
		{&cfg.CredentialHealthInterval, "credential-health-interval", "REGCACHE_CREDENTIAL_HEALTH_INTERVAL"},
		{&cfg.UploadIdleTimeout, "upload-idle-timeout", "REGCACHE_UPLOAD_IDLE_TIMEOUT"},
		{&cfg.GCInterval, "gc-interval", "REGCACHE_GC_INTERVAL"},
		{&cfg.GCGrace, "gc-grace", "REGCACHE_GC_GRACE"},
		{&cfg.FillIdleTimeout, "fill-idle-timeout", "REGCACHE_FILL_IDLE_TIMEOUT"},
		{&cfg.UpstreamHeaderTimeout, "upstream-header-timeout", "REGCACHE_UPSTREAM_HEADER_TIMEOUT"},
	} {
		if v := getenv(d.env); v != "" {
			dur, err := time.ParseDuration(v)
			if err != nil {
				return cfg, fmt.Errorf("%s=%q: want a duration such as 30s or 5m", d.env, v)
			}
			*d.dst = dur
		}
		if fs.Changed(d.flag) {
			*d.dst, _ = fs.GetDuration(d.flag)
		}
	}
	for _, n := range []struct {
		dst       *int
		flag, env string
	}{
		{&cfg.Limits.MaxConns, "max-conns", "REGCACHE_MAX_CONNS"},
		{&cfg.Limits.MaxConnsPerAddress, "max-conns-per-address", "REGCACHE_MAX_CONNS_PER_ADDRESS"},
		{&cfg.Limits.MaxUpstreamFetches, "max-upstream-fetches", "REGCACHE_MAX_UPSTREAM_FETCHES"},
	} {
		if v := getenv(n.env); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil {
				return cfg, fmt.Errorf("%s=%q: want a number of connections, e.g. 1000 (-1: no cap)", n.env, v)
			}
			*n.dst = i
		}
		if fs.Changed(n.flag) {
			*n.dst, _ = fs.GetInt(n.flag)
		}
	}
	list := func(dst *[]string, flag, env string, get func(string) ([]string, error)) {
		if v := getenv(env); v != "" {
			*dst = strings.Split(v, ",")
		}
		if fs.Changed(flag) {
			*dst, _ = get(flag)
		}
	}
	list(&cfg.LocalNamespaces, "local-namespace", "REGCACHE_LOCAL_NAMESPACES", fs.GetStringArray)
	list(&cfg.AllowDelete, "allow-delete", "REGCACHE_ALLOW_DELETE", fs.GetStringSlice)
	str(&cfg.LogLevel, "log-level", "REGCACHE_LOG_LEVEL")
	str(&cfg.LogFormat, "log-format", "REGCACHE_LOG_FORMAT")
	str(&cfg.Metrics.Listen, "metrics-listen", "REGCACHE_METRICS_LISTEN")
	if err := cfg.Metrics.load(fs, getenv); err != nil {
		return cfg, err
	}
	var pairs []string
	if v := getenv("REGCACHE_UPSTREAM"); v != "" {
		pairs = strings.Split(v, ",")
	}
	flagPairs, _ := fs.GetStringArray("upstream")
	for _, kv := range append(pairs, flagPairs...) {
		host, u, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || host == "" || u == "" {
			return cfg, fmt.Errorf("upstream %q: want <login-server>=<endpoint URL>, e.g. docker.io=http://127.0.0.1:5001", kv)
		}
		cfg.Upstreams[cache.CanonicalHost(host)] = u
	}
	if v := getenv("REGCACHE_ALLOW_UPSTREAM"); v != "" {
		for _, h := range strings.Split(v, ",") {
			cfg.AllowedUpstreams = append(cfg.AllowedUpstreams, strings.TrimSpace(h))
		}
	}
	allow, _ := fs.GetStringArray("allow-upstream")
	cfg.AllowedUpstreams = append(cfg.AllowedUpstreams, allow...)
	str(&cfg.Secrets.EnvPrefix, "secret-env-prefix", "REGCACHE_SECRETS_ENV_PREFIX")
	if v := getenv("REGCACHE_SECRETS_FILE_DIRS"); v != "" {
		cfg.Secrets.FileDirs = strings.Split(v, ",")
	}
	if fs.Changed("secret-file-dir") {
		cfg.Secrets.FileDirs, _ = fs.GetStringArray("secret-file-dir")
	}
	if err := loadAuthSettings(&cfg, fs, getenv); err != nil {
		return cfg, err
	}
	if err := cfg.LifecycleConfig.load(fs, getenv); err != nil {
		return cfg, err
	}
	if err := cfg.MetaConfig.load(fs, getenv); err != nil {
		return cfg, err
	}
	if err := cfg.StoreConfig.load(fs, getenv); err != nil {
		return cfg, err
	}
	cfg.Cluster.load(fs, getenv)
	return cfg, cfg.validate()
}

func readConfigFile(path string, cfg *Config) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(raw)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if err := checkKeys(&doc, reflect.TypeFor[Config](), ""); err != nil {
		return fmt.Errorf("config file %s, %w", path, err)
	}
	// KnownFields stays on as a backstop for anything checkKeys lets pass.
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	upstreams := map[string]string{}
	for host, u := range cfg.Upstreams {
		canon := cache.CanonicalHost(host)
		if _, dup := upstreams[canon]; dup {
			return fmt.Errorf("config file %s: upstreams: %s is listed twice (under aliases of %s)", path, host, canon)
		}
		upstreams[canon] = u
	}
	cfg.Upstreams = upstreams
	return nil
}

func (c Config) validate() error {
	if c.Listen == "" {
		return errors.New("listen: must not be empty, e.g. :5000 or 127.0.0.1:5000")
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen %q: want [host]:port, e.g. :5000 or 127.0.0.1:5000", c.Listen)
	} else if n, err := strconv.Atoi(port); err == nil && (n < 0 || n > 65535) {
		return fmt.Errorf("listen %q: the port must be between 0 and 65535", c.Listen)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("tlsCert %q, tlsKey %q: give both the certificate and its key (--tls-cert and --tls-key), or neither for plain HTTP", c.TLSCert, c.TLSKey)
	}
	if c.DataDir == "" {
		return errors.New("dataDir: must not be empty, e.g. ./regcache-data or /var/lib/regcache")
	}
	if c.DefaultRegistry != "" && !cache.ValidHost(c.DefaultRegistry) {
		return fmt.Errorf("defaultRegistry %q: want a login server such as docker.io", c.DefaultRegistry)
	}
	if err := c.validateCredentials(); err != nil {
		return err
	}
	if c.FillIdleTimeout < 0 {
		return fmt.Errorf("fillIdleTimeout %v: must be positive, e.g. 2m (0 means the default, 2m)", c.FillIdleTimeout)
	}
	if c.UpstreamHeaderTimeout < 0 {
		return fmt.Errorf("upstreamHeaderTimeout %v: must be positive, e.g. 30s (0 means the default, 30s)", c.UpstreamHeaderTimeout)
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if _, err := parseSize("limits.maxUploadSize", c.Limits.MaxUploadSize); err != nil {
		return err
	}
	if _, err := parseSize("heapFloor", c.HeapFloor); err != nil {
		return err
	}
	if err := c.validateAuth(); err != nil {
		return err
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("logFormat %q: want text or json", c.LogFormat)
	}
	if err := c.Metrics.validate(c.Listen); err != nil {
		return err
	}
	if _, err := cache.NewEndpoints(c.Upstreams, c.AllowedUpstreams...); err != nil {
		return err
	}
	if _, err := cache.NewRuleSet(c.Rules); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	if err := c.LifecycleConfig.validate(); err != nil {
		return err
	}
	if err := c.MetaConfig.validate(); err != nil {
		return err
	}
	if err := c.StoreConfig.validate(); err != nil {
		return err
	}
	if err := c.Cluster.validate(); err != nil {
		return err
	}
	if _, pct, _ := parseMaxSize(c.MaxSize); pct > 0 && c.Store == "s3" {
		return fmt.Errorf("maxSize %q: a percentage of the data directory's filesystem says nothing of a bucket's room; with store s3 give a size such as 500GiB", c.MaxSize)
	}
	return c.validateLocal()
}

// validateLocal checks the settings of local repositories.
func (c Config) validateLocal() error {
	if _, err := cache.ParseLocalNamespaces(c.LocalNamespaces); err != nil {
		return err
	}
	if _, err := c.deletes(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"uploadIdleTimeout", c.UploadIdleTimeout}, {"gcGrace", c.GCGrace}} {
		if d.v < 0 {
			return fmt.Errorf("%s %v: must be positive, e.g. 1h or 30m (0 means the default, 1h)", d.name, d.v)
		}
	}
	return nil
}

// deletes turns AllowDelete into the kinds allowed.
func (c Config) deletes() (local.Deletes, error) {
	if len(c.AllowDelete) == 0 {
		return local.AllDeletes, nil
	}
	var d local.Deletes
	for _, k := range c.AllowDelete {
		switch strings.TrimSpace(k) {
		case "manifests":
			d.Manifests = true
		case "tags":
			d.Tags = true
		case "blobs":
			d.Blobs = true
		case "none", "":
		default:
			return d, fmt.Errorf("allowDelete %q: want manifests, tags, blobs or none", k)
		}
	}
	return d, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("logLevel %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// newLogger returns the logger of serve: every line logged with a
// request's context carries its ID, and access lines take accesslog's
// fast path.
func newLogger(c Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	f := accesslog.Text
	if c.LogFormat == "json" {
		f = accesslog.JSON
	}
	return slog.New(accesslog.NewHandler(w, f, level))
}

// validateCredentials checks the credential settings: durations, the Vault
// section, and that each declared set parses (the references, not whether
// they resolve).
func (c Config) validateCredentials() error {
	if c.CredentialCacheTTL < 0 {
		return fmt.Errorf("credentialCacheTTL %v: must be positive, e.g. 5m (0 means the default, 5m)", c.CredentialCacheTTL)
	}
	if c.CredentialHealthInterval < 0 {
		return fmt.Errorf("credentialHealthInterval %v: must be positive, e.g. 1m (0 means the default, 1m)", c.CredentialHealthInterval)
	}
	if err := c.Vault.Validate(); err != nil {
		return err
	}
	endpoints, err := cache.NewEndpoints(c.Upstreams, c.AllowedUpstreams...)
	if err != nil {
		return err
	}
	if err := credentials.ValidateSets(c.CredentialSets, c.Secrets, endpoints); err != nil {
		return fmt.Errorf("credentialSets: %w", err)
	}
	return nil
}

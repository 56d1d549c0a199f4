package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/regcache/regcache/archive"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/eviction"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/warm"
)

// LifecycleConfig are the settings that let regcache run unattended or
// without internet: offline mode, the store's bounds, and how long an
// upstream's "no such manifest" is remembered. Their keys sit at the top
// level of the config file.
type LifecycleConfig struct {
	// Offline makes regcache contact no upstream: it serves cached and
	// imported content, and answers anything else at once saying it is
	// offline (--offline, REGCACHE_OFFLINE=true).
	Offline bool `yaml:"offline"`
	// MaxSize bounds the store: a size such as 50GiB, or a percentage of
	// the data directory's filesystem such as 80% (--max-size,
	// REGCACHE_MAX_SIZE). Over it, the least recently used images of
	// cached repositories are evicted. Default: none.
	MaxSize string `yaml:"maxSize"`
	// EvictLowWater is how far a run evicts, as a percentage of MaxSize
	// (--evict-low-water, REGCACHE_EVICT_LOW_WATER; default 90%).
	EvictLowWater string `yaml:"evictLowWater"`
	// EvictUnusedAfter evicts images of cached repositories nobody pulled
	// for this long, e.g. 720h (--evict-unused-after,
	// REGCACHE_EVICT_UNUSED_AFTER; default: never).
	EvictUnusedAfter time.Duration `yaml:"evictUnusedAfter"`
	// NotFoundTTL is how long an upstream's "no such manifest" is
	// remembered (--not-found-ttl, REGCACHE_NOT_FOUND_TTL; 0: the default,
	// 1m; negative: not remembered).
	NotFoundTTL time.Duration `yaml:"notFoundTTL"`
}

// lifecycleFlags registers the flags of LifecycleConfig.
func lifecycleFlags(fs *pflag.FlagSet) {
	fs.Bool("offline", false, "contact no upstream: serve cached and imported content, answer anything else at once saying the registry is offline (env REGCACHE_OFFLINE)")
	fs.String("max-size", "", "bound on the store, e.g. 50GiB or 80% (of the data directory's filesystem): over it the least recently used cached images are evicted (env REGCACHE_MAX_SIZE; default: none)")
	fs.String("evict-low-water", "", "how far a run over --max-size evicts, in percent of it (env REGCACHE_EVICT_LOW_WATER; default 90%)")
	fs.Duration("evict-unused-after", 0, "evict cached images nobody pulled for this long, e.g. 720h (env REGCACHE_EVICT_UNUSED_AFTER; default: never)")
	fs.Duration("not-found-ttl", 0, "how long an upstream's \"no such manifest\" is remembered (env REGCACHE_NOT_FOUND_TTL; default 1m; negative: not remembered)")
}

// load reads the flags and environment variables of LifecycleConfig over
// what the file set.
func (c *LifecycleConfig) load(fs *pflag.FlagSet, getenv func(string) string) error {
	if v := getenv("REGCACHE_OFFLINE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("REGCACHE_OFFLINE=%q: want true or false", v)
		}
		c.Offline = b
	}
	if fs.Changed("offline") {
		c.Offline, _ = fs.GetBool("offline")
	}
	for _, s := range []struct {
		dst       *string
		flag, env string
	}{{&c.MaxSize, "max-size", "REGCACHE_MAX_SIZE"}, {&c.EvictLowWater, "evict-low-water", "REGCACHE_EVICT_LOW_WATER"}} {
		if v := getenv(s.env); v != "" {
			*s.dst = v
		}
		if fs.Changed(s.flag) {
			*s.dst, _ = fs.GetString(s.flag)
		}
	}
	for _, d := range []struct {
		dst       *time.Duration
		flag, env string
	}{{&c.EvictUnusedAfter, "evict-unused-after", "REGCACHE_EVICT_UNUSED_AFTER"}, {&c.NotFoundTTL, "not-found-ttl", "REGCACHE_NOT_FOUND_TTL"}} {
		if v := getenv(d.env); v != "" {
			dur, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%s=%q: want a duration such as 720h or 1m", d.env, v)
			}
			*d.dst = dur
		}
		if fs.Changed(d.flag) {
			*d.dst, _ = fs.GetDuration(d.flag)
		}
	}
	return nil
}

// validate checks the settings (a percentage is resolved against the
// filesystem only at start, in bounds).
func (c LifecycleConfig) validate() error {
	if _, _, err := parseMaxSize(c.MaxSize); err != nil {
		return err
	}
	if _, err := parsePercent("evictLowWater", c.EvictLowWater); err != nil {
		return err
	}
	if c.EvictUnusedAfter < 0 {
		return fmt.Errorf("evictUnusedAfter %v: must be positive, e.g. 720h (0: never)", c.EvictUnusedAfter)
	}
	return nil
}

// parseMaxSize reads maxSize: bytes, or a percentage of the filesystem
// (pct > 0).
func parseMaxSize(s string) (bytes int64, pct float64, err error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "%") {
		p, err := parsePercent("maxSize", s)
		return 0, p, err
	}
	n, err := parseSize("maxSize", s)
	if err != nil {
		return 0, 0, fmt.Errorf("%w, or a percentage of the data directory's filesystem such as 80%%", err)
	}
	return n, 0, nil
}

// parsePercent reads "90%" or "90" as a fraction in (0, 1] ("" is 0).
func parsePercent(field, s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || f <= 0 || f > 100 {
		return 0, fmt.Errorf("%s %q: want a percentage above 0 and at most 100, e.g. 90%%", field, s)
	}
	return f / 100, nil
}

// bounds resolves the configured bounds of the store in dir.
func (c LifecycleConfig) bounds(dir string) (eviction.Options, error) {
	size, pct, err := parseMaxSize(c.MaxSize)
	if err != nil {
		return eviction.Options{}, err
	}
	if pct > 0 {
		fsSize, ok := storage.FilesystemSize(dir)
		if !ok {
			return eviction.Options{}, fmt.Errorf("maxSize %s: the size of the filesystem holding %s cannot be read; give a size such as 50GiB", c.MaxSize, dir)
		}
		size = int64(float64(fsSize) * pct)
	}
	low, _ := parsePercent("evictLowWater", c.EvictLowWater)
	return eviction.Options{MaxSize: size, LowWater: low, UnusedAfter: c.EvictUnusedAfter}, nil
}

// newLifecycle wires eviction (started in the background until stop),
// warm, export and import for the registry.
func newLifecycle(ctx context.Context, cfg Config, puller *cache.Puller, rules *cache.Store, blobs *storage.Blobs, meta metaStore, repos *localRepos, log *slog.Logger) (registry.Lifecycle, *eviction.Evictor, func(), error) {
	opts, err := cfg.bounds(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		return registry.Lifecycle{}, nil, nil, err
	}
	if sm, ok := meta.(sharedMeta); ok {
		// Replicas share the store: one evicts at a time, counting it all.
		opts.Lock = func(ctx context.Context) (func(), bool, error) { return sm.TryLock(ctx, "eviction") }
	}
	ev, err := eviction.New(blobs, meta, rules, repos.Repos, puller, log, opts)
	if err != nil {
		return registry.Lifecycle{}, nil, nil, err
	}
	stop := func() {}
	if ev.Enabled() {
		stop = background(ctx, ev.Run)
		log.Info("eviction", "maxSize", opts.MaxSize, "lowWaterBytes", ev.LowWaterBytes(), "unusedAfter", opts.UnusedAfter)
	}
	if cfg.Offline {
		log.Warn("offline: regcache contacts no upstream; it serves cached and imported content, and answers anything else saying it is offline")
	}
	return registry.Lifecycle{
		Warm:   warm.New(puller, log),
		Export: archive.NewExporter(puller, log),
		Import: archive.NewImporter(blobs, meta, repos.Repos, rules, log),
		Inventory: func(ctx context.Context, w io.Writer) (int, error) {
			return archive.WriteInventory(ctx, meta, blobs, w)
		},
		Refresh:   puller,
		Evict:     ev,
		Upstreams: puller,
		Offline:   cfg.Offline,
	}, ev, stop, nil
}

// rateLimits reports the upstreams' announced pull limits to the status
// summary.
type rateLimits struct{ ups *cache.Upstreams }

func (r rateLimits) RateLimits() []status.RateLimit {
	var out []status.RateLimit
	for _, l := range r.ups.RateLimits() {
		out = append(out, status.RateLimit{Upstream: l.Host, CredentialSet: l.CredentialSet,
			Remaining: l.Remaining, Limit: l.Limit, ObservedAt: l.ObservedAt})
	}
	return out
}

package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

// defaultGCInterval is the period of garbage collection when none is set.
const defaultGCInterval = time.Hour

// localRepos are the local repositories with their background loops
// (expiring idle upload sessions, garbage collection).
type localRepos struct {
	*local.Repos
	sessions *uploads.Sessions
	stop     func()
}

// newLocalRepos wires local repositories and starts their loops; stop
// ends them (before the metadata database closes).
// Upload sessions are recorded in sessionRecords, the replica's own
// database even when meta is shared: uploads.New drops the sessions whose
// partial bytes it cannot find, and those of another replica are never
// here.
func newLocalRepos(ctx context.Context, cfg Config, blobs *storage.Blobs, meta metaStore, sessionRecords uploads.Records, rules *cache.Store, log *slog.Logger) (*localRepos, error) {
	maxUpload, err := parseSize("limits.maxUploadSize", cfg.Limits.MaxUploadSize)
	if err != nil {
		return nil, err
	}
	sessions, err := uploads.New(ctx, blobs, sessionRecords, uploads.Options{IdleTimeout: cfg.UploadIdleTimeout, MaxSize: maxUpload, IDSuffix: cfg.Cluster.uploadIDSuffix()}, log)
	if err != nil {
		return nil, err
	}
	deletes, err := cfg.deletes()
	if err != nil {
		return nil, err
	}
	repos := local.New(blobs, meta, sessions, rules, log, local.Options{Deletes: &deletes, Grace: cfg.GCGrace})
	// Idle sessions are looked for a few times per timeout, at most every
	// five minutes.
	every := min(sessions.IdleTimeout()/4, 5*time.Minute)
	stops := []func(){background(ctx, func(ctx context.Context) { sessions.Run(ctx, every) })}
	interval := cfg.GCInterval
	if interval == 0 {
		interval = defaultGCInterval
	}
	if interval > 0 {
		stops = append(stops, background(ctx, func(ctx context.Context) { repos.RunGC(ctx, interval) }))
	}
	log.Info("local repositories", "uploadIdleTimeout", sessions.IdleTimeout(), "allowDelete", deletes,
		"gcInterval", interval, "gcGrace", repos.Grace())
	return &localRepos{Repos: repos, sessions: sessions, stop: func() {
		for _, stop := range stops {
			stop()
		}
	}}, nil
}

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/heapfloor"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
	"github.com/regcache/regcache/storage"
)

// serve runs the registry until ctx is cancelled. The configuration was
// validated and the listener is bound before anything is written, so a
// mistyped address or a taken port leaves nothing behind; the admin token
// and the blob store are created only once the rules have loaded.
func serve(ctx context.Context, cfg Config, getenv func(string) string, log *slog.Logger) error {
	authFiles, err := readClientAuth(cfg, log) // a bad htpasswd file stops the start before anything is created
	if err != nil {
		return err
	}
	openFiles := raiseOpenFilesLimit(log)
	floor := int64(heapfloor.Default)
	if cfg.HeapFloor != "" {
		floor, _ = parseSize("heapFloor", cfg.HeapFloor) // validated
	}
	defer heapfloor.Start(floor, log).Stop()
	limits := cfg.Limits.Limits.WithDefaults(openFiles)
	var certs *registry.CertReloader
	if cfg.TLSCert != "" {
		c, err := registry.NewCertReloader(cfg.TLSCert, cfg.TLSKey, log)
		if err != nil {
			return err
		}
		certs = c
	}
	ln, err := listen(cfg.Listen, limits, log)
	if err != nil {
		return err
	}
	defer ln.Close() // closed by Shutdown once serving; this is for a failed start
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	metas, err := openMeta(ctx, cfg, getenv, log)
	if err != nil {
		return err
	}
	defer metas.close()
	meta := metas.store
	endpoints, err := cache.NewEndpoints(cfg.Upstreams, cfg.AllowedUpstreams...)
	if err != nil {
		return err
	}
	// Credential sets come first: rules (also those of the config file)
	// refer to them. Deleting a set asks the rules whether they use it.
	var rules *cache.Store
	// One view of the upstreams for every request to them: offline mode,
	// waits after 429s, the limits they announce.
	upstreams := cache.NewUpstreams(cache.UpstreamsOptions{Offline: cfg.Offline})
	credTransport := cache.DefaultTransport()
	defer credTransport.CloseIdleConnections()
	creds, err := newCredentials(ctx, cfg, meta, endpoints, upstreams.Transport(credTransport), func(set string) []string { return rulesUsing(rules, set) }, log)
	if err != nil {
		return err
	}
	// Last, once its background loop has stopped: ends Vault logins and
	// token renewal and closes idle connections.
	defer creds.Close()
	rules, err = cache.NewStore(ctx, meta, creds, cfg.Rules, log, cache.AllowedUpstreams(endpoints))
	if err != nil {
		return err
	}
	token, tokenPath, err := adminToken(cfg)
	if err != nil {
		return err
	}
	blobs, err := openBlobs(ctx, cfg, getenv, log)
	if err != nil {
		return err
	}
	localNS, err := cache.ParseLocalNamespaces(cfg.LocalNamespaces)
	if err != nil {
		return err
	}
	shadowed, err := rules.SetLocalNamespaces(localNS)
	if err != nil {
		return err
	}
	for _, r := range shadowed {
		log.Warn("cache rule targets a local namespace: it never matches names there", "rule", r.Name, "target", r.Target, "localNamespaces", localNS)
	}
	// Health checks and Vault token renewal run until the server stopped.
	defer background(ctx, creds.Run)()
	if sm, ok := meta.(sharedMeta); ok {
		// Rules and credential sets changed through any replica's admin
		// API are in force here as soon as the watch reports them.
		defer background(ctx, func(ctx context.Context) { watchRecords(ctx, sm, cache.RecordKind, rules.Reload, log) })()
		defer background(ctx, func(ctx context.Context) { watchRecords(ctx, sm, credentials.RecordKind, creds.Reload, log) })()
	}
	upstream := cache.DefaultTransport()
	if cfg.UpstreamHeaderTimeout > 0 {
		upstream.ResponseHeaderTimeout = cfg.UpstreamHeaderTimeout
	}
	version := newVersionInfo(readBuildInfo()).Version
	obs, err := newObservability(cfg, version)
	if err != nil {
		return err
	}
	// Local repositories first: their collection guard protects what the
	// puller's fills link.
	repos, err := newLocalRepos(ctx, cfg, blobs, meta, metas.sessions, rules, log)
	if err != nil {
		return err
	}
	defer repos.stop()
	// The peer channel of a cluster of replicas (off without --peer-listen).
	peers, err := openCluster(cfg.Cluster, log)
	if err != nil {
		return err
	}
	defer peers.close()
	puller := cache.NewPuller(rules, endpoints, creds, blobs, meta, log, cache.Options{DefaultRegistry: cfg.DefaultRegistry,
		IdleTimeout: cfg.FillIdleTimeout, Transport: upstream, MaxFills: cfg.Limits.MaxUpstreamFetches, Observer: obs.cacheObserver(),
		Upstreams: upstreams, Guard: repos.Repos, NotFoundTTL: cfg.NotFoundTTL, Peers: peers.peers()})
	defer puller.Close() // before meta closes: fills link what they commit
	// Access times are flushed periodically and once more after the last
	// request finished.
	defer background(ctx, func(ctx context.Context) { puller.RunAccessFlusher(ctx, 30*time.Second) })()
	lifecycle, evictor, stopLifecycle, err := newLifecycle(ctx, cfg, puller, rules, blobs, meta, repos, log)
	if err != nil {
		return err
	}
	defer stopLifecycle()
	clientAuth, err := authFiles.authority(cfg, log)
	if err != nil {
		return err
	}
	trusted, _ := parseTrustedProxies(cfg.TrustedProxies) // validated with the config
	rc := registry.Config{Backend: puller, Rules: rules, AdminToken: token, Log: log, CredentialSets: creds,
		Local: repos.Repos, GC: repos.Repos, Limits: limits, ClientAuth: clientAuth, AuthRealm: cfg.Auth.Realm, TrustedProxies: trusted,
		Lifecycle: lifecycle, Forward: peers.forwarder(),
	}
	if metas.checker != nil {
		// POST /admin/v1/fsck checks the live store; it quarantines next to it.
		rc.Fsck = storage.NewChecker(blobs, metas.checker, filepath.Join(cfg.DataDir, "quarantine"))
	}
	src := status.Sources{Rules: rules, Fills: puller, CredentialSets: creds, Store: blobs, Uploads: repos.sessions,
		Evictions: evictor, RateLimits: rateLimits{upstreams}, Throttling: upstreams, Offline: cfg.Offline}
	if err := obs.wire(cfg, src, version, time.Now(), &rc); err != nil {
		return err
	}
	// The store's usage is counted once, in the background, then followed.
	defer background(ctx, func(ctx context.Context) {
		if err := blobs.CountUsage(ctx); err != nil && ctx.Err() == nil {
			log.Warn("counting the store's blobs failed: its usage stays unknown", "err", err)
		}
	})()
	defer background(ctx, obs.run)()
	stopMetrics, err := obs.serveMetrics(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	handler, err := registry.New(rc)
	if err != nil {
		return err
	}
	if peers != nil {
		fwd, err := registry.NewPeerUploads(rc)
		if err != nil {
			return err
		}
		defer peers.serve(ctx, puller, peerUploads{repos.sessions, fwd})() // stops before the puller closes
	}
	srv := registry.NewServer(handler, limits, log)
	scheme := "http"
	if certs != nil {
		srv.TLSConfig, scheme = certs.TLSConfig(), "https"
	} else if !loopback(ln.Addr()) {
		log.Warn("serving plain HTTP beyond this host: pulls, pushes, logins and the admin token travel in clear; "+
			"give --tls-cert and --tls-key, put a TLS-terminating proxy in front, or listen on 127.0.0.1 only", "addr", ln.Addr().String())
	}
	log.Info("regcache serving", "addr", ln.Addr().String(), "scheme", scheme, "dataDir", cfg.DataDir, "adminTokenFile", tokenPath,
		"rules", len(rules.List()), "upstreams", endpoints.String(), "defaultRegistry", cfg.DefaultRegistry, "localNamespaces", localNS,
		"openFiles", openFiles, "maxConns", limits.MaxConns, "maxConnsPerAddress", limits.MaxConnsPerAddress, "metrics", obs.where(cfg))
	errc := make(chan error, 1)
	go func() {
		if certs != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// listen binds the TCP address of the registry, with the connection caps
// of limits.
func listen(addr string, limits registry.Limits, log *slog.Logger) (net.Listener, error) {
	ln, err := registry.Listen(addr, limits, log)
	var opErr *net.OpError
	switch {
	case err == nil:
		return ln, nil
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("listen %q: address already in use (by another regcache or registry?); stop that server or choose another --listen address", addr)
	case errors.As(err, &opErr):
		return nil, fmt.Errorf("listen %q: %w", addr, opErr.Err)
	}
	return nil, err
}

// loopback reports whether addr is a loopback address: a server bound to
// all interfaces (0.0.0.0, ::) or another address is reachable from
// other hosts.
func loopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// background runs loop in a goroutine with a context that outlives ctx's
// cancellation (so the loop can finish what shutdown leaves); the returned
// stop cancels it and waits for loop to return.
func background(ctx context.Context, loop func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		loop(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// adminToken reads the configured token file or, when none is configured,
// <data-dir>/admin.token, generating it (mode 0600) on first start.
func adminToken(cfg Config) (token, path string, err error) {
	if cfg.AdminTokenFile != "" {
		raw, err := os.ReadFile(cfg.AdminTokenFile)
		if err != nil {
			return "", "", fmt.Errorf("admin token file: %w", err)
		}
		t := strings.TrimSpace(string(raw))
		if len(t) < 16 {
			return "", "", fmt.Errorf("admin token file %s: the token must be at least 16 characters", cfg.AdminTokenFile)
		}
		return t, cfg.AdminTokenFile, nil
	}
	path = filepath.Join(cfg.DataDir, "admin.token")
	raw, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(raw)) != "" {
		return strings.TrimSpace(string(raw)), path, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("admin token: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("write admin token: %w", err)
	}
	return token, path, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/metrics"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
)

// metricsConfig is the metrics: section.
type metricsConfig struct {
	// Enabled counts requests, hits, misses and upstream traffic and
	// serves them on /metrics (--metrics, REGCACHE_METRICS; default
	// true). Off, the status summary has no counts or charts.
	Enabled *bool `yaml:"enabled"`
	// Listen serves /metrics on this address instead of the main listener
	// (--metrics-listen, REGCACHE_METRICS_LISTEN), e.g. 127.0.0.1:9091
	// to keep it off the port clients reach.
	Listen string `yaml:"listen"`
}

// on reports whether metrics are enabled (the default).
func (m metricsConfig) on() bool { return m.Enabled == nil || *m.Enabled }

// load applies REGCACHE_METRICS and --metrics.
func (m *metricsConfig) load(fs *pflag.FlagSet, getenv func(string) string) error {
	if v := getenv("REGCACHE_METRICS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("REGCACHE_METRICS=%q: want true or false", v)
		}
		m.Enabled = &b
	}
	if fs.Changed("metrics") {
		b, _ := fs.GetBool("metrics")
		m.Enabled = &b
	}
	return nil
}

func (m metricsConfig) validate(listen string) error {
	if m.Listen == "" {
		return nil
	}
	if !m.on() {
		return fmt.Errorf("metrics.listen %q: metrics are turned off (metrics.enabled: false, --metrics=false); turn them on or drop the address", m.Listen)
	}
	if _, port, err := net.SplitHostPort(m.Listen); err != nil || port == "" {
		return fmt.Errorf("metrics.listen %q: want [host]:port, e.g. 127.0.0.1:9091", m.Listen)
	}
	if m.Listen == listen {
		return fmt.Errorf("metrics.listen %q: the registry listens there already; drop metrics.listen to serve /metrics on it, or choose another address", m.Listen)
	}
	return nil
}

// observability is what serve wires for metrics and the status summary.
type observability struct {
	// metrics is nil when metrics are off.
	metrics  *metrics.Metrics
	registry *prometheus.Registry
}

// newObservability creates the metrics (when on), before the puller and
// the handler that report to them.
func newObservability(cfg Config, version string) (*observability, error) {
	o := &observability{}
	if !cfg.Metrics.on() {
		return o, nil
	}
	o.registry = prometheus.NewRegistry()
	m, err := metrics.New(o.registry, metrics.Options{Version: version})
	if err != nil {
		return nil, err
	}
	o.metrics = m
	return o, nil
}

// where says where /metrics is served, for the start-up log line.
func (o *observability) where(cfg Config) string {
	switch {
	case o.metrics == nil:
		return "off"
	case cfg.Metrics.Listen != "":
		return cfg.Metrics.Listen + "/metrics"
	}
	return "/metrics"
}

// cacheObserver is the puller's observer, nil without metrics.
func (o *observability) cacheObserver() cache.Observer {
	if o.metrics == nil {
		return nil
	}
	return o.metrics
}

// run keeps the minute-by-minute history until ctx ends.
func (o *observability) run(ctx context.Context) {
	if o.metrics != nil {
		o.metrics.Run(ctx)
	}
}

// wire adds the scrape-time sources and sets the handler's observer,
// status reporter and /metrics handler (on the main listener unless
// metrics.listen moves it).
func (o *observability) wire(cfg Config, src status.Sources, version string, started time.Time, rc *registry.Config) error {
	if o.metrics != nil {
		if err := o.metrics.Watch(src); err != nil {
			return err
		}
		src.Activity = o.metrics
		rc.Observer = o.metrics
		if cfg.Metrics.Listen == "" {
			rc.Metrics = metrics.Handler(o.registry)
		}
	}
	rc.Status = status.NewReporter(src, version, started, nil)
	return nil
}

// serveMetrics serves /metrics on metrics.listen until ctx ends; the
// returned stop shuts it down. Without the setting it does nothing.
func (o *observability) serveMetrics(ctx context.Context, cfg Config, log *slog.Logger) (stop func(), err error) {
	if o.metrics == nil || cfg.Metrics.Listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %q: %w", cfg.Metrics.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(o.registry))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	log.Info("serving /metrics", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
	}, nil
}

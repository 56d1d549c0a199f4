// Command distproxy runs distribution/v3's registry in proxy (pull-through
// cache) mode: the peer the benchmark compares regcache with, configured as
// the project's own container image configures it (filesystem storage, an
// in-memory blob descriptor cache, access log on, log level info), with
// proxy.remoteurl pointing at the benchmark's upstream.
//
//	distproxy --addr 127.0.0.1:5002 --root /tmp/x --remote http://127.0.0.1:5001
//
// It exits on SIGTERM or SIGINT. Tracing stays as distribution sets it up;
// the benchmark sets OTEL_TRACES_EXPORTER=none so that no OTLP exporter tries
// to reach a collector that is not there.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry"
	// distribution selects storage drivers by name from a registry filled
	// by init functions: its own cmd/registry wires them the same way.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/regcache/regcache/e2e/bench/probe"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "distproxy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("distproxy", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:5000", "listen address")
	root := fs.String("root", "", "filesystem storage root directory (required)")
	remote := fs.String("remote", "", "proxy.remoteurl: the upstream registry URL (required)")
	level := fs.String("log-level", "info", "log level: error, warn, info or debug")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *root == "" || *remote == "" {
		return fmt.Errorf("--root and --remote are required")
	}
	if err := probe.Start(os.Getenv(probe.EnvAddr)); err != nil {
		return err
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	cfg := &configuration.Configuration{
		Version: configuration.MajorMinorVersion(0, 1),
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": *root},
			"cache":      configuration.Parameters{"blobdescriptor": "inmemory"},
		},
	}
	cfg.Log.Level = configuration.Loglevel(*level)
	cfg.HTTP.Addr = *addr
	cfg.HTTP.Secret = hex.EncodeToString(secret)
	cfg.Proxy.RemoteURL = *remote
	reg, err := registry.NewRegistry(ctx, cfg)
	if err != nil {
		return err
	}
	return reg.ListenAndServe()
}

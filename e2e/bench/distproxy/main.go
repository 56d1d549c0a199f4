// Command distproxy runs distribution/v3's registry in proxy (pull-through
// cache) mode: the peer the benchmark compares regcache with, configured as
// the project's own container image configures it (filesystem storage, an
// in-memory blob descriptor cache, access log on, log level info), with
// proxy.remoteurl pointing at the benchmark's upstream.
//
//	distproxy --addr 127.0.0.1:5002 --root /tmp/x --remote http://127.0.0.1:5001
//
// With --s3-bucket instead of --root it stores in an S3-compatible bucket
// (distribution's s3-aws driver, path-style, the credentials from
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), as replicas of it behind a
// load balancer share their storage. Blob GETs are answered with the bytes,
// not with distribution's default redirect to the bucket (--s3-redirect),
// so that it serves what regcache serves by default:
//
//	distproxy --addr 127.0.0.1:5002 --remote http://127.0.0.1:5001 \
//	    --s3-endpoint http://127.0.0.1:8333 --s3-bucket dist --s3-prefix /ha
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
	"strings"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry"
	// distribution selects storage drivers by name from a registry filled
	// by init functions: its own cmd/registry wires them the same way.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"

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
	root := fs.String("root", "", "filesystem storage root directory (this or --s3-bucket)")
	remote := fs.String("remote", "", "proxy.remoteurl: the upstream registry URL (required)")
	level := fs.String("log-level", "info", "log level: error, warn, info or debug")
	s3Endpoint := fs.String("s3-endpoint", "", "S3 server URL of --s3-bucket, e.g. http://127.0.0.1:8333")
	s3Bucket := fs.String("s3-bucket", "", "store in this existing S3 bucket (s3-aws driver) instead of --root")
	s3Prefix := fs.String("s3-prefix", "", "rootdirectory of the s3-aws driver: key prefix inside --s3-bucket, e.g. /dist")
	s3Region := fs.String("s3-region", "us-east-1", "S3 signing region of --s3-bucket")
	s3Redirect := fs.Bool("s3-redirect", false, "answer blob GETs with a redirect to a presigned URL of the bucket (distribution's default on S3); "+
		"false: the proxy serves the bytes, as regcache does without --s3-redirect")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *remote == "" {
		return fmt.Errorf("--remote is required: the upstream registry URL, e.g. http://127.0.0.1:5001")
	}
	if (*root == "") == (*s3Bucket == "") {
		return fmt.Errorf("--root %q, --s3-bucket %q: give exactly one (filesystem or S3 storage)", *root, *s3Bucket)
	}
	if *s3Bucket != "" && *s3Endpoint == "" {
		return fmt.Errorf("--s3-bucket %s needs --s3-endpoint, the S3 server URL (e.g. http://127.0.0.1:8333)", *s3Bucket)
	}
	if err := probe.Start(os.Getenv(probe.EnvAddr)); err != nil {
		return err
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	storage := configuration.Storage{
		"filesystem": configuration.Parameters{"rootdirectory": *root},
		"cache":      configuration.Parameters{"blobdescriptor": "inmemory"},
	}
	if *s3Bucket != "" {
		delete(storage, "filesystem")
		// No accesskey/secretkey: the driver's default credential chain
		// reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, so that the
		// secret is not on the command line.
		storage["s3"] = configuration.Parameters{
			"regionendpoint": *s3Endpoint,
			"region":         *s3Region,
			"bucket":         *s3Bucket,
			"rootdirectory":  *s3Prefix,
			"forcepathstyle": true,
			"secure":         !strings.HasPrefix(*s3Endpoint, "http://"),
		}
		storage["redirect"] = configuration.Parameters{"disable": !*s3Redirect}
	}
	cfg := &configuration.Configuration{Version: configuration.MajorMinorVersion(0, 1), Storage: storage}
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

// Command static is the benchmark's physical limit: a plain net/http file
// server (http.FileServer, which serves *os.File bodies with sendfile) over a
// directory laid out like registry paths, e.g.
// <root>/v2/bench/app/blobs/sha256:<hex> and <root>/v2/bench/app/manifests/latest.
// Manifests (the files under a manifests directory when it starts) are
// answered from memory, with the headers a registry sends (Content-Type,
// Docker-Content-Digest, Etag, Cache-Control by digest, the API version):
// the least a Go net/http server does for a manifest request.
//
//	static --addr 127.0.0.1:5003 --root /tmp/static
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/regcache/regcache/e2e/bench/probe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "static:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("static", flag.ContinueOnError)
	addr := fset.String("addr", "127.0.0.1:5003", "listen address")
	root := fset.String("root", "", "directory to serve (required)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *root == "" {
		return errors.New("--root is required")
	}
	if err := probe.Start(os.Getenv(probe.EnvAddr)); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	h, err := newHandler(*root)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return srv.Close()
	}
}

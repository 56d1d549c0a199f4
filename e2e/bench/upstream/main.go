// Command upstream is the benchmark's upstream registry: go-containerregistry's
// registry (pkg/registry) with blobs kept as files under --dir (served with
// sendfile, so that the upstream is never the bottleneck), manifests in
// memory, and a counting layer in front that records requests and response
// body bytes per method and path.
//
//	upstream --addr 127.0.0.1:5001 --dir /tmp/blobs
//
// Blobs are files named <dir>/<algorithm>/<hex>; the benchmark writes them
// there directly, and pushes manifests over HTTP. The counters are read with
// GET /_bench/stats (JSON) and zeroed with POST /_bench/reset.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regcache/regcache/e2e/bench/probe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fset.String("addr", "127.0.0.1:5001", "listen address")
	dir := fset.String("dir", "", "blob directory (required)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	if err := probe.Start(os.Getenv(probe.EnvAddr)); err != nil {
		return err
	}
	quiet := log.New(io.Discard, "", 0)
	reg := registry.New(registry.Logger(quiet), registry.WithBlobHandler(diskBlobs{dir: *dir}))
	c := &counter{stats: map[string]*PathStats{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_bench/stats", c.serveStats)
	mux.HandleFunc("POST /_bench/reset", c.reset)
	mux.Handle("/", c.wrap(reg))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second, ErrorLog: quiet}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return srv.Close()
	}
}

// diskBlobs keeps blobs as files. Unlike go-containerregistry's own disk
// handler it does not rehash a blob on every Stat, which would make a 1 GiB
// GET cost seconds of upstream CPU.
type diskBlobs struct{ dir string }

func (d diskBlobs) path(h v1.Hash) string { return filepath.Join(d.dir, h.Algorithm, h.Hex) }

// Stat returns the blob's size.
func (d diskBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	fi, err := os.Stat(d.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, registry.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Get opens the blob; the *os.File lets net/http use sendfile.
func (d diskBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(d.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, registry.ErrNotFound
	}
	return f, err
}

// Put stores a pushed blob (go-containerregistry verifies it while reading).
func (d diskBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	if err := os.MkdirAll(filepath.Join(d.dir, h.Algorithm), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(d.dir, h.Algorithm), ".upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // a no-op after the rename
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), d.path(h))
}

// PathStats counts the requests for one "METHOD /path" and the response body
// bytes written for them.
type PathStats struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

// counter records PathStats for every request it wraps.
type counter struct {
	mu    sync.Mutex
	stats map[string]*PathStats
}

func (c *counter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r)
		key := r.Method + " " + r.URL.Path
		c.mu.Lock()
		s := c.stats[key]
		if s == nil {
			s = &PathStats{}
			c.stats[key] = s
		}
		s.Requests++
		s.Bytes += cw.n
		c.mu.Unlock()
	})
}

func (c *counter) serveStats(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(c.stats)
}

func (c *counter) reset(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	c.stats = map[string]*PathStats{}
	c.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// countingWriter counts body bytes. ReadFrom keeps net/http's sendfile path
// for *os.File bodies.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(w.ResponseWriter, r)
	}
	w.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

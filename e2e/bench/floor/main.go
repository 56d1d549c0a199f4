// Command floor is the benchmark's floor for a cold pull: the bare
// pipeline of a streaming, verifying pull-through cache, with none of the
// cache around it. For each GET it fetches the same path from the upstream;
// one goroutine reads the upstream socket into a 256 KiB buffer, writes
// every chunk to a temporary file and hashes it (sha256), while the
// client's goroutine sends what landed from that file with sendfile,
// holding the last byte back until the digest verified. That is regcache's
// design for a cold blob, so a cold pull through regcache cannot beat a
// pull through floor on the same machine: the difference between the two
// is what regcache's routing, metadata, coalescing and durability cost.
//
// There is no routing beyond GET /v2/ (readiness), no metadata, no
// coalescing of concurrent requests, no fsync and nothing kept: each
// response's temporary file is removed when the response ends, so every
// request is a cold one.
//
//	floor --addr 127.0.0.1:5004 --dir /tmp/floor --upstream http://127.0.0.1:5001
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/regcache/regcache/e2e/bench/probe"
)

// bufferSize is the upstream read buffer, as in regcache's fill.
const bufferSize = 256 << 10

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("floor", flag.ContinueOnError)
	addr := fset.String("addr", "127.0.0.1:5004", "listen address")
	dir := fset.String("dir", "", "directory for the temporary files (required)")
	upstream := fset.String("upstream", "", "upstream registry URL, e.g. http://127.0.0.1:5001 (required)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *upstream == "" {
		return errors.New("--dir and --upstream are required")
	}
	if err := probe.Start(os.Getenv(probe.EnvAddr)); err != nil {
		return err
	}
	f := &floor{
		upstream: strings.TrimSuffix(*upstream, "/"),
		dir:      *dir,
		client: &http.Client{Transport: &http.Transport{
			Proxy:               nil, // loopback only
			DisableCompression:  true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}},
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 30 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return srv.Close()
	}
}

type floor struct {
	upstream string
	dir      string
	client   *http.Client
}

func (f *floor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method != http.MethodGet:
		http.Error(w, "floor answers GET only", http.StatusMethodNotAllowed)
	case r.URL.Path == "/v2/" || r.URL.Path == "/v2":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	default:
		if err := f.pull(w, r); err != nil {
			// Headers (and maybe bytes) are out: cut the connection so
			// the client sees a short body, never a complete wrong one.
			panic(http.ErrAbortHandler)
		}
	}
}

// pull streams the upstream's answer to path through a temporary file.
func (f *floor) pull(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.upstream+r.URL.RequestURI(), nil)
	if err != nil {
		return err
	}
	if a := r.Header.Get("Accept"); a != "" {
		req.Header.Set("Accept", a)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength < 0 {
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	// The digest to verify: the reference when it is one, else what the
	// upstream says (a manifest by tag).
	want := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	if !strings.HasPrefix(want, "sha256:") {
		want = resp.Header.Get("Docker-Content-Digest")
	}

	tmp, err := os.CreateTemp(f.dir, "fill-*")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return nil
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	out, err := os.Open(tmp.Name())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return nil
	}
	defer out.Close()

	p := &pipe{size: resp.ContentLength, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go p.fill(resp.Body, tmp, want)
	// On an early return the upstream request is cancelled, which ends the
	// fill's read; the temporary file is removed only after the fill ended.
	defer func() {
		cancel()
		<-p.done
	}()

	h := w.Header()
	h.Set("Content-Type", resp.Header.Get("Content-Type"))
	h.Set("Content-Length", fmt.Sprint(p.size))
	if want != "" {
		h.Set("Docker-Content-Digest", want)
	}
	w.WriteHeader(http.StatusOK)
	return p.send(w, out)
}

// pipe is one response in flight: the fill goroutine publishes how many
// bytes landed in the file; the sender sends them.
type pipe struct {
	size     int64
	written  atomic.Int64
	verified atomic.Bool   // size and digest checked: the last byte may go
	wake     chan struct{} // a token after every chunk (capacity 1)
	done     chan struct{} // closed when the fill ended; err is then set
	err      error
}

// fill copies body into file, hashing as it goes, then verifies.
func (p *pipe) fill(body io.Reader, file *os.File, want string) {
	defer close(p.done)
	h := sha256.New()
	buf := make([]byte, bufferSize)
	var n int64
	for {
		k, err := body.Read(buf)
		if k > 0 {
			if _, werr := file.Write(buf[:k]); werr != nil {
				p.err = werr
				return
			}
			h.Write(buf[:k])
			n += int64(k)
			p.written.Store(n)
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.err = err
			return
		}
	}
	if n != p.size {
		p.err = fmt.Errorf("upstream sent %d bytes, announced %d", n, p.size)
		return
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); want != "" && got != want {
		p.err = fmt.Errorf("body hashes to %s, want %s", got, want)
		return
	}
	p.verified.Store(true)
}

// readable is how many bytes may be sent now: all once verified, else
// what landed less the last byte.
func (p *pipe) readable() int64 {
	if p.verified.Load() {
		return p.size
	}
	return min(p.written.Load(), p.size-1)
}

// send writes the body to w from file as it becomes readable; each stretch
// is an *os.File section, which net/http sends with sendfile.
func (p *pipe) send(w io.Writer, file *os.File) error {
	var sent int64
	for sent < p.size {
		avail := p.readable()
		if avail <= sent {
			select {
			case <-p.wake:
			case <-p.done:
				if p.err != nil {
					return p.err
				}
			}
			continue
		}
		n, err := io.Copy(w, &io.LimitedReader{R: file, N: avail - sent})
		sent += n
		if err != nil {
			return err
		}
	}
	return nil
}

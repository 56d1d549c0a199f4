package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// pullResult is what one client measured during one pull.
type pullResult struct {
	bytes        int64
	manifestTTFB time.Duration
	layerTTFB    time.Duration   // of the first layer
	latencies    []time.Duration // of every request, to the end of its body
	ttfbs        []time.Duration // of every request
	err          error
}

// newClient returns an HTTP client with its own connection pool, as a
// separate puller (a node, a CI job) would have.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only, whatever the environment says
		DisableCompression:  true,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
		ReadBufferSize:      64 << 10,
	}}
}

// pull reads the image the way a registry client does, with plain GETs:
// the manifest by tag, then the config blob, then every layer in order,
// each body read to the end (and, with verify, checked against its size and
// digest).
func pull(ctx context.Context, c *http.Client, base string, img *Image, verify bool) pullResult {
	r := pullResult{
		latencies: make([]time.Duration, 0, len(img.Layers)+2),
		ttfbs:     make([]time.Duration, 0, len(img.Layers)+2),
	}
	prefix := base + "/v2/" + img.Repo
	start := time.Now()
	n, ttfb, err := fetch(ctx, c, prefix+"/manifests/"+img.Tag, manifestAccept, Blob{img.Digest, int64(len(img.Manifest))}, verify)
	r.record(start, n, ttfb)
	r.manifestTTFB = ttfb
	if err != nil {
		r.err = fmt.Errorf("manifest: %w", err)
		return r
	}
	for i, b := range append([]Blob{img.Config}, img.Layers...) {
		start := time.Now()
		n, ttfb, err := fetch(ctx, c, prefix+"/blobs/"+b.Digest, "", b, verify)
		r.record(start, n, ttfb)
		if i == 1 {
			r.layerTTFB = ttfb
		}
		if err != nil {
			r.err = fmt.Errorf("blob %s: %w", b.Digest, err)
			return r
		}
	}
	return r
}

// record adds one request that started at start.
func (r *pullResult) record(start time.Time, n int64, ttfb time.Duration) {
	r.bytes += n
	r.latencies = append(r.latencies, time.Since(start))
	if ttfb > 0 {
		r.ttfbs = append(r.ttfbs, ttfb)
	}
}

// copyBuffers are the 256 KiB read buffers of fetch, shared by the
// clients (hundreds of them in the fanout scenario).
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// fetch GETs url and reads the whole body. ttfb is the time from sending the
// request to the first byte of the response.
func fetch(ctx context.Context, c *http.Client, url, accept string, want Blob, verify bool) (n int64, ttfb time.Duration, err error) {
	var start, first time.Time
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	start = time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if !first.IsZero() {
		ttfb = first.Sub(start)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return 0, ttfb, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	var sink io.Writer = onlyWriter{io.Discard}
	var h hash.Hash
	if verify {
		h = sha256.New()
		sink = h
	}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	n, err = io.CopyBuffer(sink, resp.Body, *buf)
	if err != nil {
		return n, ttfb, fmt.Errorf("GET %s: after %d bytes: %w", url, n, err)
	}
	if n != want.Size {
		return n, ttfb, fmt.Errorf("GET %s: %d bytes, want %d", url, n, want.Size)
	}
	if verify {
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.Digest {
			return n, ttfb, fmt.Errorf("GET %s: body hashes to %s", url, got)
		}
	}
	return n, ttfb, nil
}

// onlyWriter hides io.Discard's ReadFrom, so that io.CopyBuffer reads with
// our 256 KiB buffer instead of its small pooled one.
type onlyWriter struct{ io.Writer }

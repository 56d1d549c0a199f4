package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Request kinds, as the report names them.
const (
	kindManifestTag    = "manifest by tag"
	kindManifestDigest = "manifest by digest"
	kindBlob           = "blob"
	kindRange          = "blob Range"
	kindNewManifest    = "new image: manifest"
	kindNewBlob        = "new image: blob"
)

var kinds = []string{kindManifestTag, kindManifestDigest, kindBlob, kindRange, kindNewManifest, kindNewBlob}

// requestTimeout bounds one request of a real client; a request that
// needs longer is an error.
const requestTimeout = 2 * time.Minute

// maxErrorsKept is how many error messages the report prints.
const maxErrorsKept = 20

// recorder gathers the latencies, byte counts and errors of every request.
type recorder struct {
	mu     sync.Mutex
	lat    map[string][]time.Duration
	bytes  map[string]int64
	errs   map[string]int
	first  []string // the first maxErrorsKept error messages
	nerrs  int
	extras map[string]int // counted events (e.g. no new image ready)
}

func newRecorder() *recorder {
	return &recorder{lat: map[string][]time.Duration{}, bytes: map[string]int64{}, errs: map[string]int{}, extras: map[string]int{}}
}

func (r *recorder) ok(kind string, d time.Duration, n int64) {
	r.mu.Lock()
	r.lat[kind] = append(r.lat[kind], d)
	r.bytes[kind] += n
	r.mu.Unlock()
}

func (r *recorder) fail(kind string, err error) {
	r.mu.Lock()
	r.errs[kind]++
	r.nerrs++
	if len(r.first) < maxErrorsKept {
		r.first = append(r.first, fmt.Sprintf("%s: %v", kind, err))
	}
	r.mu.Unlock()
}

func (r *recorder) count(event string) {
	r.mu.Lock()
	r.extras[event]++
	r.mu.Unlock()
}

// kindStats are the figures of one request kind.
type kindStats struct {
	Kind     string  `json:"kind"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Maxms    float64 `json:"max_ms"`
	MB       float64 `json:"mb"`
}

func (r *recorder) stats() []kindStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []kindStats
	for _, k := range kinds {
		lat := append([]time.Duration(nil), r.lat[k]...)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		s := kindStats{Kind: k, Requests: len(lat), Errors: r.errs[k], MB: float64(r.bytes[k]) / 1e6}
		if len(lat) > 0 {
			s.P50ms, s.P99ms, s.Maxms = ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(lat[len(lat)-1])
		}
		out = append(out, s)
	}
	return out
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// workload is what the clients pull.
type workload struct {
	base       string // regcache's URL
	warm       []*image
	fresh      <-chan *image
	rangeRatio float64
	coldRatio  float64
	rec        *recorder
}

// newClient returns an HTTP client with its own connection pool, as a
// separate puller (a node, a CI job) has, dialing from 127.0.0.1.
func newClient() *http.Client {
	return &http.Client{Timeout: requestTimeout, Transport: &http.Transport{
		Proxy:               nil, // loopback only, whatever the environment says
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}).DialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// client pulls until ctx ends.
func (w *workload) client(ctx context.Context, seed uint64) {
	hc := newClient()
	defer hc.CloseIdleConnections()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for ctx.Err() == nil {
		if rng.Float64() < w.coldRatio {
			select {
			case img, ok := <-w.fresh:
				if ok {
					w.pull(ctx, hc, rng, img, kindNewManifest, kindNewBlob, false)
				}
				continue
			default:
				w.rec.count("no new image ready: pulled a warm one")
			}
		}
		w.pull(ctx, hc, rng, w.warm[rng.IntN(len(w.warm))], kindManifestTag, kindBlob, true)
	}
}

// pull reads img: its manifest (by tag or by digest) and every blob, some
// with a Range request when ranges. It stops at the first error.
func (w *workload) pull(ctx context.Context, hc *http.Client, rng *rand.Rand, img *image, manifestKind, blobKind string, ranges bool) {
	prefix := w.base + "/v2/" + img.repo
	ref := img.tag
	if rng.IntN(2) == 0 {
		ref = img.digest
		if manifestKind == kindManifestTag {
			manifestKind = kindManifestDigest
		}
	}
	m := &blob{digest: img.digest, size: int64(len(img.manifest)), data: img.manifest}
	if !w.fetch(ctx, hc, manifestKind, prefix+"/manifests/"+ref, m, -1, 0) {
		return
	}
	for _, b := range img.blobs {
		if ranges && b.data != nil && b.size > 1 && rng.Float64() < w.rangeRatio {
			start := rng.Int64N(b.size)
			end := start + rng.Int64N(min(b.size-start, 256<<10))
			if !w.fetch(ctx, hc, kindRange, prefix+"/blobs/"+b.digest, b, start, end) {
				return
			}
			continue
		}
		if !w.fetch(ctx, hc, blobKind, prefix+"/blobs/"+b.digest, b, -1, 0) {
			return
		}
	}
}

// fetch GETs url (bytes start-end of it when start >= 0) and checks the
// answer against want: status, size and digest, or the range's bytes. It
// records the request and reports whether it succeeded. A request cut by
// the end of the load is not recorded at all.
func (w *workload) fetch(ctx context.Context, hc *http.Client, kind, url string, want *blob, start, end int64) bool {
	t := time.Now()
	err := check(ctx, hc, url, want, start, end)
	if ctx.Err() != nil {
		return false
	}
	if err != nil {
		w.rec.fail(kind, fmt.Errorf("GET %s: %w", url, err))
		return false
	}
	n := want.size
	if start >= 0 {
		n = end - start + 1
	}
	w.rec.ok(kind, time.Since(t), n)
	return true
}

func check(ctx context.Context, hc *http.Client, url string, want *blob, start, end int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", manifestType)
	if start >= 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, end))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if start >= 0 {
		body, err := io.ReadAll(io.LimitReader(resp.Body, end-start+2))
		switch {
		case err != nil:
			return fmt.Errorf("read range: %w", err)
		case resp.StatusCode != http.StatusPartialContent:
			return fmt.Errorf("range %d-%d: status %s, want 206: %.200q", start, end, resp.Status, body)
		case resp.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", start, end, want.size):
			return fmt.Errorf("range %d-%d: Content-Range %q", start, end, resp.Header.Get("Content-Range"))
		case !bytes.Equal(body, want.data[start:end+1]):
			return fmt.Errorf("range %d-%d: %d bytes that differ from the blob's", start, end, len(body))
		}
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("status %s, want 200: %q", resp.Status, body)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("read body after %d bytes: %w", n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != want.size || got != want.digest {
		return fmt.Errorf("got %d bytes hashing to %s, want %d bytes of %s", n, got, want.size, want.digest)
	}
	return nil
}

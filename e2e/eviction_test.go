package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/e2e/peers"
)

// Eviction test sizes: every image is a shared base layer and a layer of
// its own.
const (
	evictImages    = 6
	evictBaseSize  = 256 << 10
	evictOwnSize   = 384 << 10
	evictWorkers   = 4
	evictMaxPulls  = 400 // per worker: the load is bounded
	evictDuring    = 12  // images the load must see evicted
	evictRunsLimit = 90 * time.Second
)

// evictImage is an image of the eviction test and what it stores.
type evictImage struct {
	name   string
	img    v1.Image
	digest string
	blobs  map[string]int64 // config, layers and manifest, with sizes
	own    []string         // what only this image stores: manifest, config, own layer
	bytes  int64            // the size of own
}

func newEvictImage(t *testing.T, name string, base v1.Layer) evictImage {
	t.Helper()
	own, err := random.Layer(evictOwnSize, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), base, own)
	if err != nil {
		t.Fatal(err)
	}
	e := evictImage{name: name, img: img, blobs: map[string]int64{}}
	d, _ := img.Digest()
	raw, _ := img.RawManifest()
	cfg, _ := img.ConfigName()
	rawCfg, _ := img.RawConfigFile()
	od, _ := own.Digest()
	os, _ := own.Size()
	bd, _ := base.Digest()
	bs, _ := base.Size()
	e.digest = d.String()
	e.blobs = map[string]int64{e.digest: int64(len(raw)), cfg.String(): int64(len(rawCfg)), od.String(): os, bd.String(): bs}
	e.own = []string{e.digest, cfg.String(), od.String()}
	e.bytes = int64(len(raw)) + int64(len(rawCfg)) + os
	return e
}

// stored reports whether regcache's data directory holds the blob.
func storedIn(t *testing.T, rc *peers.Regcache, digest string) bool {
	_, ok := rc.StoredBlob(t, digest)
	return ok
}

// TestEvictionUnderLoad: a regcache with --max-size fills with cached
// images; one of the oldest is pulled again; the image that takes the
// store over its maximum starts an eviction, which takes the least
// recently used images whole (down to the low-water mark), keeps the one
// pulled again, the layer every image shares, and the local repository
// that shares it. Then workers pull every image over and over while the
// store churns through evictions (and `regcache gc` runs): every blob
// body they get is complete (its Content-Length, all of it) and hashes to
// its digest, every pull succeeds, and the local image is untouched.
func TestEvictionUnderLoad(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	base, err := random.Layer(evictBaseSize, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	var imgs []evictImage
	for i := range evictImages {
		e := newEvictImage(t, fmt.Sprintf("evict-%d", i), base)
		if err := remote.Write(parse(t, u.Host+"/library/"+e.name+":v1"), e.img, remote.WithContext(t.Context())); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, e)
	}
	localImg := newEvictImage(t, "keep", base)
	bs, _ := base.Size()
	// Before the last image: the base, the local image, the first five.
	s5 := bs + localImg.bytes
	for _, e := range imgs[:5] {
		s5 += e.bytes
	}
	s6 := s5 + imgs[5].bytes
	maxSize := s5 + imgs[5].bytes/2
	// Down to between "the two least recently used gone" and "one gone".
	target := s6 - imgs[1].bytes - imgs[2].bytes/2
	lowWater := 100 * float64(target) / float64(maxSize)
	rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+u.URL(), "--local-namespace", "lab/*",
		"--max-size", strconv.FormatInt(maxSize, 10), "--evict-low-water", strconv.FormatFloat(lowWater, 'f', 4, 64)+"%", "--log-format", "text")
	createRule(t, bin, rc, "HubLibrary", "docker.io/library/*", "hub/*")
	ctx := t.Context()
	if err := remote.Write(parse(t, rc.Addr+"/lab/keep:v1"), localImg.img, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	ref := func(e evictImage) string { return rc.Addr + "/hub/" + e.name + ":v1" }
	for _, e := range imgs[:5] {
		if err := pullVerify(ctx, ref(e)); err != nil {
			t.Fatal(err)
		}
	}
	// A pull ends when its last byte verified; the fill commits right
	// after: wait for the five images' bytes.
	waitStoreBytes(t, rc, s5)
	if st := statusOf(t, rc); st.Store.Evicted.Runs != 0 {
		t.Fatalf("status after five images: %+v, want no eviction", st.Store)
	}
	// One of the oldest is pulled again, then the sixth takes the store
	// over its maximum.
	if err := pullVerify(ctx, ref(imgs[0])); err != nil {
		t.Fatal(err)
	}
	if err := pullVerify(ctx, ref(imgs[5])); err != nil {
		t.Fatal(err)
	}
	waitEvictions(t, rc, 1)

	for i, e := range imgs {
		gone := i == 1 || i == 2
		for _, d := range e.own {
			if storedIn(t, rc, d) == gone {
				t.Errorf("image %s (least recently used: %v): blob %s stored %v", e.name, gone, d, !gone)
			}
		}
	}
	bd, _ := base.Digest()
	if !storedIn(t, rc, bd.String()) {
		t.Error("the layer every image shares went")
	}
	for _, d := range localImg.own {
		if !storedIn(t, rc, d) {
			t.Errorf("the local repository lost %s", d)
		}
	}
	if st := statusOf(t, rc); st.Store.Bytes > target {
		t.Errorf("after the eviction the store holds %d bytes, over the low-water mark %d", st.Store.Bytes, target)
	}
	if out := adminCLI(t, bin, rc, "gc", "--dry-run", "-o", "table"); !strings.Contains(out, "would evict 0 images") {
		t.Errorf("under the low-water mark, a dry run would still evict:\n%s", out)
	}

	t.Run("under load", func(t *testing.T) {
		before := statusOf(t, rc).Store.Evicted.Images
		var stop atomic.Bool
		var pulls atomic.Int64
		var mu sync.Mutex
		var failures []string
		fail := func(s string) {
			mu.Lock()
			if len(failures) < 20 {
				failures = append(failures, s)
			}
			mu.Unlock()
		}
		all := append(append([]evictImage(nil), imgs...), localImg)
		var wg sync.WaitGroup
		for w := range evictWorkers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for i := 0; i < evictMaxPulls && !stop.Load(); i++ {
					e := all[rng.IntN(len(all))]
					repo := "hub/" + e.name
					if e.name == "keep" {
						repo = "lab/keep"
					}
					if err := pullChecked(ctx, rc.URL(), repo, e); err != nil {
						fail(err.Error())
					}
					pulls.Add(1)
				}
			})
		}
		wg.Go(func() { // collections now and then, as an operator's regcache gc
			for !stop.Load() {
				if _, stderr, code := adminCLIExit(t, bin, rc, "gc"); code != 0 {
					fail("regcache gc: " + stderr)
				}
				if statusOf(t, rc).Store.Evicted.Images >= before+evictDuring {
					stop.Store(true)
				}
			}
		})
		deadline := time.After(evictRunsLimit)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-deadline:
			stop.Store(true)
			<-done
		}
		evicted := statusOf(t, rc).Store.Evicted.Images - before
		t.Logf("%d pulls, %d images evicted during them", pulls.Load(), evicted)
		for _, f := range failures {
			t.Error(f)
		}
		if evicted < evictDuring {
			t.Fatalf("only %d images were evicted during the load, want at least %d", evicted, evictDuring)
		}
		if err := pullVerify(ctx, rc.Addr+"/lab/keep:v1"); err != nil {
			t.Fatalf("the local image after the load: %v", err)
		}
		for _, d := range localImg.own {
			if !storedIn(t, rc, d) {
				t.Errorf("the local repository lost %s", d)
			}
		}
	})
}

// waitStoreBytes waits until regcache reports n bytes stored.
func waitStoreBytes(t *testing.T, rc *peers.Regcache, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := statusOf(t, rc)
		if st.Store.Counted && st.Store.Bytes == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store does not hold %d bytes within 30s: %+v", n, st.Store)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEvictions waits until regcache reports at least n eviction runs.
func waitEvictions(t *testing.T, rc *peers.Regcache, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := statusOf(t, rc)
		if st.Store.Evicted.Runs >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no eviction within 30s: %+v\n%s", st.Store, rc.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pullChecked pulls repo:v1 as a client does, with plain HTTP requests:
// the manifest, then every blob; each answer must be 200 with a body of
// its Content-Length that hashes to its digest.
func pullChecked(ctx context.Context, base, repo string, e evictImage) error {
	get := func(path string) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		req.Header.Set("Accept", string(types.OCIManifestSchema1))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
		}
		if err != nil {
			return nil, fmt.Errorf("GET %s: 200, then the body broke after %d bytes: %w", path, len(b), err)
		}
		if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
			return nil, fmt.Errorf("GET %s: 200 with %d bytes of a Content-Length of %d", path, len(b), resp.ContentLength)
		}
		return b, nil
	}
	raw, err := get("/v2/" + repo + "/manifests/v1")
	if err != nil {
		return err
	}
	var m struct {
		Config v1.Descriptor   `json:"config"`
		Layers []v1.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%s manifest: %w", repo, err)
	}
	if got := sum(raw); got != e.digest {
		return fmt.Errorf("%s manifest hashes to %s, want %s", repo, got, e.digest)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		b, err := get("/v2/" + repo + "/blobs/" + d.Digest.String())
		if err != nil {
			return err
		}
		if int64(len(b)) != d.Size || sum(b) != d.Digest.String() {
			return fmt.Errorf("%s blob %s: %d bytes hashing to %s, want %d bytes", repo, d.Digest, len(b), sum(b), d.Size)
		}
	}
	return nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

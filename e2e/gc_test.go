package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/e2e/peers"
)

// GC stress bounds: workers push, pull and delete for stressDuration (at
// most stressIterations each) while regcache collects garbage every
// 200ms with a grace period of stressGrace.
const (
	stressWorkers    = 4
	stressDuration   = 12 * time.Second
	stressIterations = 80
	// The grace must outlast one push (its blobs, then its manifest) on a
	// loaded CI machine: a push slower than the grace has its blobs
	// collected before its manifest, as documented.
	stressGrace = 10 * time.Second
)

type pushed struct {
	ref, digest string
	unique      string // the layer only this image has
}

// TestGCStress pushes, pulls and deletes images in several local
// repositories concurrently while garbage collection runs every 200ms (and
// on demand through the admin API). Every image shares a base layer that
// each repository mounts from lab/base. No push or pull may fail; the
// collections must delete garbage during the run; afterwards every image
// not deleted pulls completely and verifies, and the unique layers of the
// deleted ones are gone from the store.
func TestGCStress(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	rc := startLocalRegcache(t, bin, u, "--gc-interval", "200ms", "--gc-grace", stressGrace.String())
	ctx := t.Context()
	token := rc.Token()

	baseImg, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	baseImg = mutate.MediaType(baseImg, types.OCIManifestSchema1)
	if err := remote.Write(parse(t, rc.Addr+"/lab/base:v1"), baseImg, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	// Its layers are remote layers of lab/base: pushes mount them.
	base, err := remote.Image(parse(t, rc.Addr+"/lab/base:v1"), remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(stressDuration)
	var (
		mu       sync.Mutex
		kept     []pushed
		deleted  []pushed
		reclaims int
		wg       sync.WaitGroup
		errs     = make(chan error, stressWorkers+1)
	)
	stop := make(chan struct{})
	go func() { // on-demand collections, as an operator's regcache gc
		defer close(errs)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			rep, err := adminGC(ctx, rc.URL(), token)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			reclaims += rep.Deleted
			mu.Unlock()
		}
	}()
	for w := range stressWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine, gone, err := stressWorker(ctx, rc, base, w, deadline)
			mu.Lock()
			kept, deleted = append(kept, mine...), append(deleted, gone...)
			mu.Unlock()
			if err != nil {
				errs <- fmt.Errorf("worker %d: %w", w, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if len(deleted) == 0 || len(kept) == 0 {
		t.Fatalf("%d images kept, %d deleted: the run did too little", len(kept), len(deleted))
	}
	// The garbage of the last deletions ages past the grace period; then
	// one more collection.
	time.Sleep(stressGrace + 500*time.Millisecond)
	rep, err := adminGC(ctx, rc.URL(), token)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range kept {
		if err := pullVerify(ctx, p.ref); err != nil {
			t.Errorf("%s after the collections: %v", p.ref, err)
		}
	}
	collected := 0
	for _, line := range strings.Split(rc.Logs(), "\n") {
		if kv := logFields(line); kv["msg"] == "garbage collection" && kv["deleted"] != "0" {
			collected++
		}
	}
	mu.Lock()
	t.Logf("%d images kept, %d deleted; %d collections deleted blobs (on-demand ones during the run: %d blobs); final collection %+v",
		len(kept), len(deleted), collected, reclaims, rep)
	mu.Unlock()
	if collected == 0 {
		t.Fatal("no collection deleted anything")
	}
	for _, p := range deleted {
		if _, ok := rc.StoredBlob(t, p.unique); ok {
			t.Errorf("the unique layer %s of deleted %s is still stored", p.unique, p.ref)
		}
	}
	if err := pullVerify(ctx, rc.Addr+"/lab/base:v1"); err != nil {
		t.Errorf("base image: %v", err)
	}
}

// stressWorker pushes an image per iteration into its own repository,
// pulls an earlier one, and deletes every third, until deadline.
func stressWorker(ctx context.Context, rc *peers.Regcache, base v1.Image, w int, deadline time.Time) (kept, deleted []pushed, err error) {
	repo := fmt.Sprintf("%s/lab/stress-%d", rc.Addr, w)
	for i := 0; i < stressIterations && time.Now().Before(deadline); i++ {
		layer, err := random.Layer(16<<10, types.OCILayer)
		if err != nil {
			return kept, deleted, err
		}
		img, err := mutate.AppendLayers(base, layer)
		if err != nil {
			return kept, deleted, err
		}
		ref := fmt.Sprintf("%s:v%d", repo, i)
		r, err := nameRef(ref)
		if err != nil {
			return kept, deleted, err
		}
		if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
			return kept, deleted, fmt.Errorf("push %s: %w", ref, err)
		}
		d, _ := img.Digest()
		ld, _ := layer.Digest()
		kept = append(kept, pushed{ref: ref, digest: d.String(), unique: ld.String()})
		// The oldest image still kept: its blobs are past the grace
		// period, only references protect them.
		if err := pullVerify(ctx, kept[0].ref); err != nil {
			return kept, deleted, fmt.Errorf("pull %s: %w", kept[0].ref, err)
		}
		if i%3 == 2 {
			victim := kept[0]
			kept = kept[1:]
			req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, rc.URL()+"/v2/lab/stress-"+fmt.Sprint(w)+"/manifests/"+victim.digest, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return kept, deleted, err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				return kept, deleted, fmt.Errorf("delete %s: %s", victim.ref, resp.Status)
			}
			deleted = append(deleted, victim)
		}
	}
	return kept, deleted, nil
}

func nameRef(ref string) (name.Reference, error) { return name.ParseReference(ref, name.Insecure) }

// pullVerify pulls ref completely with go-containerregistry, which
// verifies every blob's digest while reading it.
func pullVerify(ctx context.Context, ref string) error {
	r, err := nameRef(ref)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
	}
	return nil
}

type gcReport struct {
	Blobs   int `json:"blobs"`
	Deleted int `json:"deleted"`
}

// adminGC runs one collection through the admin API.
func adminGC(ctx context.Context, url, token string) (gcReport, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/admin/v1/gc", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return gcReport{}, err
	}
	defer resp.Body.Close()
	var rep gcReport
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return rep, fmt.Errorf("POST /admin/v1/gc: %s %s", resp.Status, b)
	}
	return rep, json.NewDecoder(resp.Body).Decode(&rep)
}

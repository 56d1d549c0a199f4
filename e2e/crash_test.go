package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
	"github.com/regcache/regcache/storage"
)

// TestCrashDuringColdPulls kills the built regcache with SIGKILL while 8
// clients pull 8 large cold blobs through it, every fill held by the
// upstream proxy after some MiB (deterministically mid-fill). Then, with
// the server down, fsck finds no corrupt blob and nothing half-written
// under a digest (the interrupted fills are temporary files, counted);
// an image committed before the crash is intact. The restarted server
// removes the temporary files, and the same pulls succeed and verify.
func TestCrashDuringColdPulls(t *testing.T) {
	t.Parallel()
	const (
		clients = 8
		size    = 24 << 20
		hold    = 6 << 20 // bytes each fill receives before the crash
	)
	bin := peers.BuildRegcache(t)
	// Debian's docker-registry: it takes 24 MiB pushes in a fraction of the
	// time the in-process registry needs under the race detector.
	up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
	proxy := newFaultProxy(t, up.URL())
	rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+proxy.URL)
	createHubRule(t, bin, rc)
	warm := peers.SeedImage(t, up.Host+"/library/warm:v1", true)
	checkImage(t, rc.Addr+"/hub/warm:v1", warm)

	blobs := make([][]byte, clients)
	paths := make([]string, clients)
	digests := make([]string, clients)
	faults := make([]*blobFault, clients)
	for i := range clients {
		blobs[i], digests[i] = pushRandomBlob(t, up, fmt.Sprintf("library/big%d", i), size)
		faults[i] = proxy.set(digests[i], &blobFault{kind: faultHold, body: blobs[i], hold: hold})
		paths[i] = fmt.Sprintf("/v2/hub/big%d/blobs/%s", i, digests[i])
	}
	client := newTestClient(t)
	runs := make([]*blobPulls, clients)
	for i := range clients {
		runs[i] = startBlobPulls(client, rc.URL()+paths[i], []blobPull{{}})
	}
	for _, f := range faults {
		f.waitHeld(t, 1)
	}
	// Where the fills write is the store's business: count every file of
	// at least hold bytes under the blob store (the image pulled before
	// has only small ones).
	waitUntil(t, "every fill wrote what it received", func() string {
		full := 0
		filepath.WalkDir(filepath.Join(rc.DataDir, "blobs"), func(_ string, d fs.DirEntry, err error) error {
			if fi, ierr := d.Info(); err == nil && ierr == nil && fi.Mode().IsRegular() && fi.Size() >= hold {
				full++
			}
			return nil
		})
		if full < clients {
			return fmt.Sprintf("%d of %d fills hold %d bytes", full, clients, hold)
		}
		return ""
	})
	rc.Kill()

	for i, run := range runs {
		r := run.wait()[0]
		if r.err == nil || len(r.body) >= size {
			t.Errorf("client %d: status %d, %d bytes, error %v; want the body cut by the crash", i, r.status, len(r.body), r.err)
		}
	}
	for i, d := range digests {
		if _, ok := rc.StoredBlob(t, d); ok {
			t.Errorf("blob %d of an interrupted fill is visible in the store", i)
		}
	}
	stdout, stderr, code := peers.Run(t, bin, "fsck", "--data-dir", rc.DataDir, "-o", "json")
	warmBlobs := 1 + len(warm.Blobs())
	if rc.InObjectStore() {
		// Only the server reaches the bucket: the stopped server's data
		// directory is not checked offline.
		if code != 1 || !strings.Contains(stderr, "fsck --server") {
			t.Errorf("offline fsck of a data directory whose blobs are in a bucket: exit %d, %s; want it refused, pointing to fsck --server", code, stderr)
		}
		if n := rc.StoredBlobs(t); n != warmBlobs {
			t.Errorf("after the crash the bucket holds %d blobs, want the %d of the image pulled before", n, warmBlobs)
		}
	} else {
		var r storage.CheckReport
		if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != 0 {
			t.Fatalf("fsck after the crash: exit %d, %v\n%s\n%s", code, err, stdout, stderr)
		}
		if r.CorruptBlobs != 0 || len(r.Problems) != 0 || r.Blobs != warmBlobs || r.TempFiles != clients {
			t.Errorf("fsck after the crash: %d blobs, %d temporary files, problems %+v; want the %d blobs of the image pulled before, %d interrupted fills, no problem",
				r.Blobs, r.TempFiles, r.Problems, warmBlobs, clients)
		}
	}

	for _, d := range digests {
		proxy.clear(d)
	}
	rc.Restart()
	tmp := filepath.Join(rc.DataDir, "blobs", "tmp")
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) != 0 {
		t.Errorf("after the restart the temporary directory holds %d files (%v); want none", len(entries), err)
	}
	checkImage(t, rc.Addr+"/hub/warm:v1", warm)
	for i := range clients {
		runs[i] = startBlobPulls(client, rc.URL()+paths[i], []blobPull{{}}) // the port may change

	}
	for i, run := range runs {
		if err := verifyPull(blobPull{}, run.wait()[0], blobs[i], digests[i]); err != nil {
			t.Errorf("client %d after the restart: %v", i, err)
		}
	}
	checkStoreSound(t, bin, rc, warmBlobs+clients)
}

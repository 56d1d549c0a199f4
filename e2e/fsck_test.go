package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
	"github.com/regcache/regcache/storage"
)

// runFsck runs regcache fsck with args and -o json and returns its report
// and exit status.
func runFsck(t *testing.T, bin string, args ...string) (storage.CheckReport, int) {
	t.Helper()
	stdout, stderr, code := peers.Run(t, bin, append(append([]string{"fsck"}, args...), "-o", "json")...)
	var r storage.CheckReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("fsck %s: exit %d, output is not a report: %v\n%s\n%s", strings.Join(args, " "), code, err, stdout, stderr)
	}
	return r, code
}

// A running regcache checks its own store while a fill is in progress:
// fsck --server --repair quarantines a blob damaged on disk and nothing
// else (the fill in progress is a temporary file it leaves alone), the
// fill then completes and verifies, and the damaged blob is fetched again
// on the next pull. fsck of the data directory itself is refused while
// the server holds it, naming its PID.
func TestFsckOnLiveServer(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
	proxy := newFaultProxy(t, up.URL())
	rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+proxy.URL)
	createHubRule(t, bin, rc)

	_, stderr, code := peers.Run(t, bin, "fsck", "--data-dir", rc.DataDir)
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf("pid %d", rc.PID())) || !strings.Contains(stderr, "fsck --server") {
		t.Errorf("fsck --data-dir of a running server's directory: exit %d, %q; want exit 1 naming pid %d and fsck --server", code, stderr, rc.PID())
	}

	stored, storedDigest := pushRandomBlob(t, up, "library/stored", faultBlobSize)
	storedURL := rc.URL() + "/v2/hub/stored/blobs/" + storedDigest
	client := newTestClient(t)
	if err := verifyPull(blobPull{}, startBlobPulls(client, storedURL, []blobPull{{}}).wait()[0], stored, storedDigest); err != nil {
		t.Fatal(err)
	}
	checkStoreSound(t, bin, rc, 1)
	damaged := rc.ReadStoredBlob(t, storedDigest)
	damaged[12345] ^= 0x01
	rc.WriteStoredBlob(t, storedDigest, damaged)

	filling, fillingDigest := pushRandomBlob(t, up, "library/filling", faultBlobSize)
	f := proxy.set(fillingDigest, &blobFault{kind: faultPause, body: filling, hold: faultHoldBytes})
	run := startBlobPulls(client, rc.URL()+"/v2/hub/filling/blobs/"+fillingDigest, []blobPull{{}})
	f.waitHeld(t, 1)
	run.waitHeaders(t)

	r, code := runFsck(t, bin, "--server", rc.URL(), "--token", rc.Token(), "--repair")
	want := []string{storage.ProblemCorruptBlob + " " + storedDigest, storage.ProblemBadLink + " " + storedDigest}
	var got []string
	for _, p := range r.Problems {
		got = append(got, p.Kind+" "+p.Digest)
		if !p.Repaired {
			t.Errorf("fsck --repair left %s %s: %s", p.Kind, p.Digest, p.Action)
		}
	}
	if code != 0 || strings.Join(got, ",") != strings.Join(want, ",") || r.TempFiles != 1 || r.Blobs != 1 {
		t.Errorf("fsck --repair during a fill: exit %d, %d blobs, %d temporary files, problems %q; want exit 0, 1 blob, the fill's temporary file, problems %q",
			code, r.Blobs, r.TempFiles, got, want)
	}
	quarantined, err := filepath.Glob(filepath.Join(rc.DataDir, "quarantine", "*", "sha256", storedDigest[7:9], storedDigest[7:]))
	if err != nil || len(quarantined) != 1 {
		t.Errorf("the damaged blob is not in %s/quarantine: %v %v", rc.DataDir, quarantined, err)
	}

	close(f.gate)
	if err := verifyPull(blobPull{}, run.wait()[0], filling, fillingDigest); err != nil {
		t.Errorf("the fill running during fsck: %v", err)
	}
	proxy.clear(fillingDigest)
	if err := verifyPull(blobPull{}, startBlobPulls(client, storedURL, []blobPull{{}}).wait()[0], stored, storedDigest); err != nil {
		t.Errorf("the quarantined blob pulled again: %v", err)
	}
	checkStoreSound(t, bin, rc, 2)
}

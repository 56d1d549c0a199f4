package registry_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/storage"
)

const fsckPath = "/admin/v1/fsck"

// fsckEvents posts a check and reads its answer line by line.
func fsckEvents(t *testing.T, s *stack, body string) (*http.Response, []registry.FsckEvent) {
	t.Helper()
	resp, raw := do(t, http.MethodPost, s.url+fsckPath, map[string]string{"Authorization": "Bearer " + testToken}, strings.NewReader(body))
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	var events []registry.FsckEvent
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var e registry.FsckEvent
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("answer line %q: %v", sc.Text(), err)
		}
		events = append(events, e)
	}
	return resp, events
}

// The running server checks its own store: a blob damaged on disk is
// reported, then quarantined with --repair, and the next pull fetches it
// again from the upstream and serves the true bytes.
func TestFsckOnline(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, up, "library/app:v1", img)
	digest, layer := layerBytes(t, img)
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": up.URL}, rules: []cache.Rule{hubRule}})
	blobURL := s.url + "/v2/hub/app/blobs/" + digest
	if resp, body := do(t, http.MethodGet, s.url+"/v2/hub/app/manifests/v1", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull manifest: %s %s", resp.Status, body)
	}
	if resp, body := do(t, http.MethodGet, blobURL, nil, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("pull layer: %s", resp.Status)
	}
	// The client had its last byte once it verified; the fill commits
	// and links it just after.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := s.meta.Linked(t.Context(), "hub/app", digest); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the layer was not linked after the pull: %v", err)
		}
	}
	path := filepath.Join(s.dir, "blobs", "sha256", digest[7:9], digest[7:])
	damaged := bytes.Clone(layer)
	damaged[len(damaged)/2] ^= 1
	if err := os.WriteFile(path, damaged, 0o644); err != nil {
		t.Fatal(err)
	}

	if resp, _ := do(t, http.MethodPost, s.url+fsckPath, nil, strings.NewReader(`{}`)); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("fsck without the admin token: %s, want 401", resp.Status)
	}
	if resp, _ := fsckEvents(t, s, `{"repair":"yes"}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("fsck with a bad body: %s, want 400", resp.Status)
	}

	for _, repair := range []bool{false, true} {
		resp, events := fsckEvents(t, s, `{"repair":`+map[bool]string{false: "false", true: "true"}[repair]+`}`)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" || len(events) < 2 {
			t.Fatalf("fsck (repair %v): %s %q, %d events", repair, resp.Status, resp.Header.Get("Content-Type"), len(events))
		}
		if events[0].Progress == nil {
			t.Errorf("fsck (repair %v): first event %+v, want progress", repair, events[0])
		}
		r := events[len(events)-1].Report
		if r == nil {
			t.Fatalf("fsck (repair %v): last event %+v, want the report", repair, events[len(events)-1])
		}
		// The layer is corrupt and its link bad; the manifest is fine (the
		// config was not pulled).
		if r.Blobs != 2 || r.CorruptBlobs != 1 || r.BadLinks != 1 || r.BadTags != 0 || r.Repair != repair {
			t.Errorf("fsck (repair %v): %d blobs, %d corrupt, %d bad links, %d bad tags; want 2, 1, 1, 0", repair, r.Blobs, r.CorruptBlobs, r.BadLinks, r.BadTags)
		}
		if repair != (r.Repaired == 2 && r.Unrepaired == 0) {
			t.Errorf("fsck (repair %v): %d repaired, %d unrepaired", repair, r.Repaired, r.Unrepaired)
		}
	}
	if resp, body := do(t, http.MethodGet, blobURL, nil, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Errorf("pull after the repair: %s, %d bytes; want the true layer fetched again", resp.Status, len(body))
	}
	// The fill commits (fsync, rename) just after the client got the bytes.
	waitStored(t, s, digestOf(layer))
	resp, events := fsckEvents(t, s, `{"repair":false}`)
	if r := events[len(events)-1].Report; resp.StatusCode != http.StatusOK || r == nil || len(r.Problems) != 0 || r.Blobs != 2 {
		t.Errorf("fsck after the repair and the pull: %s %+v; want 2 blobs and no problem", resp.Status, events[len(events)-1])
	}
}

// A second check while one runs is refused with 409.
func TestFsckOneAtATime(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{})
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		once := false
		_, err := s.fsck.Check(t.Context(), storage.CheckOptions{Progress: func(storage.CheckProgress) {
			if !once {
				once = true
				close(started)
				<-release
			}
		}})
		done <- err
	}()
	<-started
	resp, body := do(t, http.MethodPost, s.url+fsckPath, map[string]string{"Authorization": "Bearer " + testToken}, strings.NewReader(`{}`))
	close(release)
	var e adminError
	json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusConflict || e.Error.Code != "CONFLICT" || !strings.Contains(e.Error.Message, "already running") {
		t.Errorf("fsck during a check: %s %s, want 409 CONFLICT saying a check is running", resp.Status, body)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

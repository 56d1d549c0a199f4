package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

// send sends one request and returns the answer with its whole body.
func send(t *testing.T, method, u string, header map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// forwardedLines counts the requests the replicas served for another one.
func (h *haCluster) forwardedLines() int {
	n := 0
	for _, rc := range h.rc {
		n += strings.Count(rc.Logs(), "forwardedBy=")
	}
	return n
}

// TestHAUploads: upload sessions are usable through any replica of three
// (S3, etcd, peers, haproxy).
//
//   - A chunked upload by hand: POST on replica 1, PATCH on replica 2,
//     PATCH on replica 3, status on replica 2, PUT with the digest on
//     replica 3: the blob is readable through every replica; a manifest
//     pushed through replica 2 pulls through replica 1.
//   - crane pushes an image through haproxy, which sends each request to
//     the next replica: it succeeds and pulls back.
//   - A session on a killed replica: a PATCH through another replica
//     answers 404 BLOB_UPLOAD_UNKNOWN saying its replica is unreachable.
func TestHAUploads(t *testing.T) {
	t.Parallel()
	crane := peers.Require(t, "crane")
	up := peers.StartGGCR(t)
	img := peers.SeedImage(t, up.Host+"/library/app:v1", true)
	h := startHA(t, up.URL())
	r1, r2, r3 := h.rc[0].URL(), h.rc[1].URL(), h.rc[2].URL()

	// A chunked upload across the three replicas.
	layer := make([]byte, 3<<20)
	rand.Read(layer)
	layerDigest := sha(layer)
	chunk := len(layer) / 3
	resp, body := send(t, "POST", r1+"/v2/lab/hand/blobs/uploads/", nil, nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("POST a session on replica 1: %d %s", resp.StatusCode, body)
	}
	for i, base := range []string{r2, r3} {
		rng := fmt.Sprintf("%d-%d", i*chunk, (i+1)*chunk-1)
		resp, body = send(t, "PATCH", base+loc, map[string]string{"Content-Range": rng, "Content-Type": "application/octet-stream"}, layer[i*chunk:(i+1)*chunk])
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != fmt.Sprintf("0-%d", (i+1)*chunk-1) || resp.Header.Get("Location") != loc {
			t.Fatalf("PATCH %s on replica %d: %d %v %s", rng, i+2, resp.StatusCode, resp.Header, body)
		}
	}
	resp, body = send(t, "GET", r2+loc, nil, nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != fmt.Sprintf("0-%d", 2*chunk-1) {
		t.Fatalf("GET the session's status on replica 2: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = send(t, "PUT", r3+loc+"?digest="+url.QueryEscape(layerDigest),
		map[string]string{"Content-Range": fmt.Sprintf("%d-%d", 2*chunk, len(layer)-1)}, layer[2*chunk:])
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != layerDigest {
		t.Fatalf("PUT the last chunk with the digest on replica 3: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	for i, rc := range h.rc {
		if err := getVerified(rc.URL()+"/v2/lab/hand/blobs/"+layerDigest, layerDigest); err != nil {
			t.Errorf("the uploaded blob through replica %d: %v", i+1, err)
		}
	}
	if h.forwardedLines() < 4 {
		t.Errorf("%d forwarded requests logged, want at least the 4 that did not reach replica 1", h.forwardedLines())
	}

	// A manifest through replica 2, pulled through replica 1.
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	configDigest := sha(config)
	resp, body = send(t, "POST", r1+"/v2/lab/hand/blobs/uploads/?digest="+url.QueryEscape(configDigest), nil, config)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("monolithic upload of the config on replica 1: %d %s", resp.StatusCode, body)
	}
	const ociManifest = "application/vnd.oci.image.manifest.v1+json"
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": ociManifest,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": len(config)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": len(layer)}},
	})
	manifestDigest := sha(manifest)
	resp, body = send(t, "PUT", r2+"/v2/lab/hand/manifests/v1", map[string]string{"Content-Type": ociManifest}, manifest)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != manifestDigest {
		t.Fatalf("PUT the manifest on replica 2: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = send(t, "GET", r1+"/v2/lab/hand/manifests/v1", map[string]string{"Accept": ociManifest}, nil)
	if resp.StatusCode != http.StatusOK || sha(body) != manifestDigest || resp.Header.Get("Docker-Content-Digest") != manifestDigest {
		t.Fatalf("GET the manifest on replica 1: %d, body %s, want %s", resp.StatusCode, sha(body), manifestDigest)
	}
	for _, d := range []string{configDigest, layerDigest} {
		if err := getVerified(r1+"/v2/lab/hand/blobs/"+d, d); err != nil {
			t.Error(err)
		}
	}

	// crane pushes through haproxy; its POST, PATCH and PUT of each blob
	// reach different replicas.
	before := h.forwardedLines()
	dst := h.lb.Addr() + "/lab/app:v1"
	runOK(t, peers.RunOptions{}, crane, "copy", "--insecure", up.Host+"/library/app:v1", dst)
	if h.forwardedLines() == before {
		t.Error("crane's push through haproxy caused no forwarded request: the load balancer did not spread a session over replicas")
	}
	pullCrane(t, crane, wantImage(dst, img))

	// A session on a killed replica.
	resp, body = send(t, "POST", r3+"/v2/lab/lost/blobs/uploads/", nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST a session on replica 3: %d %s", resp.StatusCode, body)
	}
	loc = resp.Header.Get("Location")
	h.rc[2].Kill()
	resp, body = send(t, "PATCH", r1+loc, nil, []byte("abc"))
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "BLOB_UPLOAD_UNKNOWN") || !strings.Contains(string(body), "unreachable") {
		t.Fatalf("PATCH on replica 1 of a session of the killed replica 3: %d %s; want 404 BLOB_UPLOAD_UNKNOWN saying its replica is unreachable", resp.StatusCode, body)
	}
}

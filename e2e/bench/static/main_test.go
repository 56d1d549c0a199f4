package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// Manifests come from memory with a registry's headers (the file changed
// after the start is not seen); blobs come from their files.
func TestHandler(t *testing.T) {
	root := t.TempDir()
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	sum := sha256.Sum256(manifest)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	for p, b := range map[string][]byte{
		"v2/bench/app/manifests/latest":    manifest,
		"v2/bench/app/manifests/" + digest: manifest,
		"v2/bench/app/blobs/sha256:abc":    []byte("blob bytes"),
	} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h, err := newHandler(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "v2/bench/app/manifests/latest"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(method, path string) (*http.Response, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, path := range []string{"/v2/bench/app/manifests/latest", "/v2/bench/app/manifests/" + digest} {
		resp, body := get(http.MethodGet, path)
		if body != string(manifest) || resp.Header.Get("Docker-Content-Digest") != digest || resp.Header.Get("Etag") != `"`+digest+`"` ||
			resp.Header.Get("Content-Type") != "application/vnd.oci.image.manifest.v1+json" || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
			t.Errorf("GET %s: %q %v", path, body, resp.Header)
		}
		head, hb := get(http.MethodHead, path)
		if hb != "" || head.ContentLength != int64(len(manifest)) {
			t.Errorf("HEAD %s: %d body bytes, Content-Length %d", path, len(hb), head.ContentLength)
		}
		if cc := resp.Header.Get("Cache-Control"); (cc != "") != (path != "/v2/bench/app/manifests/latest") {
			t.Errorf("GET %s: Cache-Control %q", path, cc)
		}
	}
	if _, body := get(http.MethodGet, "/v2/bench/app/blobs/sha256:abc"); body != "blob bytes" {
		t.Errorf("blob: %q", body)
	}
}

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// newFloor starts floor in front of a real registry (go-containerregistry's)
// holding one image, reached through a proxy that corrupts blob bodies
// while corrupt is set. It returns floor's URL and the image.
func newFloor(t *testing.T, corrupt *atomic.Bool) (string, v1.Image) {
	t.Helper()
	reg := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	img, err := random.Image(300<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/bench/app:latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Get(reg.URL + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if corrupt.Load() && strings.Contains(r.URL.Path, "/blobs/") && len(body) > 0 {
			body[len(body)/2] ^= 0xff
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(proxy.Close)
	f := &floor{upstream: proxy.URL, dir: t.TempDir(), client: &http.Client{Timeout: time.Minute}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL, img
}

func TestFloorServesVerifiedBytes(t *testing.T) {
	t.Parallel()
	var corrupt atomic.Bool
	url, img := newFloor(t, &corrupt)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := layers[0].Digest()
	resp, err := http.Get(url + "/v2/bench/app/blobs/" + digest.String())
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET blob: %s, %v", resp.Status, err)
	}
	if sum := sha256.Sum256(body); "sha256:"+hex.EncodeToString(sum[:]) != digest.String() {
		t.Errorf("blob through floor hashes to %x, want %s", sum, digest)
	}

	// A manifest by tag is verified against the upstream's digest header.
	resp, err = http.Get(url + "/v2/bench/app/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, _ := img.RawManifest()
	if err != nil || string(manifest) != string(want) {
		t.Errorf("manifest through floor: %v, %d bytes; want the %d pushed", err, len(manifest), len(want))
	}
}

// TestFloorCutsCorruptBodies checks the other half of the pipeline: bytes
// that do not hash to the requested digest never reach the client as a
// complete body (the last byte is held back, then the connection cut).
func TestFloorCutsCorruptBodies(t *testing.T) {
	t.Parallel()
	var corrupt atomic.Bool
	corrupt.Store(true)
	url, img := newFloor(t, &corrupt)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	resp, err := http.Get(url + "/v2/bench/app/blobs/" + digest.String())
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || int64(len(body)) >= size {
		t.Errorf("corrupt blob: read %d of %d bytes, error %v; want fewer bytes and an error", len(body), size, err)
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Media types of the benchmark images (OCI image manifest, uncompressed
// layers: nothing unpacks them, and random bytes do not compress anyway).
const (
	manifestType = "application/vnd.oci.image.manifest.v1+json"
	configType   = "application/vnd.oci.image.config.v1+json"
	layerType    = "application/vnd.oci.image.layer.v1.tar"
)

// manifestAccept is what the clients send when asking for a manifest.
var manifestAccept = strings.Join([]string{
	manifestType,
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// Blob is one content-addressed blob of an image.
type Blob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Image is a pushed benchmark image.
type Image struct {
	Repo     string
	Tag      string
	Manifest []byte
	Digest   string // of Manifest
	Config   Blob
	Layers   []Blob
}

// Bytes is what one full pull reads: manifest, config and layers.
func (img *Image) Bytes() int64 {
	n := int64(len(img.Manifest)) + img.Config.Size
	for _, l := range img.Layers {
		n += l.Size
	}
	return n
}

// writeRandomBlob writes size pseudo-random bytes to <dir>/sha256/<hex> and
// returns the blob's digest.
func writeRandomBlob(dir string, rng *rand.ChaCha8, size int64) (Blob, error) {
	sub := filepath.Join(dir, "sha256")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return Blob{}, err
	}
	f, err := os.CreateTemp(sub, ".gen-*")
	if err != nil {
		return Blob{}, err
	}
	defer os.Remove(f.Name()) // a no-op after the rename
	h := sha256.New()
	w := io.MultiWriter(f, h)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		rng.Read(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			f.Close()
			return Blob{}, err
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		return Blob{}, err
	}
	hexSum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(f.Name(), filepath.Join(sub, hexSum)); err != nil {
		return Blob{}, err
	}
	return Blob{Digest: "sha256:" + hexSum, Size: size}, nil
}

// writeBytesBlob stores b as a blob under dir.
func writeBytesBlob(dir string, b []byte) (Blob, error) {
	sum := sha256.Sum256(b)
	hexSum := hex.EncodeToString(sum[:])
	sub := filepath.Join(dir, "sha256")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return Blob{}, err
	}
	if err := os.WriteFile(filepath.Join(sub, hexSum), b, 0o644); err != nil {
		return Blob{}, err
	}
	return Blob{Digest: "sha256:" + hexSum, Size: int64(len(b))}, nil
}

// sameSizes returns n layer sizes of size bytes each.
func sameSizes(n int, size int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = size
	}
	return out
}

// spreadSizes returns n layer sizes drawn uniformly from [lo, hi].
func spreadSizes(rng *rand.ChaCha8, n int, lo, hi int64) []int64 {
	r := rand.New(rng)
	out := make([]int64, n)
	for i := range out {
		out[i] = lo + r.Int64N(hi-lo+1)
	}
	return out
}

// makeImage writes the layers (one per size) and config of a new image
// into the upstream's blob directory and builds its manifest.
func makeImage(dir, repo, tag string, rng *rand.ChaCha8, sizes []int64) (*Image, error) {
	img := &Image{Repo: repo, Tag: tag}
	diffIDs := make([]string, 0, len(sizes))
	for _, size := range sizes {
		b, err := writeRandomBlob(dir, rng, size)
		if err != nil {
			return nil, fmt.Errorf("layer of %s: %w", repo, err)
		}
		img.Layers = append(img.Layers, b)
		diffIDs = append(diffIDs, b.Digest) // uncompressed: diff ID = digest
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      time.Now().UTC().Format(time.RFC3339),
		"config":       map[string]any{},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return nil, err
	}
	if img.Config, err = writeBytesBlob(dir, cfg); err != nil {
		return nil, err
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{SchemaVersion: 2, MediaType: manifestType, Config: desc{configType, img.Config.Digest, img.Config.Size}}
	for _, l := range img.Layers {
		m.Layers = append(m.Layers, desc{layerType, l.Digest, l.Size})
	}
	if img.Manifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(img.Manifest)
	img.Digest = "sha256:" + hex.EncodeToString(sum[:])
	return img, nil
}

// pushManifest PUTs the image's manifest by tag to the upstream, whose blob
// directory already holds the blobs.
func pushManifest(ctx context.Context, base string, img *Image) error {
	return pushTag(ctx, http.DefaultClient, base, img, img.Tag)
}

// pushTag PUTs the image's manifest to the upstream under tag.
func pushTag(ctx context.Context, client *http.Client, base string, img *Image, tag string) error {
	url := fmt.Sprintf("%s/v2/%s/manifests/%s", base, img.Repo, tag)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(img.Manifest))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", manifestType)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("push manifest %s:%s: %w", img.Repo, tag, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("push manifest %s:%s: %s: %s", img.Repo, tag, resp.Status, body)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != img.Digest {
		return fmt.Errorf("push manifest %s:%s: upstream says digest %s, want %s", img.Repo, tag, got, img.Digest)
	}
	return nil
}

// tagName is the i-th tag of the many-tags repository: fixed width, so
// that the upstream's sorted order is the numeric one.
func tagName(i int) string { return fmt.Sprintf("t%05d", i) }

// pushTags points n tags of img's repository at its manifest, a few PUTs
// at a time.
func pushTags(ctx context.Context, base string, img *Image, n int) error {
	client := newClient()
	defer client.CloseIdleConnections()
	next := make(chan int)
	errc := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for i := range next {
				if err == nil {
					err = pushTag(ctx, client, base, img, tagName(i))
				}
			}
			errc <- err
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	var errs []error
	for range 8 {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// writeStaticTree lays out the image under root the way the registry API
// names it, hard-linking the upstream's blob files (the same bytes, the same
// page cache): <root>/v2/<repo>/manifests/<tag> and /blobs/<digest>.
func writeStaticTree(root, blobDir string, img *Image) error {
	repoDir := filepath.Join(root, "v2", filepath.FromSlash(img.Repo))
	for _, sub := range []string{"manifests", "blobs"} {
		if err := os.MkdirAll(filepath.Join(repoDir, sub), 0o755); err != nil {
			return err
		}
	}
	for _, ref := range []string{img.Tag, img.Digest} {
		if err := os.WriteFile(filepath.Join(repoDir, "manifests", ref), img.Manifest, 0o644); err != nil {
			return err
		}
	}
	for _, b := range append([]Blob{img.Config}, img.Layers...) {
		src := filepath.Join(blobDir, "sha256", strings.TrimPrefix(b.Digest, "sha256:"))
		dst := filepath.Join(repoDir, "blobs", b.Digest)
		if err := os.Link(src, dst); err != nil && !os.IsExist(err) {
			return fmt.Errorf("link %s: %w", b.Digest, err)
		}
	}
	return nil
}

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
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// upstreamIdleTimeout is how long the upstream keeps an idle keep-alive
// connection: regcache's pooled upstream connections end that long after
// the last request, so that they do not count against the baseline.
const upstreamIdleTimeout = 3 * time.Second

// Media types of the images.
const (
	manifestType = "application/vnd.oci.image.manifest.v1+json"
	configType   = "application/vnd.oci.image.config.v1+json"
	layerType    = "application/vnd.oci.image.layer.v1.tar"
)

// blob is a blob of the upstream: its bytes (warm images, which Range
// requests are checked against), or the seed of a stream that makes them
// again (new images, read once).
type blob struct {
	digest string
	size   int64
	data   []byte
	seed   *[32]byte
}

// open returns the blob's bytes.
func (b *blob) open() io.Reader {
	if b.data != nil {
		return bytes.NewReader(b.data)
	}
	return io.LimitReader(rand.NewChaCha8(*b.seed), b.size)
}

// image is an image of the upstream: its manifest and blobs.
type image struct {
	repo, tag string
	manifest  []byte
	digest    string // of the manifest
	blobs     []*blob
}

// upstream is an in-process registry on 127.0.0.1 whose blobs are in
// memory (or made on demand) and whose manifests are pushed over HTTP.
type upstream struct {
	url   string
	srv   *http.Server
	mu    sync.RWMutex
	blobs map[string]*blob // by digest
}

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{url: "http://" + ln.Addr().String(), blobs: map[string]*blob{}}
	quiet := log.New(io.Discard, "", 0)
	u.srv = &http.Server{
		Handler:           registry.New(registry.Logger(quiet), registry.WithBlobHandler(memBlobs{u})),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       upstreamIdleTimeout,
		ErrorLog:          quiet,
	}
	go u.srv.Serve(ln)
	return u, nil
}

func (u *upstream) close() { u.srv.Close() }

// memBlobs serves the upstream's blobs to go-containerregistry's registry.
type memBlobs struct{ u *upstream }

func (m memBlobs) lookup(h v1.Hash) (*blob, error) {
	m.u.mu.RLock()
	defer m.u.mu.RUnlock()
	if b, ok := m.u.blobs[h.String()]; ok {
		return b, nil
	}
	return nil, registry.ErrNotFound
}

// Stat returns the blob's size, which also lets the registry answer Range.
func (m memBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	b, err := m.lookup(h)
	if err != nil {
		return 0, err
	}
	return b.size, nil
}

// Get returns the blob's bytes.
func (m memBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	b, err := m.lookup(h)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(b.open()), nil
}

// addBlob makes a blob of size random bytes from rng: kept in memory when
// keep, else remade from a seed when read.
func (u *upstream) addBlob(rng *rand.ChaCha8, size int64, keep bool) (*blob, error) {
	b := &blob{size: size, seed: new([32]byte)}
	if _, err := rng.Read(b.seed[:]); err != nil {
		return nil, err
	}
	h := sha256.New()
	if keep {
		b.data = make([]byte, size)
		if _, err := io.ReadFull(b.open(), b.data); err != nil {
			return nil, err
		}
		b.seed = nil
		h.Write(b.data)
	} else if _, err := io.Copy(h, b.open()); err != nil {
		return nil, err
	}
	b.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	u.mu.Lock()
	u.blobs[b.digest] = b
	u.mu.Unlock()
	return b, nil
}

// addImage makes an image of one layer per size (a small config first)
// and pushes its manifest as repo:tag.
func (u *upstream) addImage(ctx context.Context, rng *rand.ChaCha8, repo, tag string, sizes []int64, keep bool) (*image, error) {
	img := &image{repo: repo, tag: tag}
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	var layers []descriptor
	var diffIDs []string
	for _, size := range sizes {
		b, err := u.addBlob(rng, size, keep)
		if err != nil {
			return nil, err
		}
		img.blobs = append(img.blobs, b)
		layers = append(layers, descriptor{layerType, b.digest, b.size})
		diffIDs = append(diffIDs, b.digest) // uncompressed layers: the diff ID is the digest
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": time.Now().UTC().Format(time.RFC3339Nano),
		"config": map[string]any{"Labels": map[string]string{"load.image": repo + ":" + tag}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(config)
	cfg := &blob{digest: "sha256:" + hex.EncodeToString(sum[:]), size: int64(len(config)), data: config}
	u.mu.Lock()
	u.blobs[cfg.digest] = cfg
	u.mu.Unlock()
	img.blobs = append([]*blob{cfg}, img.blobs...)
	img.manifest, err = json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifestType,
		"config": descriptor{configType, cfg.digest, cfg.size}, "layers": layers,
	})
	if err != nil {
		return nil, err
	}
	msum := sha256.Sum256(img.manifest)
	img.digest = "sha256:" + hex.EncodeToString(msum[:])
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.url+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(img.manifest))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", manifestType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("push %s:%s to the upstream: %w", repo, tag, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("push %s:%s to the upstream: %s", repo, tag, resp.Status)
	}
	return img, nil
}

// newImages pushes new one-layer images to the upstream, up to ahead
// images ahead of the clients, and hands each to fanout clients, until ctx
// ends. The channel is closed then.
func (u *upstream) newImages(ctx context.Context, rng *rand.ChaCha8, layerSize int64, fanout, ahead int) (chan *image, <-chan error) {
	out := make(chan *image, fanout*ahead)
	errc := make(chan error, 1)
	go func() {
		defer close(out)
		for i := 0; ; i++ {
			img, err := u.addImage(ctx, rng, "load/new", fmt.Sprintf("n%d", i), []int64{layerSize}, false)
			if err != nil {
				if !errors.Is(err, context.Canceled) && ctx.Err() == nil {
					errc <- err
				}
				return
			}
			for range fanout {
				select {
				case out <- img:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, errc
}

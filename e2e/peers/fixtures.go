package peers

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Fixture sizes: big enough to span several reads and TCP segments, small
// enough that dozens of pushes stay fast under -race.
const (
	imageLayers    = 3
	indexLayers    = 2
	layerSizeFirst = 64 << 10
	layerSizeStep  = 64 << 10 // layer i is layerSizeFirst + i*layerSizeStep bytes
)

// Image describes a single-platform image pushed by SeedImage (or a child of
// an index pushed by SeedIndex).
type Image struct {
	// Ref is the reference the image was pushed to (empty for index children).
	Ref string
	// Digest is the manifest digest, "sha256:...".
	Digest string
	// RawManifest is the manifest exactly as pushed.
	RawManifest []byte
	// MediaType is the manifest media type.
	MediaType string
	// Config is the config blob digest.
	Config string
	// Layers are the layer blob digests, base layer first.
	Layers []string
	// LayerSizes are the compressed sizes of Layers, in the same order.
	LayerSizes []int64
	// Platform is "os/arch" for index children, empty otherwise.
	Platform string
}

// Blobs returns the config and layer digests: every blob the image needs.
func (img Image) Blobs() []string {
	return append([]string{img.Config}, img.Layers...)
}

// Index describes a multi-platform OCI image index pushed by SeedIndex.
type Index struct {
	// Ref is the reference the index was pushed to.
	Ref string
	// Digest is the index digest, "sha256:...".
	Digest string
	// RawManifest is the index manifest exactly as pushed.
	RawManifest []byte
	// MediaType is the index media type (OCI image index).
	MediaType string
	// Children are the platform images, in index order: linux/amd64,
	// linux/arm64.
	Children []Image
}

// ChildDigests returns the digests of the index's child manifests.
func (idx Index) ChildDigests() []string {
	ds := make([]string, 0, len(idx.Children))
	for _, c := range idx.Children {
		ds = append(ds, c.Digest)
	}
	return ds
}

// SeedImage pushes a new random 3-layer image to ref (for example
// "127.0.0.1:5001/library/app:v1"; plain HTTP is allowed) and describes it.
// With oci true the manifest, config and layers use OCI media types,
// otherwise Docker schema 2 ones. opts are passed to remote.Write (for
// example remote.WithAuth); the test's context is used unless opts set one.
func SeedImage(t testing.TB, ref string, oci bool, opts ...remote.Option) Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("seed image: parse %q: %v", ref, err)
	}
	img, err := randomImage(imageLayers, oci, nil)
	if err != nil {
		t.Fatalf("seed image %s: %v", ref, err)
	}
	if err := remote.Write(r, img, withContext(t.Context(), opts)...); err != nil {
		t.Fatalf("seed image: push %s: %v", ref, err)
	}
	desc, err := describeImage(img)
	if err != nil {
		t.Fatalf("seed image %s: %v", ref, err)
	}
	desc.Ref = ref
	return desc
}

// SeedIndex pushes a new OCI image index with two platforms, linux/amd64 and
// linux/arm64, each a random 2-layer OCI image, to ref and describes it. The
// children are pushed by digest along with the index.
func SeedIndex(t testing.TB, ref string, opts ...remote.Option) Index {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("seed index: parse %q: %v", ref, err)
	}
	platforms := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64"},
	}
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	children := make([]Image, 0, len(platforms))
	for _, p := range platforms {
		img, err := randomImage(indexLayers, true, &p)
		if err != nil {
			t.Fatalf("seed index %s: %s image: %v", ref, p.String(), err)
		}
		desc, err := describeImage(img)
		if err != nil {
			t.Fatalf("seed index %s: %s image: %v", ref, p.String(), err)
		}
		desc.Platform = p.String()
		children = append(children, desc)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        plainImage{img},
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	if err := remote.WriteIndex(r, idx, withContext(t.Context(), opts)...); err != nil {
		t.Fatalf("seed index: push %s: %v", ref, err)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatalf("seed index %s: manifest: %v", ref, err)
	}
	digest, err := idx.Digest()
	if err != nil {
		t.Fatalf("seed index %s: digest: %v", ref, err)
	}
	return Index{
		Ref:         ref,
		Digest:      digest.String(),
		RawManifest: raw,
		MediaType:   string(types.OCIImageIndex),
		Children:    children,
	}
}

// plainImage keeps go-containerregistry from writing "artifactType" (the
// config media type) into the image's index descriptor, which v0.22 does for
// every image. Real multi-platform indexes do not carry it, and skopeo 1.9
// drops the field on copy, so its `copy --all --preserve-digests` refuses
// such an index and a plain copy changes the index digest.
type plainImage struct{ v1.Image }

// ArtifactType reports no artifact type: the manifest is an image, not an
// artifact.
func (plainImage) ArtifactType() (string, error) { return "", nil }

// withContext puts ctx before opts so that a caller's remote.WithContext
// still wins.
func withContext(ctx context.Context, opts []remote.Option) []remote.Option {
	return append([]remote.Option{remote.WithContext(ctx)}, opts...)
}

// randomImage builds an image of n random layers with OCI or Docker schema 2
// media types, for platform when it is not nil (linux/amd64 otherwise).
func randomImage(n int, oci bool, platform *v1.Platform) (v1.Image, error) {
	manifestType, configType, layerType := types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer
	if oci {
		manifestType, configType, layerType = types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer
	}
	if platform == nil {
		platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, manifestType), configType)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS = platform.OS
	cfg.Architecture = platform.Architecture
	cfg.Variant = platform.Variant
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, fmt.Errorf("set platform %s: %w", platform.String(), err)
	}
	layers := make([]v1.Layer, 0, n)
	for i := range n {
		l, err := random.Layer(int64(layerSizeFirst+i*layerSizeStep), layerType)
		if err != nil {
			return nil, fmt.Errorf("random layer %d: %w", i, err)
		}
		layers = append(layers, l)
	}
	if img, err = mutate.AppendLayers(img, layers...); err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	return img, nil
}

// describeImage reads back what a pushed image is made of.
func describeImage(img v1.Image) (Image, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return Image{}, fmt.Errorf("manifest: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Image{}, fmt.Errorf("digest: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return Image{}, fmt.Errorf("media type: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return Image{}, fmt.Errorf("parse manifest: %w", err)
	}
	desc := Image{
		Digest:      digest.String(),
		RawManifest: raw,
		MediaType:   string(mt),
		Config:      m.Config.Digest.String(),
	}
	for _, l := range m.Layers {
		desc.Layers = append(desc.Layers, l.Digest.String())
		desc.LayerSizes = append(desc.LayerSizes, l.Size)
	}
	return desc, nil
}

package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regcache/regcache/e2e/peers"
)

// TestAirGap carries images into a registry with no internet:
//
//   - `regcache export` writes a cached Docker image, a cached
//     two-platform index with a signature (a referrer), and a pushed local
//     image from one regcache; `regcache import` loads the archive into a
//     second one started with --offline and no upstream at all, which
//     serves every image, every platform, to skopeo, crane, containerd and
//     docker with the upstream's digests, and lists the signature;
//   - the archive itself is read by `skopeo copy oci-archive:` and,
//     unpacked, pushed by `crane push --index`;
//   - archives written by `skopeo copy ... oci-archive:` and by `docker
//     save` import too (a docker save image keeps its image ID and layer
//     diff IDs);
//   - an archive with one byte flipped is refused, naming the blob, and
//     nothing of it is stored;
//   - an export against the offline registry's inventory carries only
//     what that registry lacks, and imports there.
func TestAirGap(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	skopeo := peers.Require(t, "skopeo")
	crane := peers.Require(t, "crane")
	docker := requireDocker(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/gapped:v1", false)
	idx := peers.SeedIndex(t, u.Host+"/library/gapped-multi:v1")
	sig := pushSignature(t, u.Host+"/library/gapped-multi", idx.Digest, idx.MediaType, int64(len(idx.RawManifest)))
	tool := peers.SeedImage(t, u.Host+"/src/tool:v1", true)

	a := peers.StartRegcache(t, bin, "--upstream", "docker.io="+u.URL(), "--local-namespace", "lab/*")
	createRule(t, bin, a, "HubLibrary", "docker.io/library/*", "hub/*")
	runOK(t, peers.RunOptions{}, crane, "copy", "--insecure", u.Host+"/src/tool:v1", a.Addr+"/lab/tool:v1")
	b := peers.StartRegcache(t, bin, "--offline")
	work := t.TempDir()

	lab := filepath.Join(work, "lab.tar")
	adminCLI(t, bin, a, "export", "--out", lab, "--progress", "plain", "hub/gapped:v1", "hub/gapped-multi:v1", "lab/tool:v1")
	out := adminCLI(t, bin, b, "import", lab, "--progress", "plain", "-o", "table")
	for _, row := range [][]string{{"hub/gapped", "v1", img.Digest}, {"hub/gapped-multi", "v1", idx.Digest}, {"lab/tool", "v1", tool.Digest}} {
		if !hasLine(out, row...) {
			t.Errorf("import output has no row %v:\n%s", row, out)
		}
	}
	t.Run("pulled from the offline registry", func(t *testing.T) {
		pullEverywhere(t, wantImage(b.Addr+"/hub/gapped:v1", img), wantIndex(b.Addr+"/hub/gapped-multi:v1", idx), wantImage(b.Addr+"/lab/tool:v1", tool))
		_, body := getWithToken(t, b.URL()+"/v2/hub/gapped-multi/referrers/"+idx.Digest, "")
		if !strings.Contains(string(body), sig) {
			t.Errorf("the signature %s is not listed as a referrer after import: %s", sig, body)
		}
	})

	t.Run("the archive read by skopeo and crane", func(t *testing.T) {
		dir := filepath.Join(work, "skopeo-read")
		runSkopeo(t, skopeo, "copy", "--all", "--preserve-digests", "--insecure-policy", "oci-archive:"+lab+":hub/gapped-multi:v1", "oci:"+dir+":v1")
		checkBlobFiles(t, "skopeo", dir, append(idx.ChildDigests(), idx.Digest))
		unpacked := filepath.Join(work, "unpacked")
		untarFile(t, lab, unpacked)
		dst := peers.StartGGCR(t)
		runOK(t, peers.RunOptions{}, crane, "push", "--insecure", "--index", unpacked, dst.Host+"/from-archive:v1")
		raw := runOK(t, peers.RunOptions{}, crane, "manifest", "--insecure", dst.Host+"/from-archive:v1")
		for _, d := range []string{img.Digest, idx.Digest, tool.Digest} {
			if !strings.Contains(raw, d) {
				t.Errorf("crane pushed the archive's layout without %s:\n%s", d, raw)
			}
		}
	})

	t.Run("skopeo oci-archive", func(t *testing.T) {
		extra := peers.SeedImage(t, u.Host+"/library/skopeo-made:v1", true)
		archive := filepath.Join(work, "skopeo.tar")
		runSkopeo(t, skopeo, "copy", "--insecure-policy", "--src-tls-verify=false", "docker://"+u.Host+"/library/skopeo-made:v1", "oci-archive:"+archive+":v1")
		adminCLI(t, bin, b, "import", archive, "--to", "lab/skopeo-made")
		if got := craneDigest(t, crane, b.Addr+"/lab/skopeo-made:v1"); got != extra.Digest {
			t.Errorf("skopeo's archive imported as %s, want %s", got, extra.Digest)
		}
	})

	t.Run("docker save", func(t *testing.T) {
		ref := a.Addr + "/hub/gapped:v1"
		removeDockerImages(t, docker, ref)
		runOK(t, peers.RunOptions{}, docker, "pull", ref)
		want := inspectImage(t, docker, nil, ref)
		archive := filepath.Join(work, "docker.tar")
		runOK(t, peers.RunOptions{}, docker, "save", "-o", archive, ref)
		out := adminCLI(t, bin, b, "import", archive, "--to", "saved", "-o", "json")
		var rep struct {
			Format string `json:"format"`
			Images []struct{ Repository, Tag, Digest string }
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Format != "docker-save" || len(rep.Images) != 1 || rep.Images[0].Repository != "saved/hub/gapped" {
			t.Fatalf("docker save import: %v\n%s", err, out)
		}
		saved := b.Addr + "/saved/hub/gapped:v1"
		cfg := strings.TrimSpace(runOK(t, peers.RunOptions{}, crane, "config", "--insecure", saved))
		if got := sha([]byte(cfg)); got != want.ID {
			t.Errorf("the imported image's config is %s, docker's image ID is %s", got, want.ID)
		}
		// Docker pulls it back as the same image.
		removeDockerImages(t, docker, saved)
		runOK(t, peers.RunOptions{}, docker, "pull", saved)
		if got := inspectImage(t, docker, nil, saved); got.ID != want.ID {
			t.Errorf("docker pulled the imported image as %s, want %s", got.ID, want.ID)
		}
	})

	t.Run("a flipped byte", func(t *testing.T) {
		raw, err := os.ReadFile(lab)
		if err != nil {
			t.Fatal(err)
		}
		layer := img.Layers[1]
		off := blobOffset(t, raw, layer) + img.LayerSizes[1]/2
		raw[off] ^= 0x01
		damaged := filepath.Join(work, "damaged.tar")
		if err := os.WriteFile(damaged, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		c := peers.StartRegcache(t, bin, "--offline")
		stdout, stderr, code := adminCLIExit(t, bin, c, "import", damaged)
		if code != 1 || !strings.Contains(stderr, layer) || !strings.Contains(stderr, "does not match its digest") {
			t.Fatalf("import of a damaged archive: exit %d, want 1 naming %s\n%s\n%s", code, layer, stdout, stderr)
		}
		if n := storedBlobs(t, c); n != 0 {
			t.Fatalf("%d blobs stored from a damaged archive", n)
		}
		if entries, _ := os.ReadDir(filepath.Join(c.DataDir, "blobs", "tmp")); len(entries) != 0 {
			t.Fatalf("staged files left: %d", len(entries))
		}
		if _, body := getWithToken(t, c.URL()+"/v2/_catalog", ""); !strings.Contains(string(body), `"repositories":[]`) {
			t.Fatalf("repositories recorded from a damaged archive: %s", body)
		}
	})

	t.Run("incremental", func(t *testing.T) {
		base := remoteImage(t, u.Host+"/library/gapped:v1")
		extra, err := random.Layer(48<<10, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		next, err := mutate.AppendLayers(base, extra)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(parse(t, u.Host+"/library/gapped:v2"), next, remote.WithContext(t.Context())); err != nil {
			t.Fatal(err)
		}
		inventory := filepath.Join(work, "inventory.txt")
		adminCLI(t, bin, b, "export", "--inventory", "--out", inventory)
		delta := filepath.Join(work, "delta.tar")
		adminCLI(t, bin, a, "export", "--out", delta, "--skip-present", inventory, "hub/gapped:v1", "hub/gapped:v2")
		cfg, _ := next.ConfigName()
		ed, _ := extra.Digest()
		nd, _ := next.Digest()
		want := []string{"sha256:" + cfg.Hex, ed.String(), nd.String()}
		slices.Sort(want)
		if got := archiveBlobs(t, delta); !slices.Equal(got, want) {
			t.Fatalf("the incremental archive carries %v, want only what the offline registry lacks: %v", got, want)
		}
		adminCLI(t, bin, b, "import", delta)
		if got := craneDigest(t, crane, b.Addr+"/hub/gapped:v2"); got != nd.String() {
			t.Fatalf("hub/gapped:v2 after the incremental import: %s, want %s", got, nd)
		}
		runOK(t, peers.RunOptions{}, crane, "pull", "--insecure", b.Addr+"/hub/gapped:v2", filepath.Join(work, "v2.tar"))
	})
}

// pushSignature pushes a signature artifact whose subject is the manifest
// digest of repo (registry/repository) and returns its digest.
func pushSignature(t *testing.T, repo, digest, mediaType string, size int64) string {
	t.Helper()
	sig := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	sig = mutate.ConfigMediaType(sig, "application/vnd.dev.cosign.artifact.sig.v1+json")
	sig, err := mutate.Append(sig, mutate.Addendum{Layer: static.NewLayer([]byte("signature of "+digest), "application/vnd.dev.cosign.simplesigning.v1+json")})
	if err != nil {
		t.Fatal(err)
	}
	sig = mutate.Subject(sig, v1.Descriptor{MediaType: types.MediaType(mediaType), Digest: mustHash(t, digest), Size: size}).(v1.Image)
	d, _ := sig.Digest()
	if err := remote.Write(parse(t, repo+"@"+d.String()), sig, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// remoteImage reads an image from a registry.
func remoteImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	img, err := remote.Image(parse(t, ref), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// blobOffset returns where the bytes of blob digest start in a tar archive.
func blobOffset(t *testing.T, archive []byte, digest string) int64 {
	t.Helper()
	name := "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s is not in the archive", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != name {
			continue
		}
		// The entry's data follows its 512-byte header; find it by content.
		b, _ := io.ReadAll(tr)
		i := bytes.Index(archive, b)
		if i < 0 {
			t.Fatalf("%s: content not found", name)
		}
		return int64(i)
	}
}

// archiveBlobs lists the digests of the blobs of an archive file, sorted.
func archiveBlobs(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hex, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok && hex != "" {
			out = append(out, "sha256:"+hex)
		}
	}
	slices.Sort(out)
	return out
}

// untarFile unpacks a tar archive into dir.
func untarFile(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		out, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil {
			t.Fatal(err)
		}
		out.Close()
	}
}

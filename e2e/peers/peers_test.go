package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"
)

// fakeRegcacheEnv makes the test binary act as a stand-in regcache binary,
// so that the process helpers are tested without depending on cmd/regcache.
const fakeRegcacheEnv = "PEERS_FAKE_REGCACHE"

// fakeToken is what the stand-in regcache writes to admin.token.
const fakeToken = "fake-admin-token"

func TestMain(m *testing.M) {
	if os.Getenv(fakeRegcacheEnv) == "1" {
		os.Exit(fakeRegcache(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeRegcache implements just enough of the regcache CLI contract for the
// process helpers: `serve --listen ADDR --data-dir DIR` and `exit CODE`.
func fakeRegcache(args []string) int {
	if len(args) == 2 && args[0] == "exit" {
		code, _ := strconv.Atoi(args[1])
		fmt.Fprintln(os.Stdout, "to stdout")
		fmt.Fprintln(os.Stderr, "to stderr")
		return code
	}
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintf(os.Stderr, "fake regcache: unknown command %q\n", args)
		return 2
	}
	var listen, dataDir string
	for i := 1; i+1 < len(args); i++ {
		switch args[i] {
		case "--listen":
			listen = args[i+1]
		case "--data-dir":
			dataDir = args[i+1]
		}
	}
	if err := os.WriteFile(filepath.Join(dataDir, "admin.token"), []byte(fakeToken+"\n"), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "fake regcache: %v\n", err)
		return 1
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake regcache: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	}), ReadHeaderTimeout: time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "fake regcache: msg=\"regcache serving\" addr=%s args=%q\n", listen, args)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PEERS_TEST_") || strings.HasPrefix(kv, "REGCACHE_") {
			fmt.Fprintf(os.Stderr, "env %s\n", kv)
		}
	}
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "fake regcache: %v\n", err)
		return 1
	}
	return 0
}

func TestGGCR(t *testing.T) {
	t.Parallel()
	u := StartGGCR(t)
	checkSeeding(t, u.Host)
	checkStop(t, u)
}

func TestDockerRegistry(t *testing.T) {
	t.Parallel()
	u := StartDockerRegistry(t, DockerRegistryOptions{})
	checkSeeding(t, u.Host)
	if _, err := os.Stat(filepath.Join(u.RootDir, "docker", "registry", "v2", "repositories", "library", "app")); err != nil {
		t.Errorf("pushed repository not in RootDir: %v", err)
	}
	checkStop(t, u)
}

func TestDockerRegistryHtpasswd(t *testing.T) {
	t.Parallel()
	const user, pass = "regcache", "s3cret-for-test"
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, fmt.Appendf(nil, "%s:%s\n", user, hash), 0o600); err != nil {
		t.Fatal(err)
	}
	u := StartDockerRegistry(t, DockerRegistryOptions{Htpasswd: htpasswd})
	ref := u.Host + "/private/app:v1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := randomImage(1, true, nil)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		auth authn.Authenticator
	}{
		{"anonymous", authn.Anonymous},
		{"wrong password", &authn.Basic{Username: user, Password: "wrong"}},
	} {
		err := remote.Write(r, img, remote.WithContext(t.Context()), remote.WithAuth(tc.auth))
		checkStatus(t, "push "+tc.name, err, http.StatusUnauthorized)
	}

	auth := remote.WithAuth(&authn.Basic{Username: user, Password: pass})
	seeded := SeedImage(t, ref, true, auth)
	desc, err := remote.Get(r, remote.WithContext(t.Context()), auth)
	if err != nil {
		t.Fatalf("authenticated pull: %v", err)
	}
	if got := desc.Digest.String(); got != seeded.Digest {
		t.Errorf("authenticated pull: digest %s, pushed %s", got, seeded.Digest)
	}
	_, err = remote.Get(r, remote.WithContext(t.Context()))
	checkStatus(t, "anonymous pull", err, http.StatusUnauthorized)
}

// checkStatus asserts that err is a registry error with HTTP status want.
func checkStatus(t *testing.T, what string, err error, want int) {
	t.Helper()
	var terr *transport.Error
	switch {
	case err == nil:
		t.Errorf("%s: succeeded, want HTTP %d", what, want)
	case !errors.As(err, &terr):
		t.Errorf("%s: %v (%T), want a transport.Error with HTTP %d", what, err, err, want)
	case terr.StatusCode != want:
		t.Errorf("%s: HTTP %d (%v), want %d", what, terr.StatusCode, err, want)
	}
}

// checkStop asserts that Stop is idempotent and leaves nothing listening.
func checkStop(t *testing.T, u *Upstream) {
	t.Helper()
	u.Stop()
	u.Stop()
	conn, err := net.DialTimeout("tcp", u.Host, time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", u.Host)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s after Stop: %v, want connection refused", u.Host, err)
	}
}

// checkSeeding pushes a Docker image, an OCI image and an OCI index to host
// and reads each back, by tag and by digest, comparing with what the seeding
// helpers reported.
func checkSeeding(t *testing.T, host string, opts ...remote.Option) {
	t.Helper()
	opts = append([]remote.Option{remote.WithContext(t.Context())}, opts...)

	for _, tc := range []struct {
		tag                       string
		oci                       bool
		manifest, config, layerMT types.MediaType
	}{
		{"docker", false, types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer},
		{"oci", true, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer},
	} {
		ref := host + "/library/app:" + tc.tag
		img := SeedImage(t, ref, tc.oci, opts...)
		if img.MediaType != string(tc.manifest) {
			t.Errorf("%s: MediaType %s, want %s", ref, img.MediaType, tc.manifest)
		}
		if len(img.Layers) != imageLayers || len(img.LayerSizes) != imageLayers {
			t.Errorf("%s: %d layers (%d sizes), want %d", ref, len(img.Layers), len(img.LayerSizes), imageLayers)
		}
		if slices.Contains(img.Layers, img.Config) || len(slices.Compact(slices.Sorted(slices.Values(img.Layers)))) != len(img.Layers) {
			t.Errorf("%s: blobs are not distinct: %v", ref, img.Blobs())
		}
		for _, pulled := range []string{ref, host + "/library/app@" + img.Digest} {
			got := pullImage(t, pulled, opts)
			if got.Digest != img.Digest || !bytes.Equal(got.RawManifest, img.RawManifest) {
				t.Errorf("%s: pulled %s, pushed %s", pulled, got.Digest, img.Digest)
			}
			if !slices.Equal(got.Layers, img.Layers) || got.Config != img.Config {
				t.Errorf("%s: pulled blobs %v, pushed %v", pulled, got.Blobs(), img.Blobs())
			}
			m, err := v1.ParseManifest(bytes.NewReader(got.RawManifest))
			if err != nil {
				t.Fatalf("%s: %v", pulled, err)
			}
			if m.MediaType != tc.manifest || m.Config.MediaType != tc.config {
				t.Errorf("%s: media types %s/%s, want %s/%s", pulled, m.MediaType, m.Config.MediaType, tc.manifest, tc.config)
			}
			for _, l := range m.Layers {
				if l.MediaType != tc.layerMT {
					t.Errorf("%s: layer %s media type %s, want %s", pulled, l.Digest, l.MediaType, tc.layerMT)
				}
			}
		}
	}

	ref := host + "/multi/arch:v1"
	idx := SeedIndex(t, ref, opts...)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Index(r, opts...)
	if err != nil {
		t.Fatalf("pull index %s: %v", ref, err)
	}
	digest, err := pulled.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if digest.String() != idx.Digest {
		t.Errorf("index %s: pulled %s, pushed %s", ref, digest, idx.Digest)
	}
	im, err := pulled.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || idx.MediaType != string(types.OCIImageIndex) {
		t.Errorf("index %s: media type %s (reported %s), want %s", ref, im.MediaType, idx.MediaType, types.OCIImageIndex)
	}
	if len(im.Manifests) != 2 || len(idx.Children) != 2 {
		t.Fatalf("index %s: %d children (reported %d), want 2", ref, len(im.Manifests), len(idx.Children))
	}
	for i, want := range []string{"linux/amd64", "linux/arm64"} {
		d, c := im.Manifests[i], idx.Children[i]
		if d.ArtifactType != "" {
			t.Errorf("index %s child %d: artifactType %q, want none (as real image indexes)", ref, i, d.ArtifactType)
		}
		if d.Digest.String() != c.Digest || d.Platform == nil || d.Platform.String() != want || c.Platform != want {
			t.Errorf("index %s child %d: %s %v, reported %s %s, want platform %s", ref, i, d.Digest, d.Platform, c.Digest, c.Platform, want)
		}
		got := pullImage(t, host+"/multi/arch@"+c.Digest, opts)
		if !slices.Equal(got.Layers, c.Layers) || len(c.Layers) != indexLayers || got.MediaType != string(types.OCIManifestSchema1) {
			t.Errorf("index %s child %s: pulled layers %v (%s), reported %v", ref, want, got.Layers, got.MediaType, c.Layers)
		}
	}
}

// pullImage pulls ref, verifies every blob against its digest, and
// describes the image.
func pullImage(t *testing.T, ref string, opts []remote.Option) Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, opts...)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	verifyBlobs(t, ref, img)
	desc, err := describeImage(img)
	if err != nil {
		t.Fatalf("describe %s: %v", ref, err)
	}
	return desc
}

// verifyBlobs downloads the config and every layer of img and checks them
// against their digests and sizes.
func verifyBlobs(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatalf("%s: manifest: %v", ref, err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatalf("%s: config: %v", ref, err)
	}
	if h, _, _ := v1.SHA256(bytes.NewReader(raw)); h != m.Config.Digest || int64(len(raw)) != m.Config.Size {
		t.Errorf("%s: config is %s (%d bytes), manifest says %s (%d)", ref, h, len(raw), m.Config.Digest, m.Config.Size)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatalf("%s: layers: %v", ref, err)
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("%s: layer %d: %v", ref, i, err)
		}
		h, n, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: read layer %d: %v", ref, i, err)
		}
		if want := m.Layers[i]; h != want.Digest || n != want.Size {
			t.Errorf("%s: layer %d is %s (%d bytes), manifest says %s (%d)", ref, i, h, n, want.Digest, want.Size)
		}
	}
}

// TestRegcacheProcess exercises StartRegcache, Restart, Kill, Token and Run
// against the test binary acting as a stand-in regcache.
func TestRegcacheProcess(t *testing.T) {
	t.Setenv(fakeRegcacheEnv, "1")
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	r := StartRegcache(t, bin, "--extra", "x")
	if r.DataDir == "" || r.Token() != fakeToken {
		t.Fatalf("DataDir %q, token %q", r.DataDir, r.Token())
	}
	get := func() int {
		t.Helper()
		resp, err := http.Get(r.URL() + "/v2/")
		if err != nil {
			t.Fatalf("GET /v2/: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("GET /v2/: %d", code)
	}
	addr := r.Addr
	r.Restart()
	if r.Addr != addr {
		t.Logf("restart moved %s to %s (port taken meanwhile)", addr, r.Addr)
	}
	get()
	r.Kill()
	r.Kill()
	if _, err := net.DialTimeout("tcp", r.Addr, time.Second); err == nil {
		t.Fatal("still listening after Kill")
	}
	r.Restart()
	get()
	r.Stop()
	r.Stop()
	if _, err := net.DialTimeout("tcp", r.Addr, time.Second); err == nil {
		t.Fatal("still listening after Stop")
	}
	// A port taken while the server was down: Restart moves to another.
	taken, err := net.Listen("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	old := r.Addr
	r.Restart()
	if r.Addr == old || !strings.Contains(r.Logs(), "address already in use") {
		t.Errorf("restart with port %s taken: now on %s", old, r.Addr)
	}
	get()
	r.Stop()
	if logs := r.Logs(); !strings.Contains(logs, `"--extra" "x"`) {
		t.Errorf("logs lack the extra arguments:\n%s", logs)
	}

	dir := t.TempDir()
	t.Setenv("REGCACHE_INHERITED", "1")
	r2 := StartRegcacheWith(t, bin, ServeOptions{Env: []string{"PEERS_TEST_VAR=hello"}}, "--data-dir", dir)
	if r2.DataDir != dir || r2.Token() != fakeToken {
		t.Errorf("explicit --data-dir: DataDir %q, token %q", r2.DataDir, r2.Token())
	}
	if logs := r2.Logs(); !strings.Contains(logs, "PEERS_TEST_VAR=hello") || strings.Contains(logs, "REGCACHE_INHERITED") {
		t.Errorf("server environment: want PEERS_TEST_VAR and no REGCACHE_ variable; output:\n%s", logs)
	}

	stdout, stderr, code := Run(t, bin, "exit", "3")
	if stdout != "to stdout\n" || stderr != "to stderr\n" || code != 3 {
		t.Errorf("Run: stdout %q, stderr %q, code %d", stdout, stderr, code)
	}
	if _, _, code := Run(t, bin, "exit", "0"); code != 0 {
		t.Errorf("Run exit 0: code %d", code)
	}
}

// TestBuildRegcache builds the real binary once cmd/regcache exists.
func TestBuildRegcache(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("../../cmd/regcache"); err != nil {
		t.Skipf("cmd/regcache not written yet: %v", err)
	}
	bin := BuildRegcache(t)
	if again := BuildRegcache(t); again != bin {
		t.Errorf("second BuildRegcache returned %s, first %s", again, bin)
	}
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("built binary %s: %v", bin, err)
	}
}

package e2e

import (
	"archive/tar"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
)

// createRule creates a cache rule through regcache's CLI.
func createRule(t testing.TB, bin string, rc *peers.Regcache, name, source, target string) {
	t.Helper()
	runOK(t, peers.RunOptions{}, bin, "cache", "create", "-n", name, "-s", source, "-t", target,
		"--server", rc.URL(), "--token", rc.Token())
}

// TestDockerPull is Docker, regcache's first user: `docker pull
// 127.0.0.1:<port>/<target>:<tag>` on the machine's Docker Engine (which
// treats loopback registries as insecure) through a wildcard rule, for a
// Docker schema 2 image and both platforms of an OCI index. Docker must
// record the upstream's digests: the config digest as the image ID and the
// manifest (or index) digest in RepoDigests. Then the images are removed,
// the upstream is stopped, and the same pulls are served from the cache.
func TestDockerPull(t *testing.T) {
	t.Parallel()
	docker := requireDocker(t)
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/app:v1", false)
	idx := peers.SeedIndex(t, u.Host+"/library/multi:v1")
	rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+u.URL())
	createRule(t, bin, rc, "HubLibrary", "docker.io/library/*", "hub/*")

	appRef, multiRef := rc.Addr+"/hub/app:v1", rc.Addr+"/hub/multi:v1"
	removeDockerImages(t, docker, appRef, multiRef)
	pullAll := func(t *testing.T) {
		runOK(t, peers.RunOptions{}, docker, "pull", appRef)
		checkDockerImage(t, inspectImage(t, docker, nil, appRef), appRef, img.Config, img.Digest)
		runOK(t, peers.RunOptions{}, docker, "image", "rm", appRef)
		// One platform at a time: Docker 20.10 keeps the index digest
		// (RepoDigests) with the image pulled first under the tag.
		for i, platform := range []string{"linux/amd64", "linux/arm64"} {
			runOK(t, peers.RunOptions{}, docker, "pull", "--platform", platform, multiRef)
			got := inspectImage(t, docker, nil, multiRef)
			checkDockerImage(t, got, multiRef+" ("+platform+")", idx.Children[i].Config, idx.Digest)
			if want := strings.TrimPrefix(platform, "linux/"); got.Architecture != want {
				t.Errorf("%s (%s): architecture %s, want %s", multiRef, platform, got.Architecture, want)
			}
			runOK(t, peers.RunOptions{}, docker, "image", "rm", multiRef)
		}
	}
	t.Run("cold", pullAll)
	if !strings.Contains(rc.Logs(), "cached blob") {
		t.Fatalf("no blob was fetched from the upstream:\n%s", rc.Logs())
	}
	u.Stop()
	t.Run("upstream stopped", pullAll)
}

// TestDockerRegistryMirror is Docker's registry-mirrors: a second dockerd,
// started by the test with its own roots, socket and containerd and with
// deploy/docker/daemon.json (regcache's address filled in) as its config
// file, pulls docker.io/library/<image>. Docker sends the Docker Hub path
// without a registry (/v2/library/mirrored/...) to the mirror; regcache,
// started with --default-registry docker.io, serves it through the rule
// whose source covers docker.io/library/mirrored although the rule's target
// is hub/*. regcache's access log must show Docker's requests, and the pull
// must work again with the upstream stopped.
func TestDockerRegistryMirror(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	peers.Require(t, "dockerd")
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/mirrored:v1", false)
	idx := peers.SeedIndex(t, u.Host+"/library/mirrored-multi:v1")
	rc := peers.StartRegcache(t, bin, "--default-registry", "docker.io", "--upstream", "docker.io="+u.URL())
	createRule(t, bin, rc, "HubLibrary", "docker.io/library/*", "hub/*")

	shipped, err := os.ReadFile(deployFile(t, "docker/daemon.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := replaceAll(t, "deploy/docker/daemon.json", string(shipped), "regcache.example:5000", rc.Addr)
	var parsed struct {
		Mirrors []string `json:"registry-mirrors"`
	}
	if err := json.Unmarshal([]byte(cfg), &parsed); err != nil || len(parsed.Mirrors) != 1 {
		t.Fatalf("deploy/docker/daemon.json: want one registry mirror: %v\n%s", err, cfg)
	}
	cfgPath := filepath.Join(t.TempDir(), "daemon.json")
	writeFile(t, cfgPath, cfg)

	dd := startDockerd(t, startContainerd(t), cfgPath)
	if mirrors := dd.Docker(t, "info", "--format", "{{json .RegistryConfig.Mirrors}}"); !strings.Contains(mirrors, "http://"+rc.Addr+"/") {
		t.Fatalf("the test's dockerd does not use regcache as its mirror: %s", mirrors)
	}
	hostFlag := []string{"-H", dd.Host}
	pullAll := func(t *testing.T) {
		dd.Docker(t, "pull", "docker.io/library/mirrored:v1")
		checkDockerImage(t, inspectImage(t, dd.docker, hostFlag, "mirrored:v1"), "mirrored:v1", img.Config, img.Digest)
		// A short name, as users type it.
		dd.Docker(t, "pull", "mirrored-multi:v1")
		checkDockerImage(t, inspectImage(t, dd.docker, hostFlag, "mirrored-multi:v1"), "mirrored-multi:v1", idx.Children[0].Config, idx.Digest)
		for _, p := range []string{"/v2/library/mirrored/manifests/v1", "/v2/library/mirrored-multi/manifests/v1"} {
			if !logged(rc.Logs(), request{Path: p, Status: "200", Agent: "docker/"}) {
				t.Errorf("regcache's access log has no successful request for %s from Docker:\n%s", p, rc.Logs())
			}
		}
		dd.Docker(t, "image", "rm", "mirrored:v1", "mirrored-multi:v1")
	}
	t.Run("cold", pullAll)
	u.Stop()
	t.Run("upstream stopped", pullAll)
}

// pushDigestRE finds the digest in `docker push` output
// ("v1: digest: sha256:... size: 1234").
var pushDigestRE = regexp.MustCompile(`digest: (sha256:[0-9a-f]{64}) size:`)

// TestDockerfile builds the image with `make image` (a static binary FROM
// scratch; no base image is pulled), checks its metadata (non-root user,
// port 5000, the data volume, the entrypoint) and that the binary is static,
// runs it with host networking, a read-only root filesystem, no capabilities
// and a mounted config file holding an upstream and a rule, and pulls through
// the containerised regcache with `docker pull`. It then pushes the built
// regcache image into that upstream (a docker-registry the rule covers) and
// pulls it back through the containerised regcache, with Docker and, blob by
// blob, with go-containerregistry.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	docker := requireDocker(t)
	makeBin := peers.Require(t, "make")
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	tag := "regcache-e2e:" + suffix
	dir := t.TempDir()
	// The build cache gives the built image the ID of any image built from
	// the same sources, such as a user's regcache:dev. userTag, given to the
	// built image below, stands for that user's tag: the test's cleanup must
	// leave it alone. Registered first, this check runs after every other
	// cleanup.
	userTag := "regcache-e2e-user:" + suffix
	userTagged := false
	t.Cleanup(func() {
		if !userTagged {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, docker, "image", "inspect", "--format", "{{.ID}}", userTag).CombinedOutput(); err != nil {
			t.Errorf("the test's cleanup removed %s, a tag it did not create for itself (as a user's regcache:dev): %v\n%s", userTag, err, out)
			return
		}
		if out, err := exec.CommandContext(ctx, docker, "image", "rm", userTag).CombinedOutput(); err != nil {
			t.Errorf("docker image rm %s: %v\n%s", userTag, err, out)
		}
	})
	removeDockerTags(t, docker, tag)

	// The binary and the build context go to the test's directory, not bin/.
	binPath := filepath.Join(dir, "bin", "regcache")
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	makeCmd := exec.CommandContext(ctx, makeBin, "-C", repoRoot(t), "image",
		"IMAGE="+tag, "IMAGE_BIN="+binPath, "IMAGE_CONTEXT="+filepath.Join(dir, "context"))
	if out, err := makeCmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Logf("make image took %v", time.Since(start).Round(time.Second))
	checkStatic(t, binPath)

	built := inspectImage(t, docker, nil, tag)
	runOK(t, peers.RunOptions{}, docker, "tag", tag, userTag)
	userTagged = true
	switch {
	case built.Config.User != "65532:65532":
		t.Errorf("image user %q, want the non-root 65532:65532", built.Config.User)
	case !slices.Equal(built.Config.Entrypoint, []string{"/usr/local/bin/regcache"}) || !slices.Equal(built.Config.Cmd, []string{"serve"}):
		t.Errorf("entrypoint %q, cmd %q; want [/usr/local/bin/regcache] [serve]", built.Config.Entrypoint, built.Config.Cmd)
	}
	if _, ok := built.Config.ExposedPorts["5000/tcp"]; !ok {
		t.Errorf("exposed ports %v, want 5000/tcp", built.Config.ExposedPorts)
	}
	if _, ok := built.Config.Volumes["/var/lib/regcache"]; !ok {
		t.Errorf("volumes %v, want /var/lib/regcache", built.Config.Volumes)
	}
	for _, kv := range []string{"REGCACHE_DATA_DIR=/var/lib/regcache", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"} {
		if !slices.Contains(built.Config.Env, kv) {
			t.Errorf("image environment %q lacks %s", built.Config.Env, kv)
		}
	}

	up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
	img := peers.SeedImage(t, up.Host+"/library/app:v1", false)
	cfgPath := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`upstreams:
  docker.io: %s
rules:
  - name: hub-library
    source: docker.io/library/*
    target: hub/*
`, up.URL()))

	addr := closedLoopbackAddr(t)
	ref := addr + "/hub/app:v1"                                               // a fixture
	pushed, back := up.Host+"/library/regcache:e2e", addr+"/hub/regcache:e2e" // the built image
	// Registered before the container's removal, so run after it.
	removeDockerTags(t, docker, ref, pushed, back)
	container := "regcache-e2e-" + suffix
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := exec.CommandContext(ctx, docker, "logs", container).CombinedOutput()
			t.Logf("container %s output:\n%s", container, tail(string(out), 100))
		}
		if out, err := exec.CommandContext(ctx, docker, "rm", "--force", "--volumes", container).CombinedOutput(); err != nil {
			t.Logf("docker rm %s: %v\n%s", container, err, out)
		}
	})
	runOK(t, peers.RunOptions{}, docker, "run", "--detach", "--name", container,
		"--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		"--volume", cfgPath+":/etc/regcache/config.yaml:ro",
		"--env", "REGCACHE_CONFIG=/etc/regcache/config.yaml",
		"--env", "REGCACHE_LISTEN="+addr,
		tag)
	waitHTTP(t, "http://"+addr+"/readyz", 30*time.Second, func() error {
		out, err := exec.CommandContext(t.Context(), docker, "inspect", "--format", "{{.State.Running}}", container).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "true" {
			return fmt.Errorf("container %s is not running: %v %s", container, err, out)
		}
		return nil
	})
	if top := runOK(t, peers.RunOptions{}, docker, "top", container, "-o", "pid,uid"); !strings.Contains(top, "65532") {
		t.Errorf("the container's process does not run as uid 65532:\n%s", top)
	}

	checkImageFiles(t, docker, container)

	// A fixture, pulled with Docker through the containerised regcache.
	runOK(t, peers.RunOptions{}, docker, "pull", ref)
	checkDockerImage(t, inspectImage(t, docker, nil, ref), ref, img.Config, img.Digest)

	// The regcache image itself, pushed to the upstream and pulled back.
	runOK(t, peers.RunOptions{}, docker, "tag", tag, pushed)
	out := runOK(t, peers.RunOptions{}, docker, "push", pushed)
	m := pushDigestRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no digest in docker push output:\n%s", out)
	}
	runOK(t, peers.RunOptions{}, docker, "pull", back)
	checkDockerImage(t, inspectImage(t, docker, nil, back), back, built.ID, m[1])
	checkSameImage(t, pushed, back)

	if stdout, stderr, _ := peers.Run(t, docker, "logs", container); !strings.Contains(stdout+stderr, "dataDir=/var/lib/regcache") {
		t.Errorf("the container's regcache does not use the volume /var/lib/regcache:\n%s%s", stdout, stderr)
	}
}

// removeDockerTags registers a cleanup that removes the tags refs from the
// machine's Docker Engine, by name and without --force: Docker drops the
// tag (and the digest references of its repository that a push or pull
// added); the image goes only when no other tag, a user's included, still
// names it. Never by image ID: an ID names every tag of the image.
func removeDockerTags(t testing.TB, docker string, refs ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, ref := range refs {
			out, err := exec.CommandContext(ctx, docker, "image", "rm", ref).CombinedOutput()
			if err != nil && !strings.Contains(strings.ToLower(string(out)), "no such image") {
				t.Errorf("docker image rm %s: %v\n%s", ref, err, out)
			}
		}
	})
}

// checkStatic asserts that the binary at path is a statically linked ELF
// file (no program interpreter), as a FROM scratch image needs.
func checkStatic(t testing.TB, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s is dynamically linked (it has a program interpreter); the image needs CGO_ENABLED=0", path)
		}
	}
}

// checkImageFiles exports the container's filesystem and asserts that the
// image holds what regcache needs (the binary, the CA bundle for HTTPS
// upstreams, passwd and group naming the non-root user) and no shell.
func checkImageFiles(t testing.TB, docker, container string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), docker, "export", container)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("docker export %s: %v", container, err)
		}
		var b []byte
		if h.Typeflag == tar.TypeReg && h.Size < 1<<20 {
			if b, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		files[strings.TrimSuffix(h.Name, "/")] = b
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("docker export %s: %v", container, err)
	}
	for _, f := range []string{"usr/local/bin/regcache", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group", "var/lib/regcache"} {
		if _, ok := files[f]; !ok {
			t.Errorf("the image has no /%s", f)
		}
	}
	if !strings.Contains(string(files["etc/passwd"]), "regcache:x:65532:65532:") {
		t.Errorf("/etc/passwd does not name the user regcache (65532):\n%s", files["etc/passwd"])
	}
	if !strings.Contains(string(files["etc/ssl/certs/ca-certificates.crt"]), "BEGIN CERTIFICATE") {
		t.Error("/etc/ssl/certs/ca-certificates.crt holds no certificate")
	}
	for _, sh := range []string{"bin/sh", "usr/bin/sh", "bin/busybox"} {
		if _, ok := files[sh]; ok {
			t.Errorf("the image has /%s: the final image should hold regcache and its data only", sh)
		}
	}
}

package peers

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"go.yaml.in/yaml/v3"
)

// Upstream is a running upstream registry on loopback, speaking plain HTTP.
type Upstream struct {
	// Host is "127.0.0.1:port", the registry part of references pushed to
	// or pulled from this upstream.
	Host string
	// RootDir is the storage root of a docker-registry upstream, so that
	// tests can inspect or damage stored content; empty for StartGGCR.
	RootDir string

	once sync.Once
	stop func()
	logs func() string
}

// URL returns the upstream's base URL, "http://" + Host.
func (u *Upstream) URL() string { return "http://" + u.Host }

// Stop shuts the upstream down; afterwards connections to Host are refused.
// It is safe to call more than once and is also run by t.Cleanup.
func (u *Upstream) Stop() { u.once.Do(u.stop) }

// Logs returns what the upstream process has written so far (empty for the
// in-process registry, which logs nothing).
func (u *Upstream) Logs() string {
	if u.logs == nil {
		return ""
	}
	return u.logs()
}

// StartGGCR starts go-containerregistry's in-memory registry (pkg/registry)
// in process on a 127.0.0.1 port. It has no authentication and supports
// pushes, so it is the quickest upstream for tests that do not need auth.
func StartGGCR(t testing.TB) *Upstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start ggcr registry: listen: %v", err)
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	u := &Upstream{Host: l.Addr().String()}
	u.stop = func() {
		// Close, not Shutdown: a test stops an upstream to see regcache
		// cope with it vanishing, including mid-stream.
		if err := srv.Close(); err != nil {
			t.Errorf("stop ggcr registry %s: %v", u.Host, err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ggcr registry %s: serve: %v", u.Host, err)
		}
	}
	t.Cleanup(u.Stop)
	return u
}

// DockerRegistryOptions configures StartDockerRegistry.
type DockerRegistryOptions struct {
	// Htpasswd is the path of an existing htpasswd file (bcrypt entries).
	// When set, the registry requires HTTP basic authentication for every
	// request.
	Htpasswd string
}

// dockerRegistryConfig is the subset of distribution 2.8's configuration
// file that tests need.
type dockerRegistryConfig struct {
	Version string `yaml:"version"`
	Log     struct {
		Level     string `yaml:"level"`
		AccessLog struct {
			Disabled bool `yaml:"disabled"`
		} `yaml:"accesslog"`
	} `yaml:"log"`
	Storage struct {
		Filesystem struct {
			RootDirectory string `yaml:"rootdirectory"`
		} `yaml:"filesystem"`
		Delete struct {
			Enabled bool `yaml:"enabled"`
		} `yaml:"delete"`
	} `yaml:"storage"`
	HTTP struct {
		Addr   string `yaml:"addr"`
		Secret string `yaml:"secret"`
	} `yaml:"http"`
	Auth map[string]map[string]string `yaml:"auth,omitempty"`
}

// StartDockerRegistry starts Debian's docker-registry (distribution 2.8) on
// a 127.0.0.1 port with filesystem storage in a temporary directory and
// deletes enabled. The test is skipped (failed in CI) when the program is not
// installed. It returns once GET /v2/ answers 200 (or 401 with Htpasswd).
func StartDockerRegistry(t testing.TB, opts DockerRegistryOptions) *Upstream {
	t.Helper()
	bin := Require(t, "docker-registry")
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")

	var cfg dockerRegistryConfig
	cfg.Version = "0.1"
	cfg.Log.Level = "warn"
	cfg.Log.AccessLog.Disabled = true
	cfg.Storage.Filesystem.RootDirectory = root
	cfg.Storage.Delete.Enabled = true
	// A fixed secret silences the "generated random secret" warning.
	cfg.HTTP.Secret = randomHex(t, 16)
	if opts.Htpasswd != "" {
		// distribution 2.8 does not fail on a missing htpasswd file: it
		// provisions a user "docker" with a random password, so a wrong
		// path would silently give an upstream nobody can log in to.
		if _, err := os.Stat(opts.Htpasswd); err != nil {
			t.Fatalf("start docker-registry: htpasswd file: %v", err)
		}
		cfg.Auth = map[string]map[string]string{
			"htpasswd": {"realm": "regcache-test", "path": opts.Htpasswd},
		}
	}

	out := &syncBuffer{}
	var (
		p       *process
		host    string
		lastErr error
	)
	for attempt := 0; attempt < bindAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("start docker-registry: %v", err)
		}
		host = loopback(port)
		cfg.HTTP.Addr = host
		cfgPath := filepath.Join(dir, "config.yml")
		raw, err := yaml.Marshal(&cfg)
		if err != nil {
			t.Fatalf("start docker-registry: encode config: %v", err)
		}
		if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
			t.Fatalf("start docker-registry: write config: %v", err)
		}
		off := out.Len()
		// REGISTRY_* variables would override the config file.
		p, err = startProcess(bin, []string{"serve", cfgPath}, childEnv(nil, "REGISTRY_"), out)
		if err != nil {
			t.Fatalf("start docker-registry: %v", err)
		}
		lastErr = waitReady(t.Context(), "http://"+host+"/v2/", nil, func(code int) bool {
			return code == http.StatusOK || code == http.StatusUnauthorized
		}, p, readyTimeout)
		if lastErr == nil {
			break
		}
		p.kill()
		if !errors.Is(lastErr, errExited) || !bindFailed(out.since(off)) {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start docker-registry: %v\nconfig:\n%s\noutput:\n%s", lastErr, fileForMessage(t, filepath.Join(dir, "config.yml")), out.String())
	}

	u := &Upstream{Host: host, RootDir: root, logs: out.String}
	u.stop = p.kill
	t.Cleanup(func() {
		u.Stop()
		if t.Failed() {
			if logs := out.String(); logs != "" {
				t.Logf("docker-registry %s output:\n%s", host, logs)
			}
		}
	})
	return u
}

// randomHex returns n random bytes, hex encoded.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

// fileForMessage returns the content of path, or the read error as text: it is
// only used to enrich failure messages.
func fileForMessage(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	return string(b)
}

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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/storage"
)

// fsckData fills a store in dir/blobs and dir/meta.db (as serve lays it
// out) with a tagged manifest and a layer, and returns the layer's path.
func fsckData(t *testing.T, ctx context.Context, dir string, blobs *storage.Blobs, meta *storage.Meta) string {
	t.Helper()
	for _, b := range []struct {
		content []byte
		tag     string
	}{{[]byte(`{"schemaVersion":2}`), "v1"}, {bytes.Repeat([]byte("layer "), 50000), ""}} {
		sum := sha256.Sum256(b.content)
		d := "sha256:" + hex.EncodeToString(sum[:])
		if err := blobs.Put(ctx, d, int64(len(b.content)), bytes.NewReader(b.content)); err != nil {
			t.Fatal(err)
		}
		l := storage.Link{Digest: d, Size: int64(len(b.content)), LinkedAt: time.Now()}
		var tag *storage.Tag
		if b.tag != "" {
			l.MediaType = "application/vnd.oci.image.manifest.v1+json"
			tag = &storage.Tag{Name: b.tag, FetchedAt: time.Now()}
		}
		if err := meta.Link(ctx, "hub/app", l, tag); err != nil {
			t.Fatal(err)
		}
		if b.tag == "" {
			return filepath.Join(dir, "blobs", "sha256", d[7:9], d[7:])
		}
	}
	return ""
}

// damage flips a byte of the file at path.
func damage(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func decodeReport(t *testing.T, stdout string) storage.CheckReport {
	t.Helper()
	var r storage.CheckReport
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("output %q is not a check report: %v", stdout, err)
	}
	return r
}

// fsck of a stopped server's data directory: a damaged layer is found
// (exit status 1), --repair quarantines it (exit status 0), and the data
// directory comes from the flag, the environment or the config file.
func TestFsckDataDir(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	layer := fsckData(t, ctx, dir, blobs, meta)
	meta.Close()
	damage(t, layer)

	stdout, _, err := runCLI(t, ctx, nil, "fsck", "--data-dir", dir, "-o", "json")
	if err == nil || exitStatus(io.Discard, err) != exitError || !strings.Contains(err.Error(), "--repair") {
		t.Errorf("fsck of a damaged store: %v (exit %d); want exit 1 and a hint to --repair", err, exitStatus(io.Discard, err))
	}
	r := decodeReport(t, stdout)
	if r.Blobs != 2 || r.CorruptBlobs != 1 || r.BadLinks != 1 || r.Unrepaired != 2 || r.Repair {
		t.Errorf("report %+v; want 2 blobs, 1 corrupt, its link bad, nothing repaired", r)
	}
	if _, err := os.Stat(layer); err != nil {
		t.Errorf("fsck without --repair moved the layer: %v", err)
	}

	stdout, _, err = runCLI(t, ctx, map[string]string{"REGCACHE_DATA_DIR": dir}, "fsck", "--repair")
	if err != nil {
		t.Fatalf("fsck --repair: %v\n%s", err, stdout)
	}
	for _, want := range []string{"KIND", "corrupt-blob", "bad-link", "hub/app@sha256:", "moved to " + filepath.Join(dir, "quarantine"),
		"removed from the metadata", "Checked 2 blobs", "1 corrupt blob", "2 repaired, 0 left"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("fsck --repair table lacks %q:\n%s", want, stdout)
		}
	}
	if _, err := os.Stat(layer); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the corrupt layer is still in the store: %v", err)
	}

	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, []byte("dataDir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, err = runCLI(t, ctx, nil, "fsck", "--config", config, "-o", "table")
	if err != nil || !strings.Contains(stdout, "No problems found.") || !strings.Contains(stdout, "Checked 1 blob (") {
		t.Errorf("fsck after the repair: %v\n%s", err, stdout)
	}
}

// fsck refuses a data directory a running server holds, naming that
// process and how to check it instead; a directory that is not a data
// directory is refused and not created; --server and --data-dir conflict.
func TestFsckRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	_, _, err = runCLI(t, ctx, nil, "fsck", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(err.Error(), "--server") {
		t.Errorf("fsck of a data directory in use: %v; want the holder's pid and a pointer to --server", err)
	}

	missing := filepath.Join(t.TempDir(), "typo")
	_, _, err = runCLI(t, ctx, nil, "fsck", "--data-dir", missing)
	if err == nil || !strings.Contains(err.Error(), "not a regcache data directory") {
		t.Errorf("fsck of a missing directory: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fsck created %s: %v", missing, err)
	}

	_, _, err = runCLI(t, ctx, nil, "fsck", "--data-dir", dir, "--server", "http://127.0.0.1:1")
	if exitStatus(io.Discard, err) != exitUsage {
		t.Errorf("fsck --data-dir --server: %v; want a usage error", err)
	}
}

// fsck --server has the running server check its own store.
func TestFsckServer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newCLIServer(t)
	layer := fsckData(t, ctx, s.dir, s.blobs, s.meta)
	args := []string{"fsck", "--server", s.url, "--token", cliToken}

	stdout, _, err := runCLI(t, ctx, nil, append(args, "-o", "yaml")...)
	if err != nil || !strings.Contains(stdout, "blobs: 2\n") || !strings.Contains(stdout, "problems: []") {
		t.Errorf("fsck --server of a sound store: %v\n%s", err, stdout)
	}
	damage(t, layer)
	stdout, _, err = runCLI(t, ctx, nil, append(args, "-o", "json")...)
	if r := decodeReport(t, stdout); exitStatus(io.Discard, err) != exitError || r.CorruptBlobs != 1 {
		t.Errorf("fsck --server of a damaged store: %v, %+v; want exit 1 and the corrupt layer", err, r)
	}
	stdout, _, err = runCLI(t, ctx, nil, append(args, "--repair", "-o", "json")...)
	if r := decodeReport(t, stdout); err != nil || r.Repaired != 2 || !r.Repair {
		t.Errorf("fsck --server --repair: %v, %+v", err, r)
	}
	if _, _, err := runCLI(t, ctx, nil, "fsck", "--server", s.url, "--token", "wrong-token-0123456789"); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("fsck --server with a wrong token: %v", err)
	}
}

package cache

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"
)

// A manifest read once is served from memory (its file may be gone), only
// while linked to the repository asked for; bytes that do not match their
// digest are never kept, so that a repaired file is read again.
func TestHotManifests(t *testing.T) {
	t.Parallel()
	f := newFixture(t, staticCreds{}, hubRule)
	img := f.push(t, "library/app:v1")
	raw, _ := img.RawManifest()
	digest, _ := img.Digest()
	ctx := t.Context()
	read := reader(t)

	c, err := f.puller.Manifest(ctx, "hub/app", "v1")
	if got := read(c, err); !bytes.Equal(got, raw) || !bytes.Equal(c.Bytes, raw) {
		t.Fatalf("first read: %d bytes (in memory: %d), want the %d of the manifest", len(got), len(c.Bytes), len(raw))
	}
	file, _, err := f.blobs.Open(ctx, digest.String())
	if err != nil {
		t.Fatal(err)
	}
	path := file.(*os.File).Name()
	file.Close()

	// The file moves away: the hit is answered from memory.
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	c, err = f.puller.Manifest(ctx, "hub/app", "v1")
	if got := read(c, err); !bytes.Equal(got, raw) {
		t.Fatalf("hit with the file away: %q", got)
	}
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}

	// Unlinked: the copy in memory is not served; the manifest is fetched.
	gets := f.count(http.MethodGet, "/v2/library/app/manifests/v1")
	if err := f.meta.Unlink(ctx, "hub/app", digest.String()); err != nil {
		t.Fatal(err)
	}
	c, err = f.puller.Manifest(ctx, "hub/app", "v1")
	if got := read(c, err); !bytes.Equal(got, raw) || f.count(http.MethodGet, "/v2/library/app/manifests/v1") != gets+1 {
		t.Fatalf("after the unlink: %d bytes, %d upstream GETs (want %d)", len(got), f.count(http.MethodGet, "/v2/library/app/manifests/v1"), gets+1)
	}

	// A puller that never read it finds the file damaged: it serves the
	// file as it is (fsck repairs it) and keeps nothing.
	other := NewPuller(f.store, f.eps, staticCreds{}, f.blobs, f.meta, slog.New(slog.DiscardHandler), Options{})
	t.Cleanup(other.Close)
	damaged := bytes.Clone(raw)
	damaged[len(damaged)/2] ^= 1
	if err := os.WriteFile(path, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = other.Manifest(ctx, "hub/app", "v1")
	if got := read(c, err); !bytes.Equal(got, damaged) || c.Bytes != nil {
		t.Fatalf("damaged file: %d bytes (in memory: %v)", len(got), c.Bytes != nil)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = other.Manifest(ctx, "hub/app", "v1")
	if got := read(c, err); !bytes.Equal(got, raw) {
		t.Fatal("the repaired file is not read: a damaged copy was kept in memory")
	}
}

// An OutcomeContext is filled in by reads as WithOutcome's context is,
// through contexts derived from it, and keeps its parent's values and
// cancellation.
func TestOutcomeContext(t *testing.T) {
	t.Parallel()
	f := newFixture(t, staticCreds{}, hubRule)
	f.push(t, "library/app:v1")
	read := reader(t)
	type other struct{}
	parent, cancel := context.WithCancel(context.WithValue(t.Context(), other{}, "v"))
	defer cancel()
	for _, want := range []Source{SourceMiss, SourceHit} {
		var o Outcome
		var c OutcomeContext
		c.Init(parent, &o)
		ctx, stop := context.WithTimeout(&c, time.Minute)
		read(f.puller.Manifest(ctx, "hub/app", "v1"))
		stop()
		if o.Source != want || o.Rule != hubRule.Name {
			t.Errorf("outcome %+v; want %s of rule %s", o, want, hubRule.Name)
		}
		if c.Value(other{}) != "v" {
			t.Errorf("the parent's value is lost")
		}
	}
	var c OutcomeContext
	c.Init(parent, &Outcome{})
	derived, stop := context.WithCancel(&c)
	defer stop()
	cancel()
	<-derived.Done()
	if c.Err() == nil {
		t.Errorf("Err after the parent's cancel: nil")
	}
}

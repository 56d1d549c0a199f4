package cache

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// At most MaxFills blobs are fetched from upstreams at once; more fills
// wait for a slot (their clients with them) instead of failing.
func TestMaxFills(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Anonymous{}, hubRule)
	img := f.push(t, "library/app:v1")
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	digest := func(l v1.Layer) string { d, _ := l.Digest(); return d.String() }
	first, second := digest(layers[0]), digest(layers[1])
	want, err := layers[1].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	wantBytes, _ := io.ReadAll(want)
	p := NewPuller(f.store, f.eps, Anonymous{}, f.blobs, f.meta, slog.New(slog.NewTextHandler(io.Discard, nil)),
		Options{Transport: &f.transport, MaxFills: 1})
	t.Cleanup(p.Close)

	g := f.gate(t, first)
	c1, err := p.Blob(t.Context(), "hub/app", first)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Body.Close()
	g.waitHeld(t, 0) // the first fill holds the only slot

	got := make(chan []byte, 1)
	go func() {
		c2, err := p.Blob(t.Context(), "hub/app", second)
		if err != nil {
			t.Error(err)
			got <- nil
			return
		}
		b, _ := io.ReadAll(c2.Body)
		c2.Body.Close()
		got <- b
	}()
	for deadline := time.Now().Add(gateWaitLimit); p.FillsQueued() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second fill never queued (queued %d)", p.FillsQueued())
		}
	}
	if n := f.count(http.MethodGet, "/v2/library/app/blobs/"+second); n != 0 {
		t.Fatalf("the second blob was fetched (%d GETs) while the only fill slot was taken", n)
	}
	g.open()
	if b := <-got; !bytes.Equal(b, wantBytes) {
		t.Fatalf("the queued fill delivered %d bytes, want the layer's %d", len(b), len(wantBytes))
	}
	if n := p.FillsQueued(); n != 0 {
		t.Errorf("%d fills still queued", n)
	}
}

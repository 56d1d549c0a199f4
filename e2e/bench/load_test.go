package main

import (
	crand "crypto/rand"
	"io"
	"log"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
)

// TestWalkTags walks the tag list of a real registry (go-containerregistry's,
// which sends no Link header and, asked for the page after its last tag,
// answers with the first page again), for a tag count that fills its last
// page and one that does not.
func TestWalkTags(t *testing.T) {
	t.Parallel()
	for _, tags := range []int{200, 250} {
		reg := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
		t.Cleanup(reg.Close)
		var key [32]byte
		crand.Read(key[:])
		img, err := makeImage(t.TempDir(), "bench/tags", tagName(0), rand.NewChaCha8(key), sameSizes(1, 1024))
		if err != nil {
			t.Fatal(err)
		}
		if err := pushTags(t.Context(), reg.URL, img, tags); err != nil {
			t.Fatal(err)
		}
		b := &bench{opts: Options{Tags: tags, PageSize: 100}, tags: img}
		conn := newLoadConn(strings.TrimPrefix(reg.URL, "http://"))
		tl := &tally{name: kindTagPage}
		if err := b.walkTags(conn, tl); err != nil {
			t.Errorf("%d tags: %v", tags, err)
		}
		if pages := len(tl.latencies); pages < tags/100 || pages > tags/100+1 {
			t.Errorf("%d tags: %d pages recorded, want %d or %d", tags, pages, tags/100, tags/100+1)
		}
		// A walk that sees fewer tags than there are is an error.
		b.opts.Tags = tags + 1
		if err := b.walkTags(conn, tl); err == nil {
			t.Errorf("walk of %d tags expecting %d: no error", tags, tags+1)
		}
		conn.close()
	}
}

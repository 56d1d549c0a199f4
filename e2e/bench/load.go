package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// manifestRequest is one kind of request of the manifests scenario.
type manifestRequest struct {
	name   string
	method string
	ref    string // tag or digest
}

// manifestRequests are what a kubelet or containerd sends for a pod start
// (HEAD by tag with imagePullPolicy: Always, GET by digest for the pull),
// each client cycling through them.
func manifestRequests(img *Image) []manifestRequest {
	return []manifestRequest{
		{"HEAD by tag", http.MethodHead, img.Tag},
		{"GET by tag", http.MethodGet, img.Tag},
		{"HEAD by digest", http.MethodHead, img.Digest},
		{"GET by digest", http.MethodGet, img.Digest},
	}
}

// checkManifest checks one answer to a manifest request for img.
func checkManifest(a answer, method string, img *Image, verify bool) error {
	if a.status != http.StatusOK {
		return fmt.Errorf("status %d: %.200s", a.status, a.body)
	}
	want := len(img.Manifest)
	if method == http.MethodHead {
		if cl := a.header.Get("Content-Length"); cl != strconv.Itoa(want) {
			return fmt.Errorf("Content-Length %q, want %d", cl, want)
		}
		return nil
	}
	if len(a.body) != want {
		return fmt.Errorf("%d bytes, want %d", len(a.body), want)
	}
	if verify {
		sum := sha256.Sum256(a.body)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != img.Digest {
			return fmt.Errorf("body hashes to %s, want %s", got, img.Digest)
		}
	}
	return nil
}

// prepareManifests warms the image, then sends each kind of manifest
// request once, so that every cache holds an answer for each (nginx keys
// its entries by URI and Accept).
func prepareManifests(ctx context.Context, b *bench, inst *instance) error {
	if err := b.warmImage(ctx, inst, b.app); err != nil {
		return err
	}
	conn := newLoadConn(inst.c.addr)
	defer conn.close()
	for _, r := range manifestRequests(b.app) {
		a, err := conn.do(r.method, requestBytes(r.method, inst.c.addr, "/v2/"+b.app.Repo+"/manifests/"+r.ref, manifestAccept))
		if err == nil {
			err = checkManifest(a, r.method, b.app, b.opts.Verify)
		}
		if err != nil {
			return fmt.Errorf("warm-up %s from %s: %w", r.name, inst.c.name, err)
		}
	}
	return nil
}

// manifestWork runs --manifest-clients closed-loop clients for --duration,
// each on its own keep-alive connection, cycling through the kinds of
// manifest request.
func manifestWork(ctx context.Context, b *bench, c *child) outcome {
	img := b.app
	kinds := manifestRequests(img)
	reqs := make([][]byte, len(kinds))
	names := make([]string, len(kinds))
	for i, k := range kinds {
		reqs[i] = requestBytes(k.method, c.addr, "/v2/"+img.Repo+"/manifests/"+k.ref, manifestAccept)
		names[i] = k.name
	}
	clients := b.opts.ManifestClients
	perClient := make([][]*tally, clients)
	for i := range perClient {
		for _, n := range names {
			perClient[i] = append(perClient[i], &tally{name: n})
		}
	}
	gate := make(chan struct{})
	var wg sync.WaitGroup
	var deadline time.Time
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := newLoadConn(c.addr)
			defer conn.close()
			<-gate
			for j := i; ctx.Err() == nil && time.Now().Before(deadline); j++ {
				k := j % len(kinds)
				t := perClient[i][k]
				a, err := conn.do(kinds[k].method, reqs[k])
				if err == nil {
					err = checkManifest(a, kinds[k].method, img, b.opts.Verify)
				}
				if err != nil {
					t.fail(err)
					continue
				}
				t.ok(a)
			}
		}()
	}
	start := time.Now()
	deadline = start.Add(b.opts.Duration)
	close(gate)
	wg.Wait()
	out := outcome{clients: clients, wall: time.Since(start)}
	out.merge(names, perClient)
	return out
}

// Kinds of request of the many-tags scenario.
const (
	kindRevalidate = "GET by stale tag"
	kindTagPage    = "tags/list page"
)

// prepareManyTags has the cache fetch every tag once (so that it holds
// them all), then waits out the tag TTL, so that every tag is stale when
// the measurement starts.
func prepareManyTags(ctx context.Context, b *bench, inst *instance) error {
	var failed atomic.Pointer[error]
	forEachTag(b.opts.Tags, b.opts.Clients, func(conn *loadConn, i int) {
		if failed.Load() != nil || ctx.Err() != nil {
			return
		}
		if _, err := b.getTag(conn, tagName(i)); err != nil {
			err = fmt.Errorf("warm-up of tag %s from %s: %w", tagName(i), inst.c.name, err)
			failed.CompareAndSwap(nil, &err)
		}
	}, inst.c.addr)
	if err := failed.Load(); err != nil {
		return *err
	}
	select {
	case <-time.After(b.opts.TagTTL + 100*time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// forEachTag calls f for tags 0..n-1, spread over clients goroutines with
// a connection each (client i takes tags i, i+clients, ...).
func forEachTag(n, clients int, f func(conn *loadConn, i int), addr string) {
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := newLoadConn(addr)
			defer conn.close()
			for i := w; i < n; i += clients {
				f(conn, i)
			}
		}()
	}
	wg.Wait()
}

// getTag GETs the many-tags image's manifest by tag and checks it.
func (b *bench) getTag(conn *loadConn, tag string) (answer, error) {
	a, err := conn.do(http.MethodGet, requestBytes(http.MethodGet, conn.addr, "/v2/"+b.tags.Repo+"/manifests/"+tag, manifestAccept))
	if err != nil {
		return a, err
	}
	return a, checkManifest(a, http.MethodGet, b.tags, b.opts.Verify)
}

// manyTagsWork revalidates the (stale) tags, each once, with --clients
// clients, until all are done or --duration passed, while an eighth as
// many clients walk the tag list page by page, each finishing the walk it
// is in when the revalidation ends.
func manyTagsWork(ctx context.Context, b *bench, c *child) outcome {
	clients, walkers := b.opts.Clients, max(1, b.opts.Clients/8)
	perClient := make([][]*tally, clients+walkers)
	for i := range perClient {
		perClient[i] = []*tally{{name: kindRevalidate}, {name: kindTagPage}}
	}
	var revalidating atomic.Bool
	revalidating.Store(true)
	var wg sync.WaitGroup
	for w := range walkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := newLoadConn(c.addr)
			defer conn.close()
			t := perClient[clients+w][1]
			for ctx.Err() == nil {
				if err := b.walkTags(conn, t); err != nil {
					t.fail(err)
				}
				if !revalidating.Load() {
					return
				}
			}
		}()
	}
	start := time.Now()
	deadline := start.Add(b.opts.Duration)
	forEachTag(b.opts.Tags, clients, func(conn *loadConn, i int) {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return
		}
		t := perClient[i%clients][0] // tag i is always client i%clients's
		a, err := b.getTag(conn, tagName(i))
		if err != nil {
			t.fail(err)
			return
		}
		t.ok(a)
	}, c.addr)
	revalidating.Store(false)
	wg.Wait()
	out := outcome{clients: clients + walkers, wall: time.Since(start)}
	out.merge([]string{kindRevalidate, kindTagPage}, perClient)
	return out
}

// walkTags reads the whole tag list of the many-tags repository in pages
// of --page-size, recording each page in t, and checks that the walk saw
// every tag once, in order. It follows the Link header when there is one;
// without (go-containerregistry's registry, nginx passing it on) it asks
// for the page after the last tag received while pages come back full.
func (b *bench) walkTags(conn *loadConn, t *tally) error {
	n, repo := b.opts.PageSize, b.tags.Repo
	path := fmt.Sprintf("/v2/%s/tags/list?n=%d", repo, n)
	seen, last := 0, ""
	for pages := 0; path != ""; pages++ {
		if pages > b.opts.Tags/n+2 {
			return fmt.Errorf("tag list walk did not end after %d pages", pages)
		}
		a, err := conn.do(http.MethodGet, requestBytes(http.MethodGet, conn.addr, path, ""))
		if err == nil && a.status != http.StatusOK {
			err = fmt.Errorf("GET %s: status %d: %.200s", path, a.status, a.body)
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		if err == nil {
			if err = json.Unmarshal(a.body, &page); err != nil {
				err = fmt.Errorf("GET %s: %w", path, err)
			}
		}
		if err != nil {
			return err
		}
		t.ok(a)
		// A registry asked for the page after its last tag may answer
		// with the first page again (go-containerregistry's does): a
		// page not after last ends the walk.
		if len(page.Tags) == 0 || page.Tags[0] <= last {
			break
		}
		for i, tag := range page.Tags {
			if i > 0 && tag <= page.Tags[i-1] {
				return fmt.Errorf("GET %s: tags out of order: %s after %s", path, tag, page.Tags[i-1])
			}
		}
		seen += len(page.Tags)
		last = page.Tags[len(page.Tags)-1]
		path = nextPage(a.header.Get("Link"))
		if path == "" && len(page.Tags) == n {
			path = fmt.Sprintf("/v2/%s/tags/list?n=%d&last=%s", repo, n, last)
		}
	}
	if seen != b.opts.Tags {
		return fmt.Errorf("tag list walk saw %d tags, want %d", seen, b.opts.Tags)
	}
	return nil
}

// nextPage returns the path of an RFC 5988 rel="next" Link header ("" when
// there is none).
func nextPage(link string) string {
	if !strings.Contains(link, `rel="next"`) {
		return ""
	}
	start, end := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
	if start < 0 || end < start {
		return ""
	}
	return link[start+1 : end]
}

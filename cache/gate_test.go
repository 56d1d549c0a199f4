package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateWaitLimit bounds how long a test waits for a gated fill to reach a
// state. It only turns a hang into a failure: no test outcome depends on it.
const gateWaitLimit = 10 * time.Second

// gate holds back the bodies of upstream blob responses until the test
// releases them, so that a test decides when a fill has which bytes instead
// of hoping that a fill is still running when it looks.
//
// It sits on the puller's upstream connection (the fixture's base
// transport): requests still go through the fault proxy to the real
// registry, and the bytes are theirs; only their timing is the test's.
// Every gated body delivers at most the bytes allowed so far and then
// blocks in Read; the end of the body (io.EOF) is held as well until open.
// A fill copies read, write, read: when its reader is held in the gate, every
// byte it received before is written to the temporary file and reported to
// the fill's readers, which is what waitHeld waits for. Holding the end is
// what a test of "not before the digest verified" needs: all bytes are in,
// and nothing is verified yet.
type gate struct {
	digest string

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	allowed int64         // bytes each body may deliver
	opened  bool          // every byte and the end of the body may pass
	bodies  []*gatedBody
}

// gate makes every upstream GET of blob digest (through any rule) wait for
// the test: nothing is delivered until allow or open. The gate opens when
// the test ends, so that fills still held finish before the puller closes.
func (f *fixture) gate(t *testing.T, digest string) *gate {
	t.Helper()
	g := &gate{digest: digest, changed: make(chan struct{})}
	f.transport.mu.Lock()
	f.transport.gates = append(f.transport.gates, g)
	f.transport.mu.Unlock()
	t.Cleanup(g.open)
	return g
}

// broadcast wakes every waiter; the caller holds g.mu.
func (g *gate) broadcast() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// allow lets each body deliver its first n bytes (the end stays held).
func (g *gate) allow(n int64) {
	g.mu.Lock()
	g.allowed = max(g.allowed, n)
	g.broadcast()
	g.mu.Unlock()
}

// open lets every byte and the end of every body pass, now and later.
func (g *gate) open() {
	g.mu.Lock()
	g.opened = true
	g.broadcast()
	g.mu.Unlock()
}

// requests returns how many upstream responses the gate has held.
func (g *gate) requests() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.bodies)
}

// waitHeld waits until the reader of a gated body (the fill) has received
// exactly n bytes and waits in the gate for more: the fill writes and
// reports all n within fillHold.
func (g *gate) waitHeld(t *testing.T, n int64) {
	t.Helper()
	deadline := time.NewTimer(gateWaitLimit)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		for _, b := range g.bodies {
			if b.held && b.delivered == n {
				g.mu.Unlock()
				return
			}
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no fill of %s held in the gate after %d bytes within %v", g.digest, n, gateWaitLimit)
		}
	}
}

// matches reports whether the gate holds the response to r.
func (g *gate) matches(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+g.digest)
}

// gatedBody is one upstream response body behind a gate.
type gatedBody struct {
	g         *gate
	rc        io.ReadCloser
	done      <-chan struct{} // the request's context: a cancelled fill leaves the gate
	delivered int64
	eof       bool // the upstream body ended; the end is held until open
	held      bool // the reader waits in the gate
}

func (b *gatedBody) Read(p []byte) (int, error) {
	g := b.g
	for {
		g.mu.Lock()
		for !g.opened && (b.eof || b.delivered >= g.allowed) {
			b.held = true
			g.broadcast()
			ch := g.changed
			g.mu.Unlock()
			select {
			case <-ch:
			case <-b.done:
				return 0, errors.New("gate: request cancelled while held")
			}
			g.mu.Lock()
		}
		b.held = false
		if b.eof {
			g.mu.Unlock()
			return 0, io.EOF
		}
		if !g.opened && int64(len(p)) > g.allowed-b.delivered {
			p = p[:g.allowed-b.delivered]
		}
		g.mu.Unlock()

		n, err := b.rc.Read(p)
		g.mu.Lock()
		b.delivered += int64(n)
		if errors.Is(err, io.EOF) && !g.opened {
			b.eof, err = true, nil
		}
		g.broadcast()
		g.mu.Unlock()
		if n > 0 || err != nil {
			return n, err
		}
	}
}

func (b *gatedBody) Close() error { return b.rc.Close() }

// gateTransport is the fixture's base transport for upstream requests: it
// hands responses to the gates that match them.
type gateTransport struct {
	base *http.Transport

	mu    sync.Mutex
	gates []*gate
}

func (t *gateTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, g := range t.gates {
		if g.matches(r) {
			b := &gatedBody{g: g, rc: resp.Body, done: r.Context().Done()}
			g.mu.Lock()
			g.bodies = append(g.bodies, b)
			g.broadcast()
			g.mu.Unlock()
			resp.Body = b
			break
		}
	}
	return resp, nil
}

// CloseIdleConnections lets Puller.Close close the upstream connections.
func (t *gateTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }

// fillEnded waits until the fill that c follows, if any, has ended (its
// bytes committed and every repository that joined linked, or nothing
// committed) and is no longer running; it returns the fill's error.
// Content read from the store follows no fill.
func fillEnded(t *testing.T, c Content) error {
	t.Helper()
	r, ok := c.Body.(*fillReader)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), gateWaitLimit)
	defer cancel()
	err := r.f.result(ctx)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		t.Fatalf("the fill of %s did not end within %v", r.f.digest, gateWaitLimit)
	}
	return err
}

// following returns the fill c streams from, failing the test when c is
// read from the store (no fill runs for it).
func following(t *testing.T, c Content) *fill {
	t.Helper()
	r, ok := c.Body.(*fillReader)
	if !ok {
		t.Fatalf("%s is served from %T, want a reader following a running fill", c.Digest, c.Body)
	}
	return r.f
}

package e2e

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fault is what the fault proxy does to the GETs of one blob.
type fault int

const (
	faultNone        fault = iota
	faultReset             // the connection is reset mid-body
	faultFlip              // one byte is flipped, the length is right
	faultShort             // the body stops short of its Content-Length
	faultWrongLength       // Content-Length and body are both short: a well-formed, wrong answer
	faultChunkedFlip       // no Content-Length (chunked), one byte flipped
	faultStall             // the body stops and nothing more comes
	fault500               // 500 Internal Server Error
	fault429               // 429 Too Many Requests with Retry-After
	faultSlowHeaders       // no answer at all: not even headers
	faultHold              // the body stops until the client goes away (a crash test's gate)
	faultPause             // no damage: the body waits at the gate, then comes whole
)

// midBody reports whether the fault happens after the answer began (and
// is held at the gate until the test releases it).
func (f fault) midBody() bool {
	switch f {
	case faultReset, faultFlip, faultShort, faultWrongLength, faultChunkedFlip:
		return true
	}
	return false
}

// blobFault is the fault set on one blob, with what the proxy saw.
type blobFault struct {
	kind fault
	body []byte // the blob's true bytes
	// hold is how many bytes are sent before a mid-body fault waits at
	// the gate (and before a stall or a hold stops).
	hold int
	// gate, closed by the test, lets a mid-body fault happen; every GET
	// reaching it sends one value on held first.
	gate chan struct{}
	held chan struct{}
	// gets counts the upstream GETs of the blob; delivered counts those
	// that went through the gate with regcache still reading, and so
	// carried their fault to it.
	gets      atomic.Int64
	delivered atomic.Int64
}

// flipAt is where flipping faults invert a byte: before the gate, so
// that clients following the fill have received it when the fault ends
// the fill.
func (b *blobFault) flipAt() int { return b.hold / 2 }

// faultProxy is a small reverse proxy in front of a real upstream
// registry: it forwards every request, except the GETs of the blobs given
// a fault, which it answers itself from the blob's true bytes, damaged.
type faultProxy struct {
	*httptest.Server
	target string
	tr     *http.Transport
	active atomic.Int64 // requests being answered

	mu     sync.Mutex
	faults map[string]*blobFault // by digest
}

func newFaultProxy(t *testing.T, upstream string) *faultProxy {
	t.Helper()
	p := &faultProxy{target: upstream, tr: &http.Transport{}, faults: map[string]*blobFault{}}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.tr.CloseIdleConnections)
	t.Cleanup(p.Close)
	return p
}

// set gives digest a fault until clear; it returns the fault, to follow
// what happens to it.
func (p *faultProxy) set(digest string, f *blobFault) *blobFault {
	if f.gate == nil {
		f.gate = make(chan struct{})
	}
	f.held = make(chan struct{}, 64)
	p.mu.Lock()
	p.faults[digest] = f
	p.mu.Unlock()
	return f
}

// clear removes the fault of digest: its GETs reach the upstream again.
func (p *faultProxy) clear(digest string) {
	p.mu.Lock()
	delete(p.faults, digest)
	p.mu.Unlock()
}

func (p *faultProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.active.Add(1)
	defer p.active.Add(-1)
	if r.Method == http.MethodGet {
		if i := strings.LastIndex(r.URL.Path, "/blobs/"); i >= 0 {
			p.mu.Lock()
			f := p.faults[r.URL.Path[i+len("/blobs/"):]]
			p.mu.Unlock()
			if f != nil {
				f.gets.Add(1)
				f.serve(w, r)
				return
			}
		}
	}
	if resp, ok := relay(w, r, p.tr, p.target); ok {
		io.Copy(w, resp.Body)
		resp.Body.Close()
	}
}

// relay sends r through tr to the server at target and writes the
// answer's status and headers to w; the caller copies the body and closes
// it. ok is false when the server could not be reached (502 was
// answered). A proxy has a transport of its own: every
// httptest.Server.Close closes http.DefaultTransport's idle connections,
// under the requests of parallel tests.
func relay(w http.ResponseWriter, r *http.Request, tr *http.Transport, target string) (resp *http.Response, ok bool) {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
	req.Header = r.Header.Clone()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return nil, false
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	return resp, true
}

// serve answers one GET of the blob with the fault.
func (f *blobFault) serve(w http.ResponseWriter, r *http.Request) {
	body := f.body
	switch f.kind {
	case fault500:
		http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}`, http.StatusInternalServerError)
		return
	case fault429:
		w.Header().Set("Retry-After", strconv.Itoa(int(faultRetryAfter/time.Second)))
		http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"injected rate limit"}]}`, http.StatusTooManyRequests)
		return
	case faultSlowHeaders:
		<-r.Context().Done() // regcache gives up waiting for headers
		return
	case faultFlip, faultChunkedFlip:
		body = bytes.Clone(body)
		body[f.flipAt()] ^= 0xff
	}
	switch f.kind {
	case faultWrongLength:
		body = body[:len(body)-len(body)/4]
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	case faultChunkedFlip: // no Content-Length: net/http sends chunks
	default:
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(body[:f.hold]); err != nil {
		return
	}
	http.NewResponseController(w).Flush()
	select {
	case f.held <- struct{}{}:
	default: // nobody counts this many
	}
	switch f.kind {
	case faultStall, faultHold:
		<-r.Context().Done()
		return
	}
	select {
	case <-f.gate:
	case <-r.Context().Done():
		return // regcache gave up first: the fault was not delivered
	}
	// Counted before it is delivered: the clients may see the fault's
	// effect, and the test read the count, before this handler resumes.
	f.delivered.Add(1)
	switch f.kind {
	case faultReset:
		resetConn(w)
	case faultShort:
		w.Write(body[f.hold : len(body)-len(body)/4])
	default:
		w.Write(body[f.hold:])
	}
}

// resetConn aborts the connection with a TCP RST, after what was written.
func resetConn(w http.ResponseWriter) error {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	return conn.Close()
}

// waitHeld waits until n GETs of the blob reached the gate.
func (f *blobFault) waitHeld(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(time.Minute)
	for range n {
		select {
		case <-f.held:
		case <-timeout:
			t.Fatalf("the upstream GET of the blob did not reach the fault's gate")
		}
	}
}

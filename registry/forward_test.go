package registry_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/cluster"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/requestid"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

// replica is one regcache of a cluster as `regcache serve` wires it: its
// own data directory, upload sessions named after it, the peer channel
// serving its sessions to the others, and the registry forwarding other
// replicas' sessions to them.
type replica struct {
	url   string // the registry
	peer  *httptest.Server
	addr  string // advertised peer address
	blobs *storage.Blobs
	logs  string // log file
}

// peerUploads is what cmd/regcache serves on the peer channel.
type peerUploads struct {
	*uploads.Sessions
	*registry.PeerUploads
}

// newReplicas starts n replicas sharing the peer secret; ca, when set,
// authenticates the clients of replica i.
func newReplicas(t *testing.T, n int, ca func(i int, logs io.Writer) registry.ClientAuth) []*replica {
	t.Helper()
	ctx := t.Context()
	key := make([]byte, 32)
	rand.Read(key)
	rs := make([]*replica, n)
	var addrs []string
	for i := range rs {
		peer := httptest.NewUnstartedServer(nil)
		rs[i] = &replica{peer: peer, addr: peer.Listener.Addr().String()}
		addrs = append(addrs, rs[i].addr)
	}
	for i, r := range rs {
		dir := t.TempDir()
		logs := logFile(t)
		r.logs = logs.Name()
		log := slog.New(requestid.Handler(slog.NewTextHandler(logs, nil)))
		blobs, err := storage.OpenBlobs(filepath.Join(dir, "blobs"))
		if err != nil {
			t.Fatal(err)
		}
		r.blobs = blobs
		meta, err := storage.OpenMeta(filepath.Join(dir, "meta.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { meta.Close() })
		endpoints, err := cache.NewEndpoints(nil)
		if err != nil {
			t.Fatal(err)
		}
		rules, err := cache.NewStore(ctx, meta, cache.Anonymous{}, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		puller := cache.NewPuller(rules, endpoints, cache.Anonymous{}, blobs, meta, log, cache.Options{})
		t.Cleanup(puller.Close)
		sessions, err := uploads.New(ctx, blobs, meta, uploads.Options{IDSuffix: cluster.UploadTag(r.addr)}, log)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := cluster.New(cluster.Config{Advertise: r.addr, Peers: addrs, Secret: key, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		cfg := registry.Config{Backend: puller, Rules: rules, AdminToken: testToken, Log: log,
			Local: local.New(blobs, meta, sessions, rules, log, local.Options{}), Forward: cl}
		if ca != nil {
			cfg.ClientAuth = ca(i, logs)
		}
		h, err := registry.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		fwd, err := registry.NewPeerUploads(cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		r.url = srv.URL
		r.peer.Config.Handler = cl.Handler(puller, peerUploads{sessions, fwd})
		r.peer.Start()
		t.Cleanup(r.peer.Close)
	}
	return rs
}

func (r *replica) logText(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(r.logs)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// startSession POSTs a new session of repo on r and returns its path.
func (r *replica) startSession(t *testing.T, repo string, header map[string]string) string {
	t.Helper()
	resp, body := do(t, "POST", r.url+"/v2/"+repo+"/blobs/uploads/", header, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST a session on %s: %d %s", r.url, resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

// ociError returns "CODE: message" of an error body, empty when none.
func ociError(body []byte) string {
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code + ": " + e.Errors[0].Message
}

// TestForwardedUploadSession: a session started on replica A is used
// through replica B: chunks, status, an out-of-order chunk (416 relayed
// with A's Range and error), the last chunk with the digest; the blob is
// committed on A (B holds nothing), each request is in the access logs of
// both, A's line naming B. A session cancelled through B is gone on A.
func TestForwardedUploadSession(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, nil)
	a, b := rs[0], rs[1]
	loc := a.startSession(t, "team/app", nil)
	id := loc[strings.LastIndex(loc, "/")+1:]
	if !strings.HasSuffix(id, "-"+cluster.UploadTag(a.addr)) {
		t.Fatalf("session id %q does not end in A's tag %s", id, cluster.UploadTag(a.addr))
	}
	data := bytes.Repeat([]byte("regcache"), 4096)
	half := len(data) / 2
	rid := requestid.New()
	resp, body := do(t, "PATCH", b.url+loc, map[string]string{"Content-Range": fmt.Sprintf("0-%d", half-1), "Content-Type": "application/octet-stream", requestid.Header: rid}, bytes.NewReader(data[:half]))
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Location") != loc || resp.Header.Get("Range") != fmt.Sprintf("0-%d", half-1) ||
		resp.Header.Get("Docker-Upload-UUID") != id {
		t.Fatalf("PATCH through B: %d %v %s; want 202 with A's Location, Range and UUID", resp.StatusCode, resp.Header, body)
	}
	resp, body = do(t, "GET", b.url+loc, nil, nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != fmt.Sprintf("0-%d", half-1) {
		t.Fatalf("GET status through B: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = do(t, "PATCH", b.url+loc, map[string]string{"Content-Range": fmt.Sprintf("%d-%d", half+5, half+9)}, bytes.NewReader(data[:5]))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Range") != fmt.Sprintf("0-%d", half-1) ||
		!strings.HasPrefix(ociError(body), "BLOB_UPLOAD_INVALID") {
		t.Fatalf("out-of-order PATCH through B: %d %v %s; want 416, Range and BLOB_UPLOAD_INVALID", resp.StatusCode, resp.Header, body)
	}
	d := digestOf(data)
	resp, body = do(t, "PUT", b.url+loc+"?digest="+url.QueryEscape(d), map[string]string{"Content-Range": fmt.Sprintf("%d-%d", half, len(data)-1)}, bytes.NewReader(data[half:]))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != d || resp.Header.Get("Location") != "/v2/team/app/blobs/"+d {
		t.Fatalf("PUT through B: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := do(t, "GET", a.url+"/v2/team/app/blobs/"+d, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("the blob on A, the session's owner: %d, want 200", resp.StatusCode)
	}
	if _, err := b.blobs.Stat(t.Context(), d); err == nil {
		t.Fatal("B's store holds the blob: the upload was not forwarded")
	}
	aLog := a.logText(t)
	if !strings.Contains(aLog, "requestId="+rid) || !strings.Contains(aLog, "forwardedBy="+b.addr) ||
		!strings.Contains(aLog, "method=PATCH path="+loc+" ") {
		t.Errorf("A's access log does not record the PATCH forwarded by B with the request ID:\n%s", aLog)
	}
	if bLog := b.logText(t); !strings.Contains(bLog, "requestId="+rid) || !strings.Contains(bLog, "method=PATCH path="+loc+" ") {
		t.Errorf("B's access log does not record the PATCH:\n%s", bLog)
	}

	// Cancelled through B.
	loc = a.startSession(t, "team/app", nil)
	if resp, body := do(t, "DELETE", b.url+loc, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE through B: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", a.url+loc, nil, nil); resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(ociError(body), "BLOB_UPLOAD_UNKNOWN") {
		t.Fatalf("GET on A of a session cancelled through B: %d %s", resp.StatusCode, body)
	}
	// A session of another repository, or none: unknown, also through B.
	loc = a.startSession(t, "team/app", nil)
	other := strings.Replace(loc, "team/app", "team/other", 1)
	for _, u := range []string{b.url + other, b.url + loc + "0"} {
		if resp, body := do(t, "PATCH", u, nil, strings.NewReader("x")); resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(ociError(body), "BLOB_UPLOAD_UNKNOWN") {
			t.Errorf("PATCH %s through B: %d %s; want 404 BLOB_UPLOAD_UNKNOWN", u, resp.StatusCode, body)
		}
	}
}

// TestForwardedUploadOwnerGone: the replica holding a session is gone;
// a request for it through another replica answers BLOB_UPLOAD_UNKNOWN
// saying so.
func TestForwardedUploadOwnerGone(t *testing.T) {
	t.Parallel()
	rs := newReplicas(t, 2, nil)
	a, b := rs[0], rs[1]
	loc := a.startSession(t, "team/app", nil)
	a.peer.Close()
	resp, body := do(t, "PATCH", b.url+loc, nil, strings.NewReader("abc"))
	if code := ociError(body); resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(code, "BLOB_UPLOAD_UNKNOWN") || !strings.Contains(code, "unreachable") {
		t.Fatalf("PATCH through B of a session on a gone replica: %d %s; want 404 BLOB_UPLOAD_UNKNOWN saying its replica is unreachable", resp.StatusCode, body)
	}
}

// TestForwardedUploadAuthorized: the replica the client reached
// authenticates and authorises it (push access to the repository) before
// anything is forwarded.
func TestForwardedUploadAuthorized(t *testing.T) {
	t.Parallel()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	rs := newReplicas(t, 2, func(_ int, logs io.Writer) registry.ClientAuth {
		return newAuthority(t, time.Now, logs, key, "regcache")
	})
	a, b := rs[0], rs[1]
	token := func(user string) map[string]string {
		q := url.Values{"service": {"regcache"}, "scope": {"repository:lab/app:pull,push"}}
		basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + authUsers[user]))
		resp, body := do(t, "GET", b.url+"/v2/token?"+q.Encode(), map[string]string{"Authorization": "Basic " + basic}, nil)
		var tr tokenResp
		if resp.StatusCode != 200 || json.Unmarshal(body, &tr) != nil {
			t.Fatalf("token for %s: %d %s", user, resp.StatusCode, body)
		}
		return bearer(tr.Token)
	}
	loc := a.startSession(t, "lab/app", token("alice"))
	for _, c := range []struct {
		who    string
		header map[string]string
		status int
	}{
		{"anonymous", nil, http.StatusUnauthorized},
		{"bob (pull only)", token("bob"), http.StatusForbidden},
		{"alice (push)", token("alice"), http.StatusAccepted},
	} {
		resp, body := do(t, "PATCH", b.url+loc, c.header, strings.NewReader("abc"))
		if resp.StatusCode != c.status {
			t.Errorf("PATCH through B as %s: %d %s, want %d", c.who, resp.StatusCode, body, c.status)
		}
	}
	if n := strings.Count(a.logText(t), "forwardedBy="); n != 1 {
		t.Errorf("A served %d forwarded requests, want alice's only", n)
	}
}

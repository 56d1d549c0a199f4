package cluster

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/requestid"
)

// TestUploadOwner: a session ID names the member whose tag ends it; this
// replica's own tag, an unknown tag or no tag names none.
func TestUploadOwner(t *testing.T) {
	t.Parallel()
	members := []string{"10.0.0.1:5001", "10.0.0.2:5001", "10.0.0.3:5001"}
	c, err := New(Config{Advertise: members[0], Peers: members, Secret: make([]byte, MinSecretSize)})
	if err != nil {
		t.Fatal(err)
	}
	const random = "0123456789abcdef0123456789abcdef"
	for id, want := range map[string]string{
		random + "-" + UploadTag(members[1]):      members[1],
		random + "-" + UploadTag(members[2]):      members[2],
		random + "-" + UploadTag(members[0]):      "",
		random + "-" + UploadTag("10.0.0.9:5001"): "",
		random: "",
		"":     "",
	} {
		if got := c.UploadOwner(id); got != want {
			t.Errorf("UploadOwner(%q) = %q, want %q", id, got, want)
		}
	}
	if UploadTag(members[1]) == UploadTag(members[2]) || len(UploadTag(members[1])) != 12 {
		t.Fatalf("tags %q %q: want 12 hex digits, distinct", UploadTag(members[1]), UploadTag(members[2]))
	}
}

// sessionsHere is the owner's side: one open session; ServeUpload
// records what reached it and answers as the registry would.
type sessionsHere struct {
	repo, id string
	got      chan forwarded
	firstIn  chan struct{} // closed when the first bytes of a body arrived
}

type forwarded struct {
	method, sender, repo, name, id, digest, contentRange, requestID string
	body                                                            string
}

func (s *sessionsHere) Exists(repo, id string) bool { return repo == s.repo && id == s.id }

func (s *sessionsHere) ServeUpload(w http.ResponseWriter, r *http.Request, sender, repo, name, id string) {
	f := forwarded{method: r.Method, sender: sender, repo: repo, name: name, id: id, digest: r.URL.Query().Get("digest"),
		contentRange: r.Header.Get("Content-Range"), requestID: r.Header.Get(requestid.Header)}
	buf := make([]byte, 1)
	if n, _ := r.Body.Read(buf); n == 1 {
		close(s.firstIn)
		rest, _ := io.ReadAll(r.Body)
		f.body = string(buf) + string(rest)
	}
	s.got <- f
	w.Header().Set("Location", "/v2/"+name+"/blobs/uploads/"+id)
	w.Header().Set("Range", "0-5")
	w.WriteHeader(http.StatusAccepted)
}

// TestForwardUpload: a forwarded PATCH reaches the owner's sessions with
// its method, repository, name, Content-Range, request ID and sender, its
// body streamed (the owner reads the first bytes before the client sent
// the rest), and the owner's answer comes back.
func TestForwardUpload(t *testing.T) {
	t.Parallel()
	key := secret(t)
	srv := httptest.NewUnstartedServer(nil)
	owner := srv.Listener.Addr().String()
	a, err := New(Config{Advertise: owner, Peers: []string{owner, "127.0.0.1:1"}, Secret: key})
	if err != nil {
		t.Fatal(err)
	}
	id := "0123456789abcdef0123456789abcdef-" + UploadTag(owner)
	here := &sessionsHere{repo: "team/app", id: id, got: make(chan forwarded, 1), firstIn: make(chan struct{})}
	srv.Config.Handler = a.Handler(nil, here)
	srv.Start()
	t.Cleanup(srv.Close)
	b, err := New(Config{Advertise: "127.0.0.1:1", Peers: []string{owner, "127.0.0.1:1"}, Secret: key})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.UploadOwner(id); got != owner {
		t.Fatalf("UploadOwner = %q, want %q", got, owner)
	}
	pr, pw := io.Pipe()
	client, _ := http.NewRequestWithContext(requestid.With(t.Context(), "rid-1"), http.MethodPatch, "http://b/v2/Team/App/blobs/uploads/"+id+"?digest=x", pr)
	client.ContentLength = 6
	client.Header.Set("Content-Range", "0-5")
	type answer struct {
		resp *http.Response
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := b.ForwardUpload(client, owner, "team/app", "team/app", id)
		answered <- answer{resp, err}
	}()
	pw.Write([]byte("abc"))
	select {
	case <-here.firstIn:
	case <-time.After(10 * time.Second):
		t.Fatal("the owner got none of the body before the client sent all of it: the body is buffered, not streamed")
	}
	pw.Write([]byte("def"))
	pw.Close()
	ans := <-answered
	if ans.err != nil {
		t.Fatal(ans.err)
	}
	ans.resp.Body.Close()
	if ans.resp.StatusCode != http.StatusAccepted || ans.resp.Header.Get("Range") != "0-5" || ans.resp.Header.Get("Location") != "/v2/team/app/blobs/uploads/"+id {
		t.Fatalf("owner's answer: %d %v", ans.resp.StatusCode, ans.resp.Header)
	}
	want := forwarded{method: "PATCH", sender: "127.0.0.1:1", repo: "team/app", name: "team/app", id: id, contentRange: "0-5", requestID: "rid-1", body: "abcdef"}
	if f := <-here.got; f != want {
		t.Fatalf("the owner got %+v, want %+v (no digest on a PATCH)", f, want)
	}
}

// TestPeerUploadsRefusals: the peer endpoint acts only with a valid token,
// on a session open here in its own repository, with a session method;
// anything else is 404 (401/403 without or with a bad token) and never
// reaches the sessions. A forward to a replica that is gone, or that
// refuses the token, is an error.
func TestPeerUploadsRefusals(t *testing.T) {
	t.Parallel()
	key := secret(t)
	srv := httptest.NewUnstartedServer(nil)
	owner := srv.Listener.Addr().String()
	a, err := New(Config{Advertise: owner, Peers: []string{owner}, Secret: key})
	if err != nil {
		t.Fatal(err)
	}
	id := "0123456789abcdef0123456789abcdef-" + UploadTag(owner)
	here := &sessionsHere{repo: "team/app", id: id, got: make(chan forwarded, 16), firstIn: make(chan struct{})}
	srv.Config.Handler = a.Handler(nil, here)
	srv.Start()
	t.Cleanup(srv.Close)
	good := signer{secret: key, now: time.Now}
	bad := signer{secret: secret(t), now: time.Now}
	q := "?repo=team/app&name=team/app"
	for _, c := range []struct {
		name, method, uri string
		s                 *signer
		status            int
		uploadUnknown     bool
	}{
		{"session method", "GET", uploadsPath + id + q, &good, 202, false},
		{"no token", "GET", uploadsPath + id + q, nil, 401, false},
		{"bad token", "PATCH", uploadsPath + id + q, &bad, 403, false},
		{"new session", "POST", uploadsPath + id + q, &good, 404, false},
		{"POST without id", "POST", uploadsPath + q, &good, 404, false},
		{"another repository", "PATCH", uploadsPath + id + "?repo=team/other&name=team/other", &good, 404, true},
		{"no repository", "PATCH", uploadsPath + id, &good, 404, true},
		{"unknown session", "PUT", uploadsPath + "0123456789abcdef0123456789abcdef" + q + "&digest=sha256:" + strings.Repeat("0", 64), &good, 404, true},
		{"manifest", "PUT", "/peer/v1/manifests/team/app/v1", &good, 404, false},
		{"mount", "POST", "/peer/v1/uploads/" + q + "&mount=sha256:" + strings.Repeat("0", 64) + "&from=hub/app", &good, 404, false},
		{"nested path", "PATCH", uploadsPath + "team/app/" + id + q, &good, 404, false},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, srv.URL+c.uri, strings.NewReader("x"))
		if c.s != nil {
			c.s.sign(req, "127.0.0.1:1")
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s: %s %s = %d %s, want %d", c.name, c.method, c.uri, resp.StatusCode, body, c.status)
		}
		if c.uploadUnknown && !strings.Contains(string(body), `"code":"BLOB_UPLOAD_UNKNOWN"`) {
			t.Errorf("%s: body %s, want a BLOB_UPLOAD_UNKNOWN error", c.name, body)
		}
	}
	if n := len(here.got); n != 1 {
		t.Errorf("%d requests reached the sessions, want the one allowed", n)
	}

	client, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://b/v2/team/app/blobs/uploads/"+id, nil)
	stranger, err := New(Config{Advertise: "127.0.0.1:1", Peers: []string{owner}, Secret: secret(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.ForwardUpload(client, owner, "team/app", "team/app", id); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("forward with another secret: err %v, want the owner's refusal", err)
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	goneAddr := gone.Listener.Addr().String()
	gone.Close()
	b, err := New(Config{Advertise: "127.0.0.1:1", Peers: []string{goneAddr}, Secret: key})
	if err != nil {
		t.Fatal(err)
	}
	b.members.set(goneAddr, true, nil)
	if _, err := b.ForwardUpload(client, goneAddr, "team/app", "team/app", id); err == nil {
		t.Error("forward to a replica that is gone: no error")
	}
	if live := b.Live(); len(live) != 1 {
		t.Errorf("live members after a failed forward: %v, want self only", live)
	}
}

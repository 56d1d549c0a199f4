package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/regcache/regcache/cache"
)

// TestMain fails the package when a test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func digestOf(i int) string { return fmt.Sprintf("sha256:%064x", i) }

// TestOwnerStableAndSpread: every replica names the same owner whatever
// the order it lists members in; digests spread over the members; a member
// leaving moves only the digests it owned, and one joining takes only
// digests for itself.
func TestOwnerStableAndSpread(t *testing.T) {
	t.Parallel()
	members := []string{"10.0.0.1:5001", "10.0.0.2:5001", "10.0.0.3:5001"}
	reversed := []string{members[2], members[1], members[0]}
	const n = 3000
	counts := map[string]int{}
	for i := range n {
		d := digestOf(i)
		o := Owner(d, members)
		if o2 := Owner(d, reversed); o2 != o {
			t.Fatalf("%s: owner %s or %s depending on the order of members", d, o, o2)
		}
		counts[o]++
		// Without member 2: only its digests move.
		if o3 := Owner(d, []string{members[0], members[2]}); o != members[1] && o3 != o {
			t.Fatalf("%s moved from %s to %s when another member left", d, o, o3)
		}
		// A fourth member takes digests for itself only.
		if o4 := Owner(d, append([]string{"10.0.0.4:5001"}, members...)); o4 != o && o4 != "10.0.0.4:5001" {
			t.Fatalf("%s moved from %s to %s when a member joined", d, o, o4)
		}
	}
	for _, m := range members {
		if c := counts[m]; c < n/3-n/10 || c > n/3+n/10 {
			t.Fatalf("member %s owns %d of %d digests, want about a third: %v", m, c, n, counts)
		}
	}
	if Owner(digestOf(1), nil) != "" {
		t.Fatal("no members named an owner")
	}
}

func secret(t *testing.T) []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// TestTokens: a request is accepted only with a token signed with the
// shared secret, unexpired, for this very method, path and query and
// sender.
func TestTokens(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	key := secret(t)
	s := signer{secret: key, now: func() time.Time { return now }}
	signed := func(s signer, uri string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, uri, nil)
		s.sign(r, "10.0.0.1:5001")
		return r
	}
	uri := blobsPath + digestOf(1) + "?repo=hub%2Fapp"
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		want error
	}{
		{"valid", func() *http.Request { return signed(s, uri) }, nil},
		{"no token", func() *http.Request { return httptest.NewRequest(http.MethodGet, uri, nil) }, ErrNoToken},
		{"wrong secret", func() *http.Request { return signed(signer{secret: secret(t), now: s.now}, uri) }, ErrBadToken},
		{"expired", func() *http.Request {
			return signed(signer{secret: key, now: func() time.Time { return now.Add(-TokenTTL - time.Second) }}, uri)
		}, ErrBadToken},
		{"far future", func() *http.Request {
			return signed(signer{secret: key, now: func() time.Time { return now.Add(time.Hour) }}, uri)
		}, ErrBadToken},
		{"tampered path", func() *http.Request {
			r := signed(s, uri)
			r.URL.Path = blobsPath + digestOf(2)
			return r
		}, ErrBadToken},
		{"tampered query", func() *http.Request {
			r := signed(s, uri)
			r.URL.RawQuery = "repo=private%2Fapp"
			return r
		}, ErrBadToken},
		{"replayed on another path", func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, pingPath, nil)
			r.Header.Set("Authorization", signed(s, uri).Header.Get("Authorization"))
			return r
		}, ErrBadToken},
		{"another method", func() *http.Request {
			r := signed(s, uri)
			r.Method = http.MethodPut
			return r
		}, ErrBadToken},
		{"another sender", func() *http.Request {
			r := signed(s, uri)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "10.0.0.1:5001", "10.0.0.9:5001", 1))
			return r
		}, ErrBadToken},
		{"another scheme", func() *http.Request {
			r := signed(s, uri)
			r.Header.Set("Authorization", "Bearer "+strings.TrimPrefix(r.Header.Get("Authorization"), authScheme))
			return r
		}, ErrBadToken},
		{"garbage", func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, uri, nil)
			r.Header.Set("Authorization", authScheme+"x;y;z")
			return r
		}, ErrBadToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sender, err := s.verify(tc.req())
			if !errors.Is(err, tc.want) || (tc.want == nil && sender != "10.0.0.1:5001") {
				t.Fatalf("verify: sender %q, err %v; want err %v", sender, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), string(key)) {
				t.Fatal("an error carries the secret")
			}
		})
	}
}

func TestReadSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("only-twenty-bytes-ok\n"), 0o600)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(strings.Repeat("k", 40)+"\n"), 0o600)
	if _, err := ReadSecret(""); err == nil || !strings.Contains(err.Error(), "--peer-secret-file") {
		t.Fatalf("no file: %v", err)
	}
	if _, err := ReadSecret(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file was accepted")
	}
	if _, err := ReadSecret(short); err == nil || !strings.Contains(err.Error(), "20 bytes; want at least 32") || strings.Contains(err.Error(), "only-twenty") {
		t.Fatalf("short secret: %v", err)
	}
	if s, err := ReadSecret(good); err != nil || len(s) != 40 {
		t.Fatalf("good secret: %d bytes, %v", len(s), err)
	}
}

// blobSource serves one blob as the puller would, and records whether
// requests came marked as a peer's.
type blobSource struct {
	body   []byte
	digest string
	peer   chan bool
}

func (b *blobSource) Blob(ctx context.Context, repo, digest string) (cache.Content, error) {
	select {
	case b.peer <- cache.IsPeerRequest(ctx):
	default:
	}
	if digest != b.digest || repo != "hub/app" {
		return cache.Content{}, fmt.Errorf("%w: %s@%s", cache.ErrBlobUnknown, repo, digest)
	}
	return cache.Content{Body: nopSeekCloser{bytes.NewReader(b.body)}, Size: int64(len(b.body)), Digest: digest}, nil
}

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

// newPair starts replica a's peer listener serving src, and returns a
// cluster b that sees a as live, with the secret key.
func newPair(t *testing.T, src Source, key []byte) (a, b *Cluster, srv *httptest.Server) {
	t.Helper()
	srv = httptest.NewUnstartedServer(nil)
	addr := srv.Listener.Addr().String()
	var err error
	a, err = New(Config{Advertise: addr, Peers: []string{addr, "127.0.0.1:1"}, Secret: key})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = a.Handler(src, nil)
	srv.Start()
	t.Cleanup(srv.Close)
	b, err = New(Config{Advertise: "127.0.0.1:1", Peers: []string{addr, "127.0.0.1:1"}, Secret: key})
	if err != nil {
		t.Fatal(err)
	}
	b.members.set(addr, true, nil)
	return a, b, srv
}

// TestPeerChannel: the listener refuses requests without a token (401)
// or with a bad one (403), serves only ping and blob GETs (404 for the
// rest), and streams a blob from an offset to the replica that signed.
func TestPeerChannel(t *testing.T) {
	t.Parallel()
	body := make([]byte, 10000)
	rand.Read(body)
	d := digestOf(7)
	src := &blobSource{body: body, digest: d, peer: make(chan bool, 16)}
	key := secret(t)
	_, b, srv := newPair(t, src, key)
	other := signer{secret: secret(t), now: time.Now}
	good := signer{secret: key, now: time.Now}
	get := func(s *signer, uri string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+uri, nil)
		if s != nil {
			s.sign(req, "127.0.0.1:1")
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	blob := blobsPath + d + "?repo=hub%2Fapp"
	for _, tc := range []struct {
		name   string
		s      *signer
		uri    string
		status int
	}{
		{"blob without token", nil, blob, http.StatusUnauthorized},
		{"ping without token", nil, pingPath, http.StatusUnauthorized},
		{"blob with a token of another secret", &other, blob, http.StatusForbidden},
		{"ping", &good, pingPath, http.StatusNoContent},
		{"blob", &good, blob, http.StatusOK},
		{"registry API", &good, "/v2/", http.StatusNotFound},
		{"manifest", &good, "/v2/hub/app/manifests/latest", http.StatusNotFound},
		{"admin API", &good, "/admin/v1/rules", http.StatusNotFound},
		{"unknown blob", &good, blobsPath + digestOf(8) + "?repo=hub%2Fapp", http.StatusNotFound},
		{"blob of another repository", &good, blobsPath + d + "?repo=private%2Fapp", http.StatusNotFound},
		{"bad digest", &good, blobsPath + "sha256:zz?repo=hub%2Fapp", http.StatusBadRequest},
		{"bad offset", &good, blob + "&offset=-1", http.StatusBadRequest},
		{"offset past the end", &good, blob + "&offset=10001", http.StatusRequestedRangeNotSatisfiable},
	} {
		if got := get(tc.s, tc.uri); got != tc.status {
			t.Errorf("%s: GET %s = %d, want %d", tc.name, tc.uri, got, tc.status)
		}
	}

	// Open picks the owner among the live members: whichever it is, the
	// bytes from the offset arrive when it is the other replica.
	for len(src.peer) > 0 {
		if !<-src.peer {
			t.Fatal("the peer channel asked the puller without marking the request as a peer's")
		}
	}
	ownedHere, remote, remoteOwner := 0, "", ""
	for i := range 64 {
		dd := digestOf(i)
		owner := b.Owner(dd)
		want := Owner(dd, b.Live())
		if want == b.Self() {
			want = "" // this replica fetches it itself
			ownedHere++
		}
		if owner != want {
			t.Fatalf("Owner(%s) = %q, want %q (empty for self)", dd, owner, want)
		}
		if owner != "" && remote == "" {
			remote, remoteOwner = dd, owner
		}
	}
	if ownedHere == 0 || remote == "" {
		t.Fatalf("of 64 digests this replica owns %d and the other %d: want some of each", ownedHere, 64-ownedHere)
	}
	src.digest = remote
	rc, size, err := b.Open(t.Context(), remoteOwner, "hub/app", remote, 1234)
	if err != nil || size != int64(len(body)) {
		t.Fatalf("Open: size %d err %v; want %d", size, err, len(body))
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, body[1234:]) {
		t.Fatalf("Open from offset 1234: %d bytes, err %v", len(got), err)
	}
}

// waitLive waits until c's live members are want.
func waitLive(t *testing.T, c *Cluster, want ...string) {
	t.Helper()
	slices.Sort(want)
	for deadline := time.Now().Add(10 * time.Second); fmt.Sprint(c.Live()) != fmt.Sprint(want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("live members %v, want %v", c.Live(), want)
		}
	}
}

// TestMembership: a member is in the hash once it answers a signed ping,
// out of it when it stops answering or its stream breaks, and a member
// holding another secret never joins.
func TestMembership(t *testing.T) {
	t.Parallel()
	key := secret(t)
	src := &blobSource{peer: make(chan bool, 1)}
	_, _, srv := newPair(t, src, key)
	a := srv.Listener.Addr().String()
	stranger := httptest.NewServer(nil)
	t.Cleanup(stranger.Close)
	sc, err := New(Config{Advertise: stranger.Listener.Addr().String(), Peers: []string{a}, Secret: secret(t)})
	if err != nil {
		t.Fatal(err)
	}
	stranger.Config.Handler = sc.Handler(src, nil)

	c, err := New(Config{Advertise: "127.0.0.1:2", Peers: []string{a, "127.0.0.1:2", stranger.Listener.Addr().String()},
		Secret: key, ProbeInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Live(); fmt.Sprint(got) != "[127.0.0.1:2]" {
		t.Fatalf("before any ping, live members %v: want only self", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitLive(t, c, a, "127.0.0.1:2")
	// A broken stream takes the member out at once.
	c.members.set(a, false, errors.New("stream broke"))
	if got := c.Live(); fmt.Sprint(got) != "[127.0.0.1:2]" {
		t.Fatalf("after a broken stream, live members %v", got)
	}
	waitLive(t, c, a, "127.0.0.1:2") // back at its next answer
	srv.Close()
	waitLive(t, c, "127.0.0.1:2")
}

// TestMembershipDNS: members are the A/AAAA records of a name, with the
// port given (localhost: 127.0.0.1 from the hosts file).
func TestMembershipDNS(t *testing.T) {
	t.Parallel()
	key := secret(t)
	_, _, srv := newPair(t, &blobSource{peer: make(chan bool, 1)}, key)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c, err := New(Config{Advertise: "127.0.0.1:2", PeersDNS: "localhost:" + port, Secret: key,
		ProbeInterval: 20 * time.Millisecond, ResolveInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitLive(t, c, "127.0.0.1:"+port, "127.0.0.1:2")
}

// TestNewRefusesBadConfig: clear errors for each setting.
func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	key := secret(t)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Peers: []string{"a:1"}, Secret: key}, "--peer-advertise"},
		{Config{Advertise: "a:1", Secret: key}, "either --peers"},
		{Config{Advertise: "a:1", Peers: []string{"a:1"}, PeersDNS: "x:1", Secret: key}, "either --peers"},
		{Config{Advertise: "a:1", Peers: []string{"b"}, Secret: key}, `peers "b": want host:port`},
		{Config{Advertise: "a:1", PeersDNS: "svc", Secret: key}, `peersDNS "svc": want name:port`},
		{Config{Advertise: "a:1", Peers: []string{"b:1"}, Secret: key[:31]}, "31 bytes; want at least 32"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error with %q", tc.cfg.Peers, err, tc.want)
		}
	}
}

// TestPingStrikes: a live member whose pings time out stays in the hash
// for pingStrikes-1 failures (a replica busy streaming is not dropped on
// one slow answer, which would make replicas disagree on owners), and
// leaves it at the next; a refused connection takes it out at once.
func TestPingStrikes(t *testing.T) {
	t.Parallel()
	m := &membership{self: "127.0.0.1:1", log: slog.New(slog.DiscardHandler), live: map[string]bool{"127.0.0.1:2": true, "127.0.0.1:3": true}}
	slow := context.DeadlineExceeded
	for i := 1; i < pingStrikes; i++ {
		m.pinged("127.0.0.1:2", slow)
		if got := fmt.Sprint(m.liveMembers()); got != "[127.0.0.1:1 127.0.0.1:2 127.0.0.1:3]" {
			t.Fatalf("after %d slow pings, live %s: want the member kept", i, got)
		}
	}
	m.pinged("127.0.0.1:2", nil) // an answer resets the count
	for i := 1; i < pingStrikes; i++ {
		m.pinged("127.0.0.1:2", slow)
	}
	if got := fmt.Sprint(m.liveMembers()); got != "[127.0.0.1:1 127.0.0.1:2 127.0.0.1:3]" {
		t.Fatalf("failures before an answer counted after it: live %s", got)
	}
	m.pinged("127.0.0.1:2", slow)
	if got := fmt.Sprint(m.liveMembers()); got != "[127.0.0.1:1 127.0.0.1:3]" {
		t.Fatalf("after %d slow pings in a row, live %s: want the member out", pingStrikes, got)
	}
	m.pinged("127.0.0.1:3", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	if got := fmt.Sprint(m.liveMembers()); got != "[127.0.0.1:1]" {
		t.Fatalf("after a refused connection, live %s: want the member out at once", got)
	}
}

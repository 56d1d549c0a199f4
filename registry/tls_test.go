package registry

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// A renewed certificate is served from the next handshake on, without a
// restart; a broken pair keeps the previous one in use.
func TestCertReload(t *testing.T) {
	t.Parallel()
	ca := peers.NewCA(t)
	dir := t.TempDir()
	ca.Issue(t, dir, "first")
	var logs syncLog
	r, err := NewCertReloader(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.every = 0 // look at the files on every handshake
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }), TLSConfig: r.TLSConfig()}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	served := func() string {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, DisableKeepAlives: true}}
		resp, err := c.Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatalf("https request: %v", err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "first" {
		t.Fatalf("serves %q, want first", cn)
	}
	ca.Issue(t, dir, "renewed")
	if cn := served(); cn != "renewed" {
		t.Fatalf("after renewal serves %q, want renewed", cn)
	}
	// A key that does not match the certificate: the renewed pair stays.
	other := t.TempDir()
	ca.Issue(t, other, "broken")
	key, _ := os.ReadFile(filepath.Join(other, "key.pem"))
	peers.WriteNewer(t, filepath.Join(dir, "key.pem"), key)
	if cn := served(); cn != "renewed" {
		t.Fatalf("after a broken pair serves %q, want the previous certificate", cn)
	}
	if !strings.Contains(logs.String(), "TLS certificate does not load") {
		t.Errorf("the broken pair was not logged:\n%s", logs.String())
	}
}

// A pair that does not load is refused at start, naming the files.
func TestCertReloaderRefusesBadPair(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	peers.WriteNewer(t, filepath.Join(dir, "cert.pem"), []byte("not a certificate"))
	peers.WriteNewer(t, filepath.Join(dir, "key.pem"), []byte("not a key"))
	_, err := NewCertReloader(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "cert.pem") {
		t.Fatalf("NewCertReloader: %v, want an error naming the files", err)
	}
	if _, err := NewCertReloader(filepath.Join(dir, "missing.pem"), filepath.Join(dir, "key.pem"), slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("a missing certificate file was accepted")
	}
}

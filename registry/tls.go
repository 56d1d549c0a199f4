package registry

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloadCheck is how often, at most, a TLS handshake looks at the
// certificate files for a change.
const certReloadCheck = 5 * time.Second

// CertReloader serves a TLS certificate and key from files and loads them
// again when they change (a renewed certificate from cert-manager or
// certbot, a rotated Kubernetes Secret): no restart, no dropped
// connection. A pair that does not load keeps the previous one in use and
// is logged.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	every             time.Duration // how often to look at the files; 0: every handshake

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     string // the files' sizes and modification times when loaded
	checkedAt time.Time
}

// NewCertReloader loads the pair once; an error names what is wrong with it.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log, every: certReloadCheck}
	stamp, err := r.filesStamp()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s and key %s: %w", certFile, keyFile, err)
	}
	r.cert, r.stamp, r.checkedAt = &cert, stamp, time.Now()
	return r, nil
}

// filesStamp identifies the current content of both files.
func (r *CertReloader) filesStamp() (string, error) {
	var stamp string
	for _, p := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("tls: %w", err)
		}
		stamp += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp, nil
}

// GetCertificate is the tls.Config callback: the current certificate,
// loaded again first when the files changed since it was.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checkedAt) >= r.every {
		r.checkedAt = now
		r.reload()
	}
	return r.cert, nil
}

// reload loads the pair when the files changed; the caller holds r.mu.
func (r *CertReloader) reload() {
	stamp, err := r.filesStamp()
	if err != nil || stamp == r.stamp {
		if err != nil {
			r.log.Error("TLS certificate files unreadable; serving the previous certificate", "err", err)
		}
		return
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// A renewal is often two writes (certificate, then key): the next
		// handshake after the second write loads the pair.
		r.log.Error("TLS certificate does not load; serving the previous certificate", "cert", r.certFile, "key", r.keyFile, "err", err)
		return
	}
	r.cert, r.stamp = &cert, stamp
	if cert.Leaf != nil {
		r.log.Info("TLS certificate reloaded", "cert", r.certFile, "subject", cert.Leaf.Subject.String(), "notAfter", cert.Leaf.NotAfter)
	}
}

// TLSConfig is the server's TLS configuration with r's certificate, TLS
// 1.2 at least (http.Server.ServeTLS adds HTTP/2).
func (r *CertReloader) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/regcache/regcache/cache"
)

// Paths of the peer channel: nothing else is served on it.
const (
	pingPath  = "/peer/v1/ping"
	blobsPath = "/peer/v1/blobs/"
	// sizeHeader carries the whole blob's size (Content-Length is what
	// follows the offset).
	sizeHeader = "Regcache-Blob-Size"
)

// Source is what the peer channel serves: the local puller's blobs.
type Source interface {
	Blob(ctx context.Context, repo, digest string) (cache.Content, error)
}

// senderKey carries the verified sender of a peer request.
type senderKey struct{}

func sender(r *http.Request) string {
	s, _ := r.Context().Value(senderKey{}).(string)
	return s
}

var digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// Handler is the peer channel: every request must carry a valid token
// (401 without one, 403 with a bad one); then GET of the ping and of a
// blob are served, and the session methods of upload sessions open here
// (uploads.go) through up (nil: none), and 404 answers everything else
// (no manifests, no new sessions, no mounts, no admin).
func (c *Cluster) Handler(src Source, up Uploads) http.Handler {
	mux := http.NewServeMux()
	// A ping proves the caller holds the secret and the receiver answers.
	mux.HandleFunc("GET "+pingPath, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET "+blobsPath+"{digest}", func(w http.ResponseWriter, r *http.Request) { c.serveBlob(w, r, src) })
	mux.HandleFunc(uploadsPath+"{id}", func(w http.ResponseWriter, r *http.Request) { c.serveUpload(w, r, sender(r), up) })
	mux.HandleFunc("/", http.NotFound)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sender, err := c.sign.verify(r)
		if err != nil {
			status := http.StatusForbidden
			if errors.Is(err, ErrNoToken) {
				status = http.StatusUnauthorized
				w.Header().Set("WWW-Authenticate", "RegcachePeer")
			}
			c.log.Warn("peer request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "err", err)
			http.Error(w, err.Error(), status)
			return
		}
		c.log.Debug("peer request", "peer", sender, "remote", r.RemoteAddr, "method", r.Method, "uri", r.URL.RequestURI())
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), senderKey{}, sender)))
	})
}

// serveBlob streams a blob to another replica from the given offset, as
// the puller serves it to a client, marked as a peer's request: a fill it
// starts fetches from the upstream, never from another replica.
func (c *Cluster) serveBlob(w http.ResponseWriter, r *http.Request, src Source) {
	digest, repo := r.PathValue("digest"), r.URL.Query().Get("repo")
	if !digestRE.MatchString(digest) || repo == "" {
		http.Error(w, fmt.Sprintf("blob %q of repo %q: want a sha256:<64 hex> digest and a repository", digest, repo), http.StatusBadRequest)
		return
	}
	var off int64
	if s := r.URL.Query().Get("offset"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, fmt.Sprintf("offset %q: want a byte offset, 0 or more", s), http.StatusBadRequest)
			return
		}
		off = n
	}
	ctx := cache.PeerRequest(r.Context())
	content, err := src.Blob(ctx, repo, digest)
	if err != nil {
		status := http.StatusBadGateway
		switch {
		case errors.Is(err, cache.ErrBlobUnknown), errors.Is(err, cache.ErrNameUnknown), errors.Is(err, cache.ErrNameInvalid):
			status = http.StatusNotFound
		case errors.Is(err, cache.ErrNotOwner):
			status = http.StatusConflict
		}
		http.Error(w, err.Error(), status)
		return
	}
	defer content.Body.Close()
	if off > content.Size {
		http.Error(w, fmt.Sprintf("offset %d: the blob has %d bytes", off, content.Size), http.StatusRequestedRangeNotSatisfiable)
		return
	}
	if _, err := content.Body.Seek(off, io.SeekStart); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(content.Size-off, 10))
	w.Header().Set(sizeHeader, strconv.FormatInt(content.Size, 10))
	w.WriteHeader(http.StatusOK)
	if n, err := io.Copy(w, content.Body); err != nil {
		// Short of Content-Length: the connection is closed and the
		// receiving fill sees its stream break.
		c.log.Warn("blob stream to a peer failed", "digest", digest, "remote", r.RemoteAddr, "offset", off, "sent", n, "err", err)
	}
}

// Server returns the HTTP server of the peer channel, serving src and up
// (Handler); with TLS when configured (ServeTLS(ln, "", "") then).
func (c *Cluster) Server(src Source, up Uploads, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           c.Handler(src, up),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         c.srvTLS,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// TLS reports whether the peer listener serves TLS.
func (c *Cluster) TLS() bool { return c.srvTLS != nil }

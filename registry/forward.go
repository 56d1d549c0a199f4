package registry

import (
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/uploads"
)

// Upload sessions across replicas. A session lives on the replica that
// started it; its ID names that replica. A request for it (PATCH, PUT,
// GET, HEAD, DELETE) reaching another replica is authenticated and
// authorised there like any push, then forwarded to the owner
// (UploadForwarder), whose answer is relayed: status, the headers of the
// distribution API and the error body. The owner serves it with the same
// session handlers (PeerUploads), without client authentication: the
// replica the client reached did that.

// UploadForwarder sends requests for upload sessions held by another
// replica to it (cluster.Cluster).
type UploadForwarder interface {
	// UploadOwner names the replica holding session id; empty when it is
	// this replica, or no other.
	UploadOwner(id string) string
	// ForwardUpload sends r, a request for session id of repo that the
	// client named name, to owner and returns its answer; r's body is
	// streamed. An error means the owner could not be reached.
	ForwardUpload(r *http.Request, owner, repo, name, id string) (*http.Response, error)
}

// relayedHeaders are the headers of an owner's answer that reach the
// client (hop-by-hop and the owner's own headers stay behind).
var relayedHeaders = []string{"Location", "Range", "Docker-Upload-UUID", "Docker-Content-Digest", "Content-Type", "Content-Length", "OCI-Chunk-Min-Length"}

// maxRelayedBody caps the body relayed from an owner: session answers are
// empty or an error.
const maxRelayedBody = 64 << 10

// forwardUpload serves a request for upload session p.ref held by owner:
// it forwards it there and relays the answer. An owner gone (killed, say)
// took the session with it: BLOB_UPLOAD_UNKNOWN, so that the client
// starts the upload again.
func (s *server) forwardUpload(w http.ResponseWriter, r *http.Request, p ociPath, requested, owner string) error {
	resp, err := s.Forward.ForwardUpload(r, owner, p.name, requested, p.ref)
	if err != nil {
		s.Log.WarnContext(r.Context(), "upload session request not forwarded: its replica is unreachable", "id", p.ref, "repo", p.name, "owner", owner, "err", err)
		return fmt.Errorf("%w: upload session %s: the replica holding it is unreachable; start the upload again", uploads.ErrUnknown, p.ref)
	}
	defer resp.Body.Close()
	h := w.Header()
	for _, k := range relayedHeaders {
		if v := resp.Header.Values(k); len(v) > 0 {
			h[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return nil
	}
	if _, err := io.Copy(w, io.LimitReader(resp.Body, maxRelayedBody)); err != nil {
		s.Log.WarnContext(r.Context(), "relaying an upload session answer failed", "id", p.ref, "owner", owner, "err", err)
	}
	return nil
}

// PeerUploads serves the upload-session requests other replicas forward
// (cluster.Uploads), with the session handlers of push.go. Each is logged
// in the access log with the replica that forwarded it; none is counted
// in the metrics (the replica the client reached counts it).
type PeerUploads struct {
	cfg Config
}

// NewPeerUploads returns the server of forwarded upload-session requests
// of cfg's local repositories.
func NewPeerUploads(cfg Config) (*PeerUploads, error) {
	if cfg.Local == nil || cfg.Log == nil {
		return nil, fmt.Errorf("registry: forwarded uploads need local repositories and a logger")
	}
	cfg.Limits = cfg.Limits.WithDefaults(0)
	cfg.Observer = nil
	return &PeerUploads{cfg: cfg}, nil
}

// ServeUpload answers r, a PATCH, PUT, GET, HEAD or DELETE of session id
// of repo that the client named name, forwarded by replica sender; the
// caller checked that the session is open here.
func (u *PeerUploads) ServeUpload(w http.ResponseWriter, r *http.Request, sender, repo, name, id string) {
	if !cache.ValidRepository(name) {
		name = repo
	}
	s := &server{Config: u.cfg}
	s.Log = s.Log.With("forwardedBy", sender)
	// Logged as the client sent it.
	fr := r.Clone(r.Context())
	fr.URL = &url.URL{Path: "/v2/" + name + "/blobs/uploads/" + id}
	if d := r.URL.Query().Get("digest"); d != "" && r.Method == http.MethodPut {
		fr.URL.RawQuery = url.Values{"digest": {d}}.Encode()
	}
	fr.RequestURI = fr.URL.RequestURI()
	p := ociPath{kind: kindUpload, name: repo, ref: id}
	s.accessLog(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Docker-Distribution-Api-Version"] = apiVersionValue
		setRoute(w, routeOfKind(kindUpload))
		if err := s.session(w, r, p, name); err != nil {
			writeOCIError(w, r, s.Log, err)
		}
	})).ServeHTTP(w, fr)
}

package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/regcache/regcache/requestid"
)

// Upload sessions in a cluster. A session's partial bytes stay in the data
// directory of the replica that started it, its owner, and its ID ends in
// the owner's tag (UploadTag). A request for the session reaching another
// replica (through a load balancer) is authorised there, then forwarded to
// the owner over the peer channel (ForwardUpload), which serves it with
// the replica's own upload code (Uploads) and answers; the body streams
// through, never buffered. When the owner is gone, so is the session.
//
// The peer endpoint acts only on sessions the owner holds, for the
// repository each was started for, and only with the session methods
// (PATCH, PUT, GET, HEAD, DELETE): a replica cannot start a session,
// push a manifest or mount a blob through it.

const (
	uploadsPath = "/peer/v1/uploads/"
	tagBytes    = 6 // 12 hex digits
)

// Uploads serves the upload-session requests other replicas forward
// (registry.PeerUploads over uploads.Sessions).
type Uploads interface {
	// Exists reports whether session id of repo is open on this replica.
	Exists(repo, id string) bool
	// ServeUpload answers r, a PATCH, PUT, GET, HEAD or DELETE of session
	// id of repo that the client named name, forwarded by replica sender.
	ServeUpload(w http.ResponseWriter, r *http.Request, sender, repo, name, id string)
}

// UploadTag is what the upload session IDs of the replica advertised at
// addr end with: 12 hex digits of a hash of the address, which every
// replica computes alike (no index in a member list, which DNS may
// reorder).
func UploadTag(addr string) string {
	h := sha256.Sum256([]byte("regcache upload sessions\n" + addr))
	return hex.EncodeToString(h[:tagBytes])
}

// UploadOwner returns the member whose tag ends upload session id; empty
// when the tag is this replica's or no known member's (the session, if
// any, is then here).
func (c *Cluster) UploadOwner(id string) string {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return ""
	}
	tag := id[i+1:]
	if len(tag) != 2*tagBytes || tag == UploadTag(c.self) {
		return ""
	}
	for _, m := range c.members.known() {
		if UploadTag(m) == tag {
			return m
		}
	}
	return ""
}

// ForwardUpload sends r, a client's request for upload session id of repo
// (named name by the client), to the member owner and returns the owner's
// answer; r's body streams to the owner. An error means the owner gave no
// answer, or refused this replica's token: it is unreachable, and the
// session lost to the client. An owner that cannot be reached leaves the
// hash until it answers a ping again.
func (c *Cluster) ForwardUpload(r *http.Request, owner, repo, name, id string) (*http.Response, error) {
	q := url.Values{"repo": {repo}, "name": {name}}
	if r.Method == http.MethodPut {
		if d := r.URL.Query().Get("digest"); d != "" {
			q.Set("digest", d)
		}
	}
	var body io.Reader
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		body = r.Body
	}
	ctx := r.Context()
	req, err := http.NewRequestWithContext(ctx, r.Method, c.scheme+"://"+owner+uploadsPath+url.PathEscape(id)+"?"+q.Encode(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = r.ContentLength // -1: streamed as it comes
	}
	for _, k := range []string{"Content-Range", "Content-Type", "User-Agent"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	// The owner's access log line carries the same request ID.
	if rid := requestid.From(ctx); rid != "" {
		req.Header.Set(requestid.Header, rid)
	}
	c.sign.sign(req, c.self)
	resp, err := c.uploads.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			c.members.set(owner, false, err)
		}
		return nil, fmt.Errorf("replica %s holding upload session %s: %w", owner, id, err)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		defer resp.Body.Close()
		return nil, fmt.Errorf("replica %s holding upload session %s refused this replica's peer token: %s%s", owner, id, resp.Status, errorBody(resp.Body))
	}
	return resp, nil
}

// serveUpload serves a forwarded upload-session request, sent by sender,
// through up: only a session method, only for a session open here in the
// repository it was started for; 404 for anything else.
func (c *Cluster) serveUpload(w http.ResponseWriter, r *http.Request, sender string, up Uploads) {
	switch r.Method {
	case http.MethodPatch, http.MethodPut, http.MethodGet, http.MethodHead, http.MethodDelete:
	default:
		c.log.Warn("forwarded upload request refused: not a session method", "peer", sender, "method", r.Method)
		http.NotFound(w, r)
		return
	}
	id, q := r.PathValue("id"), r.URL.Query()
	repo, name := q.Get("repo"), q.Get("name")
	if up == nil || repo == "" || name == "" || !up.Exists(repo, id) {
		c.log.Warn("forwarded upload request refused: no such session here", "peer", sender, "method", r.Method, "id", id, "repo", repo)
		uploadUnknown(w, fmt.Sprintf("upload session %s of repository %q is not open on the replica holding it (finished, cancelled, expired, or lost in a restart); start the upload again", id, repo))
		return
	}
	up.ServeUpload(w, r, sender, repo, name, id)
}

// uploadUnknown answers 404 with the distribution API's error body, which
// the forwarding replica relays to its client as it is.
func uploadUnknown(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	type ociError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	json.NewEncoder(w).Encode(struct {
		Errors []ociError `json:"errors"`
	}{[]ociError{{"BLOB_UPLOAD_UNKNOWN", msg}}})
}

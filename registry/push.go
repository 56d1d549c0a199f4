package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/manifest"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

// Uploads are blob pushes (local.Repos).
type Uploads interface {
	StartUpload(ctx context.Context, repo string) (string, error)
	WriteUpload(ctx context.Context, repo, id string, start, length int64, body io.Reader) (int64, error)
	UploadStatus(ctx context.Context, repo, id string) (int64, error)
	FinishUpload(ctx context.Context, repo, id, digest string, start, length int64, body io.Reader) error
	CancelUpload(ctx context.Context, repo, id string) error
}

// Pushes store blobs in one request, mount them and push manifests
// (local.Repos).
type Pushes interface {
	PutBlob(ctx context.Context, repo, digest string, size int64, body io.Reader) error
	Mount(ctx context.Context, repo, from, digest string) (bool, error)
	PutManifest(ctx context.Context, repo, ref, contentType string, body []byte) (local.Pushed, error)
}

// Deletes remove manifests, tags and blobs (local.Repos).
type Deletes interface {
	DeleteManifest(ctx context.Context, repo, digest string) error
	DeleteTag(ctx context.Context, repo, tag string) error
	DeleteBlob(ctx context.Context, repo, digest string) error
}

// LocalRepos is the write side of local repositories and the catalog.
type LocalRepos interface {
	Uploads
	Pushes
	Deletes
	Repositories(ctx context.Context, last string, n int) ([]string, error)
}

// write serves every request that changes a repository; requested is the
// name as the client sent it (Location headers use it).
func (s *server) write(w http.ResponseWriter, r *http.Request, p ociPath, requested string) error {
	if s.Local == nil {
		return fmt.Errorf("%w: %s %s (this regcache serves pulls only)", errUnsupported, r.Method, r.URL.Path)
	}
	switch {
	case p.kind == kindUpload && r.Method == http.MethodPost && p.ref == "":
		return s.startUpload(w, r, p, requested)
	case p.kind == kindUpload && p.ref == "":
		return fmt.Errorf("%w: %s %s (start an upload with POST)", errUnsupported, r.Method, r.URL.Path)
	case p.kind == kindUpload && sessionMethod(r.Method):
		if s.Forward != nil {
			if owner := s.Forward.UploadOwner(p.ref); owner != "" {
				return s.forwardUpload(w, r, p, requested, owner)
			}
		}
		return s.session(w, r, p, requested)
	case p.kind == kindManifest && r.Method == http.MethodPut:
		return s.putManifest(w, r, p, requested)
	case p.kind == kindManifest && r.Method == http.MethodDelete:
		return s.deleteManifest(w, r, p)
	case p.kind == kindBlob && r.Method == http.MethodDelete:
		if err := s.Local.DeleteBlob(r.Context(), p.name, p.ref); err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	return fmt.Errorf("%w: %s %s", errUnsupported, r.Method, r.URL.Path)
}

// sessionMethod reports whether method acts on an upload session.
func sessionMethod(method string) bool {
	switch method {
	case http.MethodPatch, http.MethodPut, http.MethodGet, http.MethodHead, http.MethodDelete:
		return true
	}
	return false
}

// session serves the requests for upload session p.ref held by this
// replica: a chunk (PATCH), the last one and the digest (PUT), its status
// (GET, HEAD) or its end (DELETE).
func (s *server) session(w http.ResponseWriter, r *http.Request, p ociPath, requested string) error {
	switch r.Method {
	case http.MethodPatch:
		return s.patchUpload(w, r, p, requested)
	case http.MethodPut:
		return s.finishUpload(w, r, p, requested)
	case http.MethodGet, http.MethodHead:
		n, err := s.Local.UploadStatus(r.Context(), p.name, p.ref)
		if err != nil {
			return err
		}
		uploadHeaders(w, requested, p.ref, n)
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodDelete:
		if err := s.Local.CancelUpload(r.Context(), p.name, p.ref); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return fmt.Errorf("%w: %s %s", errUnsupported, r.Method, r.URL.Path)
}

// startUpload answers POST /v2/<name>/blobs/uploads/: a mount
// (mount=<digest>&from=<repo>), a monolithic upload (digest=<digest>
// with the body), or a new session.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-blobs
func (s *server) startUpload(w http.ResponseWriter, r *http.Request, p ociPath, requested string) error {
	ctx := r.Context()
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		if _, err := storage.ParseDigest(mount); err != nil {
			return fmt.Errorf("%w: mount: %v", errDigestInvalid, err)
		}
		// Without from, or when the caller may not read it there, the
		// spec asks for an upload session instead.
		if from := q.Get("from"); from != "" && cache.ValidRepository(from) {
			source, err := s.Backend.Route(ctx, from, "")
			if err == nil {
				ok, err := s.Local.Mount(ctx, p.name, source, mount)
				if err != nil {
					return err
				}
				if ok {
					return blobCreated(w, requested, mount)
				}
			}
		}
	} else if digest := q.Get("digest"); digest != "" {
		if _, err := storage.ParseDigest(digest); err != nil {
			return fmt.Errorf("%w: %v", errDigestInvalid, err)
		}
		if err := s.Local.PutBlob(ctx, p.name, digest, r.ContentLength, r.Body); err != nil {
			return err
		}
		return blobCreated(w, requested, digest)
	}
	id, err := s.Local.StartUpload(ctx, p.name)
	if err != nil {
		return err
	}
	uploadHeaders(w, requested, id, 0)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// patchUpload appends a chunk: with Content-Range it must start where the
// session stands (416 with the session's Range otherwise).
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-a-blob-in-chunks
func (s *server) patchUpload(w http.ResponseWriter, r *http.Request, p ociPath, requested string) error {
	start, length, err := chunkRange(r)
	if err != nil {
		return err
	}
	n, err := s.Local.WriteUpload(r.Context(), p.name, p.ref, start, length, r.Body)
	var re *uploads.RangeError
	if errors.As(err, &re) {
		uploadHeaders(w, requested, p.ref, re.Offset)
	}
	if err != nil {
		return err
	}
	uploadHeaders(w, requested, p.ref, n)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// finishUpload closes a session: an optional last chunk, then the digest.
func (s *server) finishUpload(w http.ResponseWriter, r *http.Request, p ociPath, requested string) error {
	digest := r.URL.Query().Get("digest")
	if digest == "" {
		return fmt.Errorf("%w: the digest query parameter is required to close an upload, e.g. ?digest=sha256:<hex>", errDigestInvalid)
	}
	if _, err := storage.ParseDigest(digest); err != nil {
		return fmt.Errorf("%w: %v", errDigestInvalid, err)
	}
	start, length, err := chunkRange(r)
	if err != nil {
		return err
	}
	var body io.Reader = r.Body
	if r.ContentLength == 0 {
		body = nil
	}
	err = s.Local.FinishUpload(r.Context(), p.name, p.ref, digest, start, length, body)
	var re *uploads.RangeError
	if errors.As(err, &re) {
		uploadHeaders(w, requested, p.ref, re.Offset)
	}
	if err != nil {
		return err
	}
	return blobCreated(w, requested, digest)
}

// chunkRange reads a chunk's Content-Range ("<start>-<end>", also with a
// "bytes " prefix or a "/<total>" suffix): its start and length, or -1
// and the Content-Length when there is none (a streamed chunk).
func chunkRange(r *http.Request) (start, length int64, err error) {
	h := r.Header.Get("Content-Range")
	if h == "" {
		return -1, r.ContentLength, nil
	}
	spec := strings.TrimPrefix(strings.TrimSpace(h), "bytes ")
	spec, _, _ = strings.Cut(spec, "/")
	a, b, ok := strings.Cut(spec, "-")
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, fmt.Errorf("%w: %q (want <start>-<end>, e.g. 0-1023)", errRangeInvalid, h)
	}
	length = end - start + 1
	if r.ContentLength >= 0 && r.ContentLength != length {
		return 0, 0, fmt.Errorf("%w: Content-Range %q is %d bytes, Content-Length says %d", errRangeInvalid, h, length, r.ContentLength)
	}
	return start, length, nil
}

// uploadHeaders describe a session: where to send the next request and
// the bytes it holds.
func uploadHeaders(w http.ResponseWriter, repo, id string, n int64) {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
	h.Set("Docker-Upload-UUID", id)
	// distribution answers 0-0 for an empty session too.
	h.Set("Range", fmt.Sprintf("0-%d", max(n-1, 0)))
	h.Set("Content-Length", "0")
}

func blobCreated(w http.ResponseWriter, repo, digest string) error {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/"+digest)
	h.Set("Docker-Content-Digest", digest)
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// putManifest stores a manifest by tag or digest.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-manifests
func (s *server) putManifest(w http.ResponseWriter, r *http.Request, p ociPath, requested string) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, manifest.MaxSize+1))
	if err != nil {
		return fmt.Errorf("%w: reading the manifest: %v", local.ErrManifestInvalid, err)
	}
	pushed, err := s.Local.PutManifest(r.Context(), p.name, p.ref, r.Header.Get("Content-Type"), body)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Location", "/v2/"+requested+"/manifests/"+pushed.Digest)
	h.Set("Docker-Content-Digest", pushed.Digest)
	if pushed.Subject != "" {
		h.Set("OCI-Subject", pushed.Subject)
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// deleteManifest deletes a manifest by digest, or a tag.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#deleting-tags
func (s *server) deleteManifest(w http.ResponseWriter, r *http.Request, p ociPath) error {
	var err error
	if cache.IsDigest(p.ref) {
		err = s.Local.DeleteManifest(r.Context(), p.name, p.ref)
	} else {
		err = s.Local.DeleteTag(r.Context(), p.name, p.ref)
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// maxCatalog caps a catalog page (a client may ask for fewer with n).
const maxCatalog = 10000

// catalog lists repositories, local and cached, with n/last pagination.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-repositories
func (s *server) catalog(w http.ResponseWriter, r *http.Request) error {
	if s.Local == nil {
		return fmt.Errorf("%w: %s %s", errUnsupported, r.Method, r.URL.Path)
	}
	q := r.URL.Query()
	n := maxCatalog
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			return fmt.Errorf("%w: n=%q must be a non-negative integer", errPageInvalid, v)
		}
		n = min(n, maxCatalog)
	}
	repos, err := s.Local.Repositories(r.Context(), q.Get("last"), n+1)
	if err != nil {
		return err
	}
	if len(repos) > n {
		repos = repos[:n]
		if n > 0 {
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {repos[n-1]}}
			w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?%s>; rel="next"`, next.Encode()))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodHead {
		return nil
	}
	return json.NewEncoder(w).Encode(struct {
		Repositories []string `json:"repositories"`
	}{repos})
}

// referrers lists the manifests whose subject is p.ref, filtered by
// artifactType when asked.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-referrers
func (s *server) referrers(w http.ResponseWriter, r *http.Request, p ociPath) error {
	ds, err := s.Backend.Referrers(r.Context(), p.name, p.ref)
	if err != nil {
		return err
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		kept := ds[:0:0]
		for _, d := range ds {
			if d.ArtifactType == at {
				kept = append(kept, d)
			}
		}
		ds = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if ds == nil {
		ds = []storage.Descriptor{}
	}
	w.Header().Set("Content-Type", manifest.OCIIndex)
	if r.Method == http.MethodHead {
		return nil
	}
	return json.NewEncoder(w).Encode(struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Manifests     []storage.Descriptor `json:"manifests"`
	}{2, manifest.OCIIndex, ds})
}

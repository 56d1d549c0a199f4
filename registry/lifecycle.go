package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/regcache/regcache/archive"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/eviction"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/warm"
)

// Lifecycle wires the admin endpoints that keep a registry running
// unattended or without internet (each optional):
//
//	POST /admin/v1/warm                        pre-load references; the answer streams progress (NDJSON)
//	POST /admin/v1/export                      an OCI image-layout tar of references (body: references, skipPresent)
//	POST /admin/v1/import[?to=PREFIX]          load an archive (the body: tar or tar.gz)
//	GET  /admin/v1/inventory                   the digests this registry holds, one per line
//	POST /admin/v1/cache-rules/{name}/refresh  revalidate a rule's cached tags now (body: optional tags)
type Lifecycle struct {
	Warm      Warmer
	Export    Exporter
	Import    Importer
	Inventory Inventory
	Refresh   Refresher
	Evict     Evictor
	Upstreams UpstreamState
	// Offline: regcache contacts no upstream; the health endpoints and
	// every admin answer say so.
	Offline bool
}

// Warmer pre-loads references (warm.Warmer).
type Warmer interface {
	Warm(ctx context.Context, req warm.Request, emit func(warm.Event)) warm.Event
}

// Exporter writes archives (archive.Exporter).
type Exporter interface {
	Plan(ctx context.Context, refs []string, skip map[string]bool) (*archive.Plan, error)
	Write(ctx context.Context, p *archive.Plan, w io.Writer, progress func(int64)) error
}

// Importer loads archives (archive.Importer).
type Importer interface {
	Import(ctx context.Context, r io.Reader, opts archive.ImportOptions) (archive.ImportReport, error)
}

// Inventory writes what the registry holds (archive.WriteInventory).
type Inventory func(ctx context.Context, w io.Writer) (int, error)

// Refresher revalidates the cached tags of a rule (cache.Puller).
type Refresher interface {
	Refresh(ctx context.Context, rule string, refs []string) ([]cache.Refreshed, error)
}

// Evictor runs eviction and tells its state (eviction.Evictor).
type Evictor interface {
	Evict(ctx context.Context, dryRun bool) (eviction.Report, error)
	State(ctx context.Context) (eviction.State, error)
}

// UpstreamState is what is known of the upstreams (cache.Puller).
type UpstreamState interface {
	UpstreamStatus(r cache.Rule) cache.UpstreamStatus
	Upstreams() *cache.Upstreams
}

// maxExportRequest bounds an export request, whose skip-present inventory
// may list many digests.
const maxExportRequest = 64 << 20

// offlineHeader marks every admin answer of an offline registry.
const offlineHeader = "Regcache-Offline"

// Headers of an export answer: what the archive carries (for progress),
// and, as a trailer, why it stopped when it did not complete.
const (
	exportBlobsHeader = "Regcache-Export-Blobs"
	exportBytesHeader = "Regcache-Export-Bytes"
	exportSkipHeader  = "Regcache-Export-Skipped"
	exportErrTrailer  = "Regcache-Export-Error"
)

func (s *server) lifecycleRoutes(mux *http.ServeMux) {
	l := s.Lifecycle
	if l.Warm != nil {
		mux.Handle("POST /admin/v1/warm", s.admin(s.warm))
	}
	if l.Export != nil {
		mux.Handle("POST /admin/v1/export", s.admin(s.export))
	}
	if l.Import != nil {
		mux.Handle("POST /admin/v1/import", s.admin(s.importArchive))
	}
	if l.Inventory != nil {
		mux.Handle("GET /admin/v1/inventory", s.admin(s.inventory))
	}
	if l.Refresh != nil {
		mux.Handle("POST /admin/v1/cache-rules/{name}/refresh", s.admin(s.refresh))
	}
}

// warm streams the progress of a warm, one JSON event per line, the
// summary last.
func (s *server) warm(w http.ResponseWriter, r *http.Request) error {
	var req warm.Request
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := warm.Check(req); err != nil {
		return err
	}
	if s.Lifecycle.Offline {
		return fmt.Errorf("%w: warming fetches from upstreams, and regcache runs with --offline", cache.ErrOffline)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	sum := s.Lifecycle.Warm.Warm(r.Context(), req, func(e warm.Event) {
		enc.Encode(e)
		rc.Flush()
	})
	s.Log.Info("warm", "references", len(req.References), "succeeded", sum.Succeeded, "failed", len(sum.Failed), "bytes", sum.Bytes, "fetched", sum.Fetched)
	return nil
}

// ExportRequest is the body of POST /admin/v1/export.
type ExportRequest struct {
	References []string `json:"references"`
	// SkipPresent lists the digests the receiving registry holds (its
	// inventory): they are left out.
	SkipPresent []string `json:"skipPresent,omitempty"`
}

// export answers with the archive. Everything is resolved before the
// first byte: a reference that cannot be exported is an error answer.
// A failure while streaming leaves the archive without its end and
// names the reason in the trailer.
func (s *server) export(w http.ResponseWriter, r *http.Request) error {
	var req ExportRequest
	if err := decodeBodyLimit(r, &req, maxExportRequest); err != nil {
		return err
	}
	skip := make(map[string]bool, len(req.SkipPresent))
	for _, d := range req.SkipPresent {
		if _, err := storage.ParseDigest(d); err != nil {
			return fmt.Errorf("%w: skipPresent: %v", errBadRequest, err)
		}
		skip[d] = true
	}
	plan, err := s.Lifecycle.Export.Plan(r.Context(), req.References, skip)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-tar")
	h.Set(exportBlobsHeader, strconv.Itoa(plan.Blobs))
	h.Set(exportBytesHeader, strconv.FormatInt(plan.Bytes, 10))
	h.Set(exportSkipHeader, strconv.Itoa(plan.Skipped))
	h.Set("Trailer", exportErrTrailer)
	w.WriteHeader(http.StatusOK)
	start := time.Now()
	if err := s.Lifecycle.Export.Write(r.Context(), plan, w, nil); err != nil {
		h.Set(exportErrTrailer, cache.PublicMessage(err))
		s.Log.Error("export failed", "references", req.References, "err", err)
		return nil
	}
	s.Log.Info("exported", "references", len(req.References), "blobs", plan.Blobs, "bytes", plan.Bytes, "skipped", plan.Skipped,
		"duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// importArchive reads an archive from the request body.
func (s *server) importArchive(w http.ResponseWriter, r *http.Request) error {
	to := r.URL.Query().Get("to")
	if to != "" && !cache.ValidRepository(to) {
		return fmt.Errorf("%w: to=%q is not a repository name (lowercase letters and digits separated by '.', '_', '-' or '/')", errBadRequest, to)
	}
	rep, err := s.Lifecycle.Import.Import(r.Context(), r.Body, archive.ImportOptions{To: to})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

func (s *server) inventory(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, err := s.Lifecycle.Inventory(r.Context(), w)
	return err
}

// refresh revalidates the cached tags of a rule (all, or those named as
// {"tags": ["repo:tag", ...]}).
func (s *server) refresh(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Tags []string `json:"tags"`
	}
	if r.ContentLength != 0 {
		if err := decodeBody(r, &in); err != nil {
			return err
		}
	}
	out, err := s.Lifecycle.Refresh.Refresh(r.Context(), r.PathValue("name"), in.Tags)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// health answers /healthz and /readyz: ok, and that regcache is offline
// when it is.
func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if s.Lifecycle.Offline {
		w.Header().Set(offlineHeader, "true")
		w.Write([]byte("ok\noffline: regcache contacts no upstream; it serves cached and imported content only\n"))
		return
	}
	w.Write([]byte("ok\n"))
}

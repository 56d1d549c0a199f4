package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/regcache/regcache/storage"
)

// Fsck checks, and repairs, the store of the running server
// (storage.Checker): safe next to fills and serving.
type Fsck interface {
	Check(ctx context.Context, opts storage.CheckOptions) (storage.CheckReport, error)
}

// fsckProgressEvery is how often a running check reports its progress: it
// also keeps the response moving, so that no idle timeout cuts it.
const fsckProgressEvery = time.Second

// FsckEvent is one line of the answer of POST /admin/v1/fsck: progress
// while the check runs, then the report, or the error that stopped it.
type FsckEvent struct {
	Progress *storage.CheckProgress `json:"progress,omitempty"`
	Report   *storage.CheckReport   `json:"report,omitempty"`
	Error    *AdminError            `json:"error,omitempty"`
}

// Store check admin API, guarded by the admin token:
//
//	POST /admin/v1/fsck   body {"repair": false}
//
// It answers 200 with application/x-ndjson, one FsckEvent per line:
// {"progress": ...} about every second, then {"report": ...}, or
// {"error": ...} when the check could not finish (the report so far
// follows it). A check already running answers 409 CONFLICT. The check
// ends when the client goes away.
func (s *server) fsckRoutes(mux *http.ServeMux) {
	if s.Fsck == nil {
		return // the /admin/ catch-all answers 404
	}
	mux.Handle("POST /admin/v1/fsck", s.admin(s.fsck))
}

func (s *server) fsck(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Repair bool `json:"repair"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	started := false
	send := func(e FsckEvent) {
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
		}
		enc.Encode(e)
		rc.Flush()
	}
	var last time.Time
	s.Log.Info("store check started", "repair", in.Repair, "remote", r.RemoteAddr)
	report, err := s.Fsck.Check(r.Context(), storage.CheckOptions{Repair: in.Repair, Progress: func(p storage.CheckProgress) {
		if now := time.Now(); !started || now.Sub(last) >= fsckProgressEvery {
			last = now
			send(FsckEvent{Progress: &p})
		}
	}})
	if err != nil && !started {
		return err // nothing checked: an ordinary error answer
	}
	if err != nil {
		_, body := adminError(err)
		send(FsckEvent{Error: &body})
		s.Log.Error("store check stopped", "err", err, "repaired", report.Repaired)
	} else {
		s.Log.Info("store check done", "repair", in.Repair, "blobs", report.Blobs, "links", report.Links, "tags", report.Tags,
			"corruptBlobs", report.CorruptBlobs, "strayFiles", report.StrayFiles, "badLinks", report.BadLinks, "badTags", report.BadTags,
			"repaired", report.Repaired, "unrepaired", report.Unrepaired)
	}
	for _, p := range report.Problems {
		if p.Repaired {
			s.Log.Warn("store check repaired", "kind", p.Kind, "repository", p.Repository, "tag", p.Tag, "digest", p.Digest, "path", p.Path, "detail", p.Detail, "action", p.Action)
		}
	}
	send(FsckEvent{Report: &report})
	return nil
}

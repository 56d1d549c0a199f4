package registry

import (
	"context"
	"net/http"

	"github.com/regcache/regcache/local"
)

// GarbageCollector runs one garbage collection (local.Repos).
type GarbageCollector interface {
	CollectGarbage(ctx context.Context) (local.GCReport, error)
}

// gcRoutes serves POST /admin/v1/gc: one garbage collection now, answered
// with its report.
func (s *server) gcRoutes(mux *http.ServeMux) {
	if s.GC == nil {
		return
	}
	mux.Handle("POST /admin/v1/gc", s.admin(func(w http.ResponseWriter, r *http.Request) error {
		rep, err := s.GC.CollectGarbage(r.Context())
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, rep)
		return nil
	}))
}

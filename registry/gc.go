package registry

import (
	"context"
	"net/http"
	"strconv"

	"github.com/regcache/regcache/eviction"
	"github.com/regcache/regcache/local"
)

// GarbageCollector runs one garbage collection, or plans one (local.Repos).
type GarbageCollector interface {
	CollectGarbage(ctx context.Context) (local.GCReport, error)
	PlanGarbage(ctx context.Context) (local.GCReport, error)
}

// GCResult is the answer of POST /admin/v1/gc: the garbage collection's
// report, and eviction's when bounds are set.
type GCResult struct {
	local.GCReport
	Eviction *eviction.Report `json:"eviction,omitempty"`
}

// gcRoutes serves POST /admin/v1/gc[?dryRun=true]: eviction by the
// configured bounds, then one garbage collection, now; with dryRun, what
// they would remove, removing nothing.
func (s *server) gcRoutes(mux *http.ServeMux) {
	if s.GC == nil {
		return
	}
	mux.Handle("POST /admin/v1/gc", s.admin(func(w http.ResponseWriter, r *http.Request) error {
		dry, _ := strconv.ParseBool(r.URL.Query().Get("dryRun"))
		var res GCResult
		if s.Lifecycle.Evict != nil {
			rep, err := s.Lifecycle.Evict.Evict(r.Context(), dry)
			if err != nil {
				return err
			}
			res.Eviction = &rep
		}
		var err error
		if dry {
			res.GCReport, err = s.GC.PlanGarbage(r.Context())
		} else {
			res.GCReport, err = s.GC.CollectGarbage(r.Context())
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, res)
		return nil
	}))
}

package registry

import (
	"context"
	"net/http"

	"github.com/regcache/regcache/status"
)

// StatusSource builds the status summary (status.Reporter).
type StatusSource interface {
	Status(ctx context.Context) status.Summary
}

// Observability endpoints:
//
//	GET  /metrics                  Prometheus metrics (Config.Metrics), unauthenticated
//	                               like /healthz: scrapers hold no admin token
//	GET  /admin/v1/status          the status summary, JSON (admin token)
//	POST /admin/v1/ui-tickets      a one-time link that opens the status page (admin token)
//	GET  /ui/                      the status page (admin token or a session; see ui.go)
func (s *server) observabilityRoutes(mux *http.ServeMux) {
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics)
	}
	if s.Status == nil {
		return
	}
	mux.Handle("GET /admin/v1/status", s.admin(func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, s.Status.Status(r.Context()))
		return nil
	}))
	newStatusPage(s).routes(mux)
}

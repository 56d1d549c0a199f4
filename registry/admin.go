package registry

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/regcache/regcache/archive"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/credentials"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/warm"
)

// Admin API, JSON over HTTP, guarded by the admin token:
//
//	GET    /admin/v1/cache-rules          list
//	POST   /admin/v1/cache-rules          create (body: a rule)
//	GET    /admin/v1/cache-rules/{name}   show
//	PATCH  /admin/v1/cache-rules/{name}   update (body: {"credentialSetName": "...", "tagTTL": "10m", "maxStale": "72h", "deletedTags": "forget"}; "" resets)
//	DELETE /admin/v1/cache-rules/{name}   delete
func (s *server) adminRoutes(mux *http.ServeMux) {
	mux.Handle("GET /admin/v1/cache-rules", s.admin(s.listRules))
	mux.Handle("POST /admin/v1/cache-rules", s.admin(s.createRule))
	mux.Handle("GET /admin/v1/cache-rules/{name}", s.admin(s.showRule))
	mux.Handle("PATCH /admin/v1/cache-rules/{name}", s.admin(s.updateRule))
	mux.Handle("DELETE /admin/v1/cache-rules/{name}", s.admin(s.deleteRule))
	mux.Handle("/admin/", s.admin(func(w http.ResponseWriter, r *http.Request) error {
		return fmt.Errorf("%w: %s %s", errNotFound, r.Method, r.URL.Path)
	}))
}

// AdminError is the body of every failed admin request.
type AdminError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	Value   string `json:"value,omitempty"`
	Rule    string `json:"conflictingRule,omitempty"`
	// Rules are the cache rules that use a credential set being deleted.
	Rules []string `json:"rules,omitempty"`
}

// admin wraps an admin handler with token authentication and error writing.
func (s *server) admin(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.AdminToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="regcache-admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]AdminError{"error": {Code: "UNAUTHORIZED",
				Message: "admin token missing or wrong: send Authorization: Bearer <token> (regcache writes it to <data-dir>/admin.token)"}})
			return
		}
		if s.Lifecycle.Offline {
			w.Header().Set(offlineHeader, "true")
		}
		if err := h(w, r); err != nil {
			status, body := adminError(err)
			if status >= 500 {
				s.Log.ErrorContext(r.Context(), "admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeJSON(w, status, map[string]AdminError{"error": body})
		}
	})
}

// adminErrors maps the sentinels of the admin API to a code and status,
// like ociErrors does for the distribution API; the first match wins.
var adminErrors = []struct {
	sentinel error
	code     string
	status   int
}{
	{cache.ErrRuleNotFound, "NOT_FOUND", http.StatusNotFound},
	{credentials.ErrSetNotFound, "NOT_FOUND", http.StatusNotFound},
	{errNotFound, "NOT_FOUND", http.StatusNotFound},
	{credentials.ErrNoVaultSecrets, "NO_VAULT_SECRETS", http.StatusNotFound},
	{credentials.ErrExists, "CONFLICT", http.StatusConflict},
	{cache.ErrReadOnly, "READ_ONLY", http.StatusConflict},
	{credentials.ErrReadOnly, "READ_ONLY", http.StatusConflict},
	{cache.ErrTooManyRules, "LIMIT_REACHED", http.StatusConflict},
	{credentials.ErrTooManySets, "LIMIT_REACHED", http.StatusConflict},
	{storage.ErrCheckRunning, "CONFLICT", http.StatusConflict},
	{errBadRequest, "BAD_REQUEST", http.StatusBadRequest},
	{errTooLarge, "TOO_LARGE", http.StatusRequestEntityTooLarge},
	{warm.ErrInvalid, "BAD_REQUEST", http.StatusBadRequest},
	{archive.ErrInvalid, "INVALID_ARCHIVE", http.StatusBadRequest},
	{cache.ErrOffline, "OFFLINE", http.StatusServiceUnavailable},
	{cache.ErrNameInvalid, "BAD_REQUEST", http.StatusBadRequest},
	{cache.ErrNameUnknown, "NOT_FOUND", http.StatusNotFound},
	{cache.ErrManifestUnknown, "NOT_FOUND", http.StatusNotFound},
	{cache.ErrBlobUnknown, "NOT_FOUND", http.StatusNotFound},
	{cache.ErrTooManyRequests, "TOOMANYREQUESTS", http.StatusTooManyRequests},
	{storage.ErrStorageFull, "STORAGE_FULL", http.StatusInsufficientStorage},
}

// adminError returns the status and body of a failed admin request: errors
// carrying details (a field, a conflicting rule, the rules using a set)
// first, then the sentinel table; anything else is INTERNAL.
func adminError(err error) (int, AdminError) {
	var fe *cache.FieldError
	var ce *cache.ConflictError
	var iu *credentials.InUseError
	switch {
	case errors.As(err, &fe):
		return http.StatusBadRequest, AdminError{Code: "INVALID_FIELD", Message: err.Error(), Field: fe.Field, Value: fe.Value}
	case errors.As(err, &ce):
		return http.StatusConflict, AdminError{Code: "CONFLICT", Message: err.Error(), Rule: ce.Rule}
	case errors.As(err, &iu):
		return http.StatusConflict, AdminError{Code: "IN_USE", Message: err.Error(), Rules: iu.Rules}
	}
	for _, e := range adminErrors {
		if errors.Is(err, e.sentinel) {
			return e.status, AdminError{Code: e.code, Message: err.Error()}
		}
	}
	return http.StatusInternalServerError, AdminError{Code: "INTERNAL", Message: err.Error()}
}

var (
	errBadRequest = errors.New("bad request")
	errTooLarge   = errors.New("request too large")
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// maxAdminBody bounds an admin request body.
const maxAdminBody = 1 << 20

// decodeBody decodes a JSON request body of at most maxAdminBody bytes
// holding exactly one JSON object, refusing unknown fields so a typo is
// not silently ignored.
func decodeBody(r *http.Request, v any) error { return decodeBodyLimit(r, v, maxAdminBody) }

// decodeBodyLimit is decodeBody with another size limit.
func decodeBodyLimit(r *http.Request, v any, limit int64) error {
	raw, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return fmt.Errorf("%w: request body: %v", errBadRequest, err)
	}
	if int64(len(raw)) > limit {
		return fmt.Errorf("%w: request body: larger than %d bytes", errTooLarge, limit)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %v", errBadRequest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: request body: unexpected data after the JSON object at byte %d", errBadRequest, dec.InputOffset())
	}
	return nil
}

// RuleView is a cache rule as the admin API answers it: the rule, and the
// endpoint its upstream is reached at (computed from the upstreams
// configuration, not stored with the rule): the scheme regcache really
// uses is visible before the first pull.
type RuleView struct {
	cache.Rule       `yaml:",inline"`
	UpstreamEndpoint string `json:"upstreamEndpoint" yaml:"upstreamEndpoint"`
	// UpstreamStatus is the pull limit the upstream announced for the
	// rule's credential set, and a wait after a 429.
	UpstreamStatus *cache.UpstreamStatus `json:"upstreamStatus,omitempty" yaml:"upstreamStatus,omitempty"`
}

func (s *server) view(r cache.Rule) RuleView {
	v := RuleView{Rule: r, UpstreamEndpoint: s.Rules.Endpoint(r)}
	if s.Lifecycle.Upstreams != nil {
		st := s.Lifecycle.Upstreams.UpstreamStatus(r)
		v.UpstreamStatus = &st
	}
	return v
}

func (s *server) listRules(w http.ResponseWriter, r *http.Request) error {
	rules := s.Rules.List()
	views := make([]RuleView, len(rules))
	for i, rule := range rules {
		views[i] = s.view(rule)
	}
	writeJSON(w, http.StatusOK, views)
	return nil
}

func (s *server) showRule(w http.ResponseWriter, r *http.Request) error {
	rule, err := s.Rules.Get(r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.view(rule))
	return nil
}

func (s *server) createRule(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name          string `json:"name"`
		Source        string `json:"sourceRepository"`
		Target        string `json:"targetRepository"`
		CredentialSet string `json:"credentialSetName"`
		TagTTL        string `json:"tagTTL"`
		MaxStale      string `json:"maxStale"`
		DeletedTags   string `json:"deletedTags"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	rule, err := s.Rules.Create(r.Context(), cache.Rule{Name: in.Name, Source: in.Source, Target: in.Target, CredentialSet: in.CredentialSet, TagTTL: in.TagTTL,
		MaxStale: in.MaxStale, DeletedTags: in.DeletedTags})
	if err != nil {
		return err
	}
	s.audit(r, "cache-rule.create", rule.Name, "sourceRepository", rule.Source, "targetRepository", rule.Target,
		"credentialSetName", rule.CredentialSet, "tagTTL", rule.TagTTL)
	writeJSON(w, http.StatusCreated, s.view(rule))
	return nil
}

func (s *server) updateRule(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		CredentialSet *string `json:"credentialSetName"`
		TagTTL        *string `json:"tagTTL"`
		MaxStale      *string `json:"maxStale"`
		DeletedTags   *string `json:"deletedTags"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	if in.CredentialSet == nil && in.TagTTL == nil && in.MaxStale == nil && in.DeletedTags == nil {
		return fmt.Errorf(`%w: nothing to update: send {"credentialSetName": "<set>"} ("" removes the credential set), {"tagTTL": "10m"} ("" restores the default; "never" pins tags), {"maxStale": "72h"} ("" is unlimited) and/or {"deletedTags": "forget"} ("" or "serve" keeps serving them)`, errBadRequest)
	}
	rule, err := s.Rules.Update(r.Context(), r.PathValue("name"), cache.RuleChange{CredentialSet: in.CredentialSet, TagTTL: in.TagTTL, MaxStale: in.MaxStale, DeletedTags: in.DeletedTags})
	if err != nil {
		return err
	}
	s.audit(r, "cache-rule.update", rule.Name, changedFields("credentialSetName", in.CredentialSet, "tagTTL", in.TagTTL)...)
	writeJSON(w, http.StatusOK, s.view(rule))
	return nil
}

func (s *server) deleteRule(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.Rules.Delete(r.Context(), name); err != nil {
		return err
	}
	s.audit(r, "cache-rule.delete", name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

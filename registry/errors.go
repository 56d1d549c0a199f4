package registry

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/regcache/regcache/auth"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/storage"
)

// Errors found while parsing a request; they map to OCI codes below.
var (
	errTagInvalid    = errors.New("invalid tag")
	errDigestInvalid = errors.New("invalid digest")
	errUnsupported   = errors.New("the operation is unsupported")
	errPageInvalid   = errors.New("invalid pagination number")
	errNotFound      = errors.New("no such endpoint")
)

// ociError is one row of the table below.
type ociError struct {
	sentinel error
	code     string
	status   int
}

// ociErrors maps sentinels to the error codes of the distribution spec
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes).
// The first row whose sentinel matches (errors.Is) wins.
var ociErrors = []ociError{
	{cache.ErrNameInvalid, "NAME_INVALID", http.StatusBadRequest},
	{errTagInvalid, "TAG_INVALID", http.StatusBadRequest},
	{errDigestInvalid, "DIGEST_INVALID", http.StatusBadRequest},
	{storage.ErrInvalidDigest, "DIGEST_INVALID", http.StatusBadRequest},
	{errPageInvalid, "PAGINATION_NUMBER_INVALID", http.StatusBadRequest},
	{errUnsupported, "UNSUPPORTED", http.StatusMethodNotAllowed},
	{errNotFound, "NOT_FOUND", http.StatusNotFound},
	{cache.ErrNameUnknown, "NAME_UNKNOWN", http.StatusNotFound},
	{cache.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound},
	{cache.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound},
	{auth.ErrUnauthenticated, "UNAUTHORIZED", http.StatusUnauthorized},
	{auth.ErrInsufficientScope, "UNAUTHORIZED", http.StatusUnauthorized},
	{auth.ErrDenied, "DENIED", http.StatusForbidden},
	{auth.ErrTooManyAttempts, "TOOMANYREQUESTS", http.StatusTooManyRequests},
	{errTokenRequest, "UNSUPPORTED", http.StatusBadRequest},
	{cache.ErrUnauthorized, "UNAUTHORIZED", http.StatusUnauthorized},
	{cache.ErrDenied, "DENIED", http.StatusForbidden},
	{cache.ErrTooManyRequests, "TOOMANYREQUESTS", http.StatusTooManyRequests},
	{cache.ErrUnavailable, "UNAVAILABLE", http.StatusServiceUnavailable},
}

// codeOf returns the OCI code and HTTP status of err: UNKNOWN and 500 when
// no row matches.
func codeOf(err error) (string, int) {
	for _, e := range ociErrors {
		if errors.Is(err, e.sentinel) {
			return e.code, e.status
		}
	}
	return "UNKNOWN", http.StatusInternalServerError
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeOCIError writes err as a spec error body with its status.
func writeOCIError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code, status := codeOf(err)
	if status >= 500 {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Del("ETag")
	h.Set("Content-Type", "application/json")
	var c *challengeError
	switch {
	case errors.As(err, &c):
		h.Set("WWW-Authenticate", c.challenge) // client authentication (auth.go)
	case status == http.StatusUnauthorized:
		// Clients expect a challenge with a 401; here regcache asks for no
		// credentials, the upstream refused the rule's.
		h.Set("WWW-Authenticate", `Basic realm="regcache"`)
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	json.NewEncoder(w).Encode(errorBody{Errors: []errorEntry{{Code: code, Message: err.Error()}}})
}

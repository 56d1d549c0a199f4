package registry

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/regcache/regcache/auth"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

// Errors found while parsing a request; they map to OCI codes below.
var (
	errTagInvalid    = errors.New("invalid tag")
	errDigestInvalid = errors.New("invalid digest")
	errUnsupported   = errors.New("the operation is unsupported")
	errPageInvalid   = errors.New("invalid pagination number")
	errNotFound      = errors.New("no such endpoint")
	errURLTooLong    = errors.New("request URL too long")
	errRangeInvalid  = errors.New("invalid Content-Range")
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
	{errURLTooLong, "UNSUPPORTED", http.StatusRequestURITooLong},
	{cache.ErrNameUnknown, "NAME_UNKNOWN", http.StatusNotFound},
	{cache.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound},
	{cache.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound},
	{local.ErrDenied, "DENIED", http.StatusForbidden},
	{local.ErrDeleteDisabled, "UNSUPPORTED", http.StatusMethodNotAllowed},
	{local.ErrManifestTooLarge, "MANIFEST_INVALID", http.StatusRequestEntityTooLarge},
	{local.ErrManifestInvalid, "MANIFEST_INVALID", http.StatusBadRequest},
	{local.ErrManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest},
	{local.ErrDigestInvalid, "DIGEST_INVALID", http.StatusBadRequest},
	{local.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound},
	{local.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound},
	{uploads.ErrUnknown, "BLOB_UPLOAD_UNKNOWN", http.StatusNotFound},
	{uploads.ErrRange, "BLOB_UPLOAD_INVALID", http.StatusRequestedRangeNotSatisfiable},
	{uploads.ErrInvalid, "BLOB_UPLOAD_INVALID", http.StatusBadRequest},
	{uploads.ErrTooLarge, "SIZE_INVALID", http.StatusRequestEntityTooLarge},
	{errRangeInvalid, "BLOB_UPLOAD_INVALID", http.StatusBadRequest},
	{auth.ErrUnauthenticated, "UNAUTHORIZED", http.StatusUnauthorized},
	{auth.ErrInsufficientScope, "UNAUTHORIZED", http.StatusUnauthorized},
	{auth.ErrDenied, "DENIED", http.StatusForbidden},
	{auth.ErrTooManyAttempts, "TOOMANYREQUESTS", http.StatusTooManyRequests},
	{errTokenRequest, "UNSUPPORTED", http.StatusBadRequest},
	{cache.ErrUnauthorized, "UNAUTHORIZED", http.StatusUnauthorized},
	{cache.ErrDenied, "DENIED", http.StatusForbidden},
	{cache.ErrTooManyRequests, "TOOMANYREQUESTS", http.StatusTooManyRequests},
	{cache.ErrOffline, "UNAVAILABLE", http.StatusServiceUnavailable},
	{cache.ErrUnavailable, "UNAVAILABLE", http.StatusServiceUnavailable},
	{storage.ErrStorageFull, "UNAVAILABLE", http.StatusInsufficientStorage},
	{storage.ErrDigestMismatch, "DIGEST_INVALID", http.StatusBadRequest},
	{storage.ErrSizeMismatch, "SIZE_INVALID", http.StatusBadRequest},
}

// statusClientClosed is recorded for a request whose client went away
// before the answer (nginx's convention; never sent).
const statusClientClosed = 499

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
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away while regcache worked for it: nothing
		// failed here and nobody reads an answer. The access log records
		// nginx's 499, client closed request.
		log.Debug("client went away", "method", r.Method, "path", r.URL.Path, "err", err)
		w.WriteHeader(statusClientClosed)
		return
	}
	code, status := codeOf(err)
	if status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Del("ETag")
	h.Set("Content-Type", "application/json")
	var wait interface{ RetryAfter() time.Duration }
	if errors.As(err, &wait) {
		// An upstream asked regcache to wait: so must the client.
		h.Set("Retry-After", strconv.Itoa(int(max(wait.RetryAfter().Round(time.Second)/time.Second, 1))))
	}
	var c *challengeError
	switch {
	case errors.As(err, &c):
		h.Set("WWW-Authenticate", c.challenge) // client authentication (auth.go)
	case status == http.StatusUnauthorized:
		// Clients expect a challenge with a 401; here regcache asks for no
		// credentials, the upstream refused the rule's.
		h.Set("WWW-Authenticate", `Basic realm="regcache"`)
	}
	msg := cache.PublicMessage(err)
	if status >= 500 {
		// The distribution spec's warnings: clients that print them
		// (containerd, and docker through it) show the reason where they
		// would show only the status: docker prints the body of a 4xx
		// answer but not of a 5xx. Not on 4xx, which are part of normal
		// flows (a HEAD before an upload, a referrers probe).
		// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#warnings
		h.Set("Warning", warning(msg))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	json.NewEncoder(w).Encode(errorBody{Errors: []errorEntry{{Code: code, Message: msg}}})
}

// warning formats msg as a Warning header value of the distribution spec:
// code 299, no agent, a quoted text of printable ASCII, at most 200
// characters.
func warning(msg string) string {
	b := make([]byte, 0, len(msg)+8)
	b = append(b, `299 - "`...)
	for i := 0; i < len(msg) && i < 200; i++ {
		switch c := msg[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}

package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/auth"
	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/local"
	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/uploads"
)

func TestCodeOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		wantCode   string
		wantStatus int
	}{
		{"name invalid", cache.ErrNameInvalid, "NAME_INVALID", http.StatusBadRequest},
		{"tag invalid", errTagInvalid, "TAG_INVALID", http.StatusBadRequest},
		{"digest invalid", errDigestInvalid, "DIGEST_INVALID", http.StatusBadRequest},
		{"storage invalid digest", storage.ErrInvalidDigest, "DIGEST_INVALID", http.StatusBadRequest},
		{"pagination invalid", errPageInvalid, "PAGINATION_NUMBER_INVALID", http.StatusBadRequest},
		{"unsupported", errUnsupported, "UNSUPPORTED", http.StatusMethodNotAllowed},
		{"no such endpoint", errNotFound, "NOT_FOUND", http.StatusNotFound},
		{"URL too long", errURLTooLong, "UNSUPPORTED", http.StatusRequestURITooLong},
		{"name unknown", cache.ErrNameUnknown, "NAME_UNKNOWN", http.StatusNotFound},
		{"manifest unknown", cache.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound},
		{"blob unknown", cache.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound},
		{"unauthorized", cache.ErrUnauthorized, "UNAUTHORIZED", http.StatusUnauthorized},
		{"denied", cache.ErrDenied, "DENIED", http.StatusForbidden},
		{"too many requests", cache.ErrTooManyRequests, "TOOMANYREQUESTS", http.StatusTooManyRequests},
		{"unavailable", cache.ErrUnavailable, "UNAVAILABLE", http.StatusServiceUnavailable},
		{"offline", cache.ErrOffline, "UNAVAILABLE", http.StatusServiceUnavailable},
		{"storage full", storage.ErrStorageFull, "UNAVAILABLE", http.StatusInsufficientStorage},
		{"push into a cache", local.ErrDenied, "DENIED", http.StatusForbidden},
		{"delete disabled", local.ErrDeleteDisabled, "UNSUPPORTED", http.StatusMethodNotAllowed},
		{"manifest too large", local.ErrManifestTooLarge, "MANIFEST_INVALID", http.StatusRequestEntityTooLarge},
		{"manifest invalid", local.ErrManifestInvalid, "MANIFEST_INVALID", http.StatusBadRequest},
		{"manifest blob unknown", local.ErrManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest},
		{"pushed digest mismatch", local.ErrDigestInvalid, "DIGEST_INVALID", http.StatusBadRequest},
		{"local manifest unknown", local.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound},
		{"local blob unknown", local.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound},
		{"upload unknown", uploads.ErrUnknown, "BLOB_UPLOAD_UNKNOWN", http.StatusNotFound},
		{"chunk out of order", uploads.ErrRange, "BLOB_UPLOAD_INVALID", http.StatusRequestedRangeNotSatisfiable},
		{"upload invalid", uploads.ErrInvalid, "BLOB_UPLOAD_INVALID", http.StatusBadRequest},
		{"upload too large", uploads.ErrTooLarge, "SIZE_INVALID", http.StatusRequestEntityTooLarge},
		{"bad Content-Range", errRangeInvalid, "BLOB_UPLOAD_INVALID", http.StatusBadRequest},
		{"upload digest mismatch", storage.ErrDigestMismatch, "DIGEST_INVALID", http.StatusBadRequest},
		{"upload size mismatch", storage.ErrSizeMismatch, "SIZE_INVALID", http.StatusBadRequest},
		{"fill digest mismatch is the upstream's fault", fmt.Errorf("%w: %w", cache.ErrUnavailable, storage.ErrDigestMismatch), "UNAVAILABLE", http.StatusServiceUnavailable},
		{"client not authenticated", auth.ErrUnauthenticated, "UNAUTHORIZED", http.StatusUnauthorized},
		{"token scope insufficient", auth.ErrInsufficientScope, "UNAUTHORIZED", http.StatusUnauthorized},
		{"client denied", auth.ErrDenied, "DENIED", http.StatusForbidden},
		{"too many failed logins", auth.ErrTooManyAttempts, "TOOMANYREQUESTS", http.StatusTooManyRequests},
		{"login retry", &auth.RetryError{RetryAfter: time.Minute}, "TOOMANYREQUESTS", http.StatusTooManyRequests},
		{"token request", errTokenRequest, "UNSUPPORTED", http.StatusBadRequest},

		{"wrapped blob unknown", fmt.Errorf("x: %w", cache.ErrBlobUnknown), "BLOB_UNKNOWN", http.StatusNotFound},
		{"twice wrapped manifest unknown", fmt.Errorf("a: %w", fmt.Errorf("b: %w", cache.ErrManifestUnknown)), "MANIFEST_UNKNOWN", http.StatusNotFound},
		{"wrapped storage digest", fmt.Errorf("open: %w", storage.ErrInvalidDigest), "DIGEST_INVALID", http.StatusBadRequest},
		{"joined with unknown", errors.Join(errors.New("boom"), cache.ErrDenied), "DENIED", http.StatusForbidden},
		{"wrapped rate limit", fmt.Errorf("fetch: %w: %w", cache.ErrTooManyRequests, errors.New("429")), "TOOMANYREQUESTS", http.StatusTooManyRequests},

		{"unknown error", errors.New("disk on fire"), "UNKNOWN", http.StatusInternalServerError},
		{"storage not found is not an OCI code", storage.ErrNotFound, "UNKNOWN", http.StatusInternalServerError},
		{"wrapped unknown error", fmt.Errorf("x: %w", errors.New("y")), "UNKNOWN", http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, status := codeOf(tt.err)
			if code != tt.wantCode || status != tt.wantStatus {
				t.Errorf("codeOf(%v) = %s, %d; want %s, %d", tt.err, code, status, tt.wantCode, tt.wantStatus)
			}
		})
	}

	// Every row of the table is covered above, so a new sentinel needs a case.
	t.Run("table covered", func(t *testing.T) {
		t.Parallel()
		for _, row := range ociErrors {
			found := false
			for _, tt := range tests {
				if tt.err == row.sentinel {
					found = true
					if tt.wantCode != row.code || tt.wantStatus != row.status {
						t.Errorf("row %v = %s/%d, test expects %s/%d", row.sentinel, row.code, row.status, tt.wantCode, tt.wantStatus)
					}
				}
			}
			if !found {
				t.Errorf("ociErrors row %v (%s) has no case in TestCodeOf", row.sentinel, row.code)
			}
		}
	})
}

func TestWriteOCIError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		method     string
		err        error
		wantStatus int
		wantCode   string
		wantAuth   bool
		wantLogged bool
	}{
		{name: "GET not found", method: http.MethodGet, err: fmt.Errorf("x: %w", cache.ErrBlobUnknown), wantStatus: 404, wantCode: "BLOB_UNKNOWN"},
		{name: "HEAD not found", method: http.MethodHead, err: cache.ErrManifestUnknown, wantStatus: 404, wantCode: "MANIFEST_UNKNOWN"},
		{name: "GET bad request", method: http.MethodGet, err: fmt.Errorf("%w: n=%q", errPageInvalid, "abc"), wantStatus: 400, wantCode: "PAGINATION_NUMBER_INVALID"},
		{name: "GET unauthorized", method: http.MethodGet, err: fmt.Errorf("pull: %w", cache.ErrUnauthorized), wantStatus: 401, wantCode: "UNAUTHORIZED", wantAuth: true},
		{name: "HEAD unauthorized", method: http.MethodHead, err: cache.ErrUnauthorized, wantStatus: 401, wantCode: "UNAUTHORIZED", wantAuth: true},
		{name: "GET unknown is logged", method: http.MethodGet, err: errors.New("disk on fire"), wantStatus: 500, wantCode: "UNKNOWN", wantLogged: true},
		{name: "GET unavailable is logged", method: http.MethodGet, err: cache.ErrUnavailable, wantStatus: 503, wantCode: "UNAVAILABLE", wantLogged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			req := httptest.NewRequestWithContext(t.Context(), tt.method, "/v2/a/blobs/x", nil)
			rec := httptest.NewRecorder()
			// Headers of content that was about to be served must not leak
			// onto the error.
			rec.Header().Set("Content-Length", "1234")
			rec.Header().Set("Docker-Content-Digest", "sha256:abc")
			rec.Header().Set("ETag", `"sha256:abc"`)

			writeOCIError(rec, req, log, tt.err)

			res := rec.Result()
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			for _, h := range []string{"Content-Length", "Docker-Content-Digest", "ETag"} {
				if v := res.Header.Get(h); v != "" {
					t.Errorf("%s = %q, want it removed on an error", h, v)
				}
			}
			auth := res.Header.Get("WWW-Authenticate")
			if tt.wantAuth && !strings.HasPrefix(auth, "Basic ") {
				t.Errorf("WWW-Authenticate = %q, want a Basic challenge", auth)
			}
			if !tt.wantAuth && auth != "" {
				t.Errorf("WWW-Authenticate = %q on a %d", auth, tt.wantStatus)
			}
			if got := strings.Contains(logs.String(), "request failed"); got != tt.wantLogged {
				t.Errorf("logged = %v, want %v; log: %s", got, tt.wantLogged, logs.String())
			}

			body := rec.Body.Bytes()
			if tt.method == http.MethodHead {
				if len(body) != 0 {
					t.Errorf("HEAD body = %q, want none", body)
				}
				return
			}
			// {"errors":[{"code","message"}]} and nothing else.
			var shape map[string][]map[string]any
			if err := json.Unmarshal(body, &shape); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if len(shape) != 1 || len(shape["errors"]) != 1 {
				t.Fatalf("body = %s, want one entry under \"errors\"", body)
			}
			entry := shape["errors"][0]
			if entry["code"] != tt.wantCode {
				t.Errorf("code = %v, want %s", entry["code"], tt.wantCode)
			}
			if entry["message"] != tt.err.Error() {
				t.Errorf("message = %v, want %q", entry["message"], tt.err.Error())
			}
			for k := range entry {
				if k != "code" && k != "message" {
					t.Errorf("unexpected key %q in %s", k, body)
				}
			}
		})
	}
}

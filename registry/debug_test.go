package registry_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// The runtime's profiles are served under /admin/v1/debug/pprof/ with the
// admin token only, and nowhere else.
func TestDebugProfiles(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackConfig{})
	token := map[string]string{"Authorization": "Bearer " + testToken}

	resp, body := do(t, "GET", s.url+"/admin/v1/debug/pprof/goroutine?debug=1", token, nil)
	if resp.StatusCode != 200 || !regexp.MustCompile(`^goroutine profile: total [1-9][0-9]*\n`).Match(body) {
		t.Fatalf("goroutine?debug=1: %s %.80q; want the goroutine count", resp.Status, body)
	}
	resp, body = do(t, "GET", s.url+"/admin/v1/debug/pprof/heap", token, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("heap: %s", resp.Status)
	}
	if _, err := gzip.NewReader(bytes.NewReader(body)); err != nil {
		t.Errorf("heap: not a gzipped profile: %v", err)
	}
	resp, body = do(t, "GET", s.url+"/admin/v1/debug/pprof/", token, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine") {
		t.Errorf("index: %s %.200q", resp.Status, body)
	}

	for _, tc := range []struct {
		name, path string
		header     map[string]string
		status     int
	}{
		{"without the token", "/admin/v1/debug/pprof/goroutine?debug=1", nil, http.StatusUnauthorized},
		{"index without the token", "/admin/v1/debug/pprof/", nil, http.StatusUnauthorized},
		{"CPU profile without the token", "/admin/v1/debug/pprof/profile?seconds=1", nil, http.StatusUnauthorized},
		{"wrong token", "/admin/v1/debug/pprof/heap", map[string]string{"Authorization": "Bearer wrong"}, http.StatusUnauthorized},
		{"unknown profile", "/admin/v1/debug/pprof/nothing", token, http.StatusNotFound},
		{"the command line", "/admin/v1/debug/pprof/cmdline", token, http.StatusNotFound},
		{"below a profile", "/admin/v1/debug/pprof/heap/x", token, http.StatusNotFound},
		{"the default mux's path", "/debug/pprof/goroutine?debug=1", token, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "GET", s.url+tc.path, tc.header, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("GET %s: %s %.200q; want %d", tc.path, resp.Status, body, tc.status)
			}
			if strings.HasPrefix(tc.path, "/admin/") {
				var e adminError
				if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" {
					t.Errorf("GET %s: body %.200q is not an admin error (%v)", tc.path, body, err)
				}
			}
		})
	}
}

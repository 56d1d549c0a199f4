package registry_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/regcache/regcache/cache"
)

// Errors a client sees name the upstream's login server, never the
// internal endpoint regcache reaches it at, and carry the reason in a
// Warning header (which clients such as containerd print) as well as in
// the body.
func TestClientErrorsHideInternalEndpoints(t *testing.T) {
	t.Parallel()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"backend mirror-7.internal.example exploded"}]}`, http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name, endpoint, want string
	}{
		{"upstream error", failing.URL, "upstream docker.io answered 500"},
		{"upstream unreachable", closed, "upstream docker.io could not be reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": tc.endpoint}, rules: []cache.Rule{hubRule}})
			internal := strings.TrimPrefix(tc.endpoint, "http://")
			for _, path := range []string{"/v2/hub/app/manifests/v1", "/v2/hub/app/blobs/sha256:" + strings.Repeat("ab", 32)} {
				resp, body := do(t, "GET", s.url+path, nil, nil)
				if resp.StatusCode < 500 {
					t.Fatalf("GET %s: %s, want a 5xx", path, resp.Status)
				}
				warning := resp.Header.Get("Warning")
				for what, text := range map[string]string{"body": string(body), "Warning header": warning} {
					if strings.Contains(text, internal) || strings.Contains(text, "http://") {
						t.Errorf("GET %s: the %s shows the internal endpoint: %s", path, what, text)
					}
					if !strings.Contains(text, tc.want) {
						t.Errorf("GET %s: the %s %q does not say %q", path, what, text, tc.want)
					}
				}
				if !strings.HasPrefix(warning, `299 - "`) {
					t.Errorf("GET %s: Warning %q is not a 299 warning of the distribution spec", path, warning)
				}
			}
		})
	}
	// A 4xx, part of normal flows, carries no warning.
	s := newStack(t, stackConfig{upstreams: map[string]string{"docker.io": failing.URL}, rules: []cache.Rule{hubRule}})
	if resp, _ := do(t, "GET", s.url+"/v2/local/app/manifests/v1", nil, nil); resp.StatusCode != 404 || resp.Header.Get("Warning") != "" {
		t.Errorf("a 404: %s with Warning %q, want none", resp.Status, resp.Header.Get("Warning"))
	}
}

package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regcache/regcache/cache"
	"github.com/regcache/regcache/metrics"
	"github.com/regcache/regcache/registry"
	"github.com/regcache/regcache/status"
)

// newStatusServer serves the handler of st with the status summary and
// page (as regcache serve wires them), and metrics counted by m.
func newStatusServer(t *testing.T, st *stack, m *metrics.Metrics) *httptest.Server {
	t.Helper()
	src := status.Sources{Rules: st.store, Fills: st.puller, Store: st.blobs}
	cfg := registry.Config{Backend: st.puller, Rules: st.store, AdminToken: testToken, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if m != nil {
		if err := m.Watch(src); err != nil {
			t.Fatal(err)
		}
		src.Activity, cfg.Observer = m, m
	}
	cfg.Status = status.NewReporter(src, "v0.0.0-test", time.Now(), nil)
	h, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func send(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func getUI(t *testing.T, u string, cookie *http.Cookie, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return send(t, noRedirects, req)
}

// TestStatusPageAccess: the page takes the admin token (header), a
// session from the login form, or a one-time link; nothing else.
func TestStatusPageAccess(t *testing.T) {
	t.Parallel()
	st := newStack(t, stackConfig{rules: []cache.Rule{hubRule}})
	srv := newStatusServer(t, st, nil)

	resp, body := getUI(t, srv.URL+"/ui/", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `name="token"`) || strings.Contains(body, "hub-library") {
		t.Fatalf("without the token: %d, want 401 and the login form only:\n%s", resp.StatusCode, body)
	}
	resp, body = getUI(t, srv.URL+"/ui/", nil, "Authorization", "Bearer "+testToken)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-rule="hub-library"`) {
		t.Fatalf("with the token: %d:\n%s", resp.StatusCode, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(body, "<script") || strings.Contains(body, " style=") {
		t.Errorf("the page allows or carries scripts or inline styles: CSP %q", csp)
	}
	if resp, _ := getUI(t, srv.URL+"/ui/", nil, "Authorization", "Bearer wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong token: %d, want 401", resp.StatusCode)
	}

	login := func(token string) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/ui/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, _ := send(t, noRedirects, req)
		return resp
	}
	if resp := login("wrong"); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("login with a wrong token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	resp = login(testToken)
	cookie := sessionCookie(t, resp)
	if resp, body := getUI(t, srv.URL+"/ui/", cookie); resp.StatusCode != http.StatusOK || !strings.Contains(body, "hub-library") {
		t.Errorf("with the session: %d", resp.StatusCode)
	}
	forged := *cookie
	forged.Value = fmt.Sprint(time.Now().Add(100*time.Hour).Unix()) + cookie.Value[strings.Index(cookie.Value, "."):]
	if resp, _ := getUI(t, srv.URL+"/ui/", &forged); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a session whose expiry was changed: %d, want 401", resp.StatusCode)
	}

	// A one-time link, asked for with the token.
	req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/admin/v1/ui-tickets", nil)
	if resp, _ := send(t, noRedirects, req); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a link without the token: %d", resp.StatusCode)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, body = send(t, noRedirects, req)
	var ticket registry.UITicket
	if err := json.Unmarshal([]byte(body), &ticket); err != nil || resp.StatusCode != http.StatusCreated || !strings.HasPrefix(ticket.Path, "/ui/login?ticket=") {
		t.Fatalf("POST /admin/v1/ui-tickets: %d %s", resp.StatusCode, body)
	}
	resp, _ = getUI(t, srv.URL+ticket.Path, nil)
	if c := sessionCookie(t, resp); c == nil {
		t.Fatal("no session from the link")
	}
	if resp, _ := getUI(t, srv.URL+ticket.Path, nil); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("the link used twice: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}

	// Logging out clears the cookie.
	req, _ = http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/ui/logout", nil)
	req.AddCookie(cookie)
	resp, _ = send(t, noRedirects, req)
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].MaxAge >= 0 {
		t.Errorf("logout cookies: %v", cs)
	}
}

// sessionCookie checks a login answer (a redirect to the page with a
// strict, HttpOnly, expiring cookie) and returns the cookie.
func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("login: %d to %q, want 303 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	cs := resp.Cookies()
	if len(cs) != 1 {
		t.Fatalf("login cookies: %v", cs)
	}
	c := cs[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.MaxAge <= 0 || c.MaxAge > 24*3600 || strings.Contains(c.Value, testToken) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP, expiring within a day, without the token", c)
	}
	return c
}

// TestStatusPageShowsTheSummary renders the page with traffic, with no
// rule and with 500 rules: the figures, every rule, the charts.
func TestStatusPageShowsTheSummary(t *testing.T) {
	t.Parallel()
	m, err := metrics.New(prometheus.NewRegistry(), metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	st, _ := newCachedStack(t, logs, m)
	srv := newStatusServer(t, st, m)
	for i, path := range []string{"/v2/hub/app/manifests/v1", "/v2/hub/app/manifests/v1", "/v2/hub/app/manifests/v1"} {
		if resp, body := do(t, "GET", srv.URL+path, nil, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("pull %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := getUI(t, srv.URL+"/ui/", nil, "Authorization", "Bearer "+testToken)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/: %d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{
		`data-rule="hub-library"`, `data-hits="2"`, `data-misses="1"`, `id="hit-ratio">66.7%`,
		`<svg id="ratio-chart"`, `<rect class="warn"`, `<rect class="saved"`, `data-upstream="docker.io"`, `data-state="reachable"`,
		`All healthy`, `v0.0.0-test`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}

	// The JSON summary says the same.
	resp, raw := getUI(t, srv.URL+"/admin/v1/status", nil, "Authorization", "Bearer "+testToken)
	var s status.Summary
	if err := json.Unmarshal([]byte(raw), &s); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin/v1/status: %d %v\n%s", resp.StatusCode, err, raw)
	}
	if len(s.Rules) != 1 || s.Rules[0].Hits != 2 || s.Rules[0].Misses != 1 || s.LastHour.Hits != 2 {
		t.Errorf("summary: %+v", s)
	}

	for _, n := range []int{0, 500} {
		t.Run(fmt.Sprintf("%d rules", n), func(t *testing.T) {
			t.Parallel()
			var rules []cache.Rule
			for i := range n {
				rules = append(rules, cache.Rule{Name: fmt.Sprintf("rule-%03d", i), Source: fmt.Sprintf("docker.io/team%03d/*", i), Target: fmt.Sprintf("t%03d/*", i)})
			}
			st := newStack(t, stackConfig{rules: rules})
			srv := newStatusServer(t, st, nil)
			resp, body := getUI(t, srv.URL+"/ui/", nil, "Authorization", "Bearer "+testToken)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /ui/: %d\n%s", resp.StatusCode, body)
			}
			if got := strings.Count(body, `<tr data-rule=`); got != n {
				t.Errorf("%d rule rows, want %d", got, n)
			}
			if n == 0 && !strings.Contains(body, "No cache rules yet") {
				t.Error("no empty state without rules")
			}
		})
	}
}

// fixedStatus is a StatusSource answering one summary: the page is a
// function of it.
type fixedStatus struct{ s status.Summary }

func (f fixedStatus) Status(context.Context) status.Summary { return f.s }

// TestStatusPageCharts renders a busy hour: a bar per minute with reads
// (none for the quiet minutes), two stacked bars per minute with bytes
// under a round top of scale, rate limits, evictions against the store's
// limit, a failing upstream.
func TestStatusPageCharts(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 1, 12, 30, 20, 0, time.UTC)
	s := status.Summary{Version: "v1.4.0", StartedAt: now.Add(-50 * time.Hour), GeneratedAt: now, Problems: []string{},
		Store:      status.Store{Counted: true, Bytes: 42 << 30, Blobs: 12345, LimitBytes: 50 << 30, Evicted: &status.Evicted{Runs: 4, Images: 321, Bytes: 9 << 30}},
		RateLimits: []status.RateLimit{{Upstream: "docker.io", CredentialSet: "hub", Remaining: 87, Limit: 200}},
		Upstreams:  []status.Upstream{{Name: "ghcr.io", State: status.UpstreamFailing, LastStatus: 503, LastError: "GET ghcr.io answered 503 Service Unavailable"}},
	}
	withReads, withBytes := 0, 0
	for i := 59; i >= 0; i-- {
		m := status.Minute{Start: now.Truncate(time.Minute).Add(-time.Duration(i) * time.Minute)}
		if i%7 != 0 {
			m.Hits, m.Misses, m.StoreBytes, m.FetchedBytes = 90, 10, 600<<20, 300<<20
			withReads++
			withBytes++
		}
		s.LastHour.Minutes = append(s.LastHour.Minutes, m)
	}
	st := newStack(t, stackConfig{})
	h, err := registry.New(registry.Config{Backend: st.puller, Rules: st.store, AdminToken: testToken,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Status: fixedStatus{s}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, body := getUI(t, srv.URL+"/ui/", nil, "Authorization", "Bearer "+testToken)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/: %d\n%s", resp.StatusCode, body)
	}
	ratio := body[strings.Index(body, `<svg id="ratio-chart"`):strings.Index(body, `<svg id="bytes-chart"`)]
	if got := strings.Count(ratio, `<rect class="good"`); got != withReads {
		t.Errorf("%d hit-ratio bars, want %d (one per minute with reads, 90%%: good)", got, withReads)
	}
	bytesChart := body[strings.Index(body, `<svg id="bytes-chart"`):]
	bytesChart = bytesChart[:strings.Index(bytesChart, "</svg>")]
	if saved, fetched := strings.Count(bytesChart, `class="saved"`), strings.Count(bytesChart, `class="fetched"`); saved != withBytes || fetched != withBytes {
		t.Errorf("bytes bars: %d saved, %d fetched; want %d each", saved, fetched, withBytes)
	}
	for _, want := range []string{
		`<span>1.0 GiB</span>`, // 900 MiB a minute: the scale tops at 1 GiB, not 1000 MiB
		`<tr><td class="name">docker.io</td><td data-label="Credential set">hub</td><td data-label="Remaining" class="num">87</td>`,
		`of 50.0 GiB limit · 321 images evicted (9.0 GiB)`,
		`<svg class="meter warn"`, // 84% of the limit
		`data-state="failing"`, `GET ghcr.io answered 503 Service Unavailable`,
		`up 2d 2h`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
}

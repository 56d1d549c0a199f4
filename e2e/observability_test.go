package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/regcache/regcache/e2e/peers"
)

// obsRun is what TestObservability did as a client, to compare with what
// regcache counted.
type obsRun struct {
	t      *testing.T
	rc     *peers.Regcache
	hits   int
	misses int
	stale  int
	// bytes received, by the X-Cache of the answer
	bytes map[string]int
	// fetched is what the misses brought from the upstream (the bodies the
	// client got on a miss: each was fetched once).
	fetched int
	n       int
}

// get sends a GET with request ID id (a new one when ""), checks the
// status and X-Cache, counts what it read and returns the body.
func (o *obsRun) get(path, id string, wantStatus int, wantCache string) []byte {
	o.t.Helper()
	o.n++
	if id == "" {
		id = fmt.Sprintf("obs-%d", o.n)
	}
	req, err := http.NewRequestWithContext(o.t.Context(), http.MethodGet, o.rc.URL()+path, nil)
	if err != nil {
		o.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	req.Header.Set("X-Request-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		o.t.Fatal(err)
	}
	if resp.StatusCode != wantStatus || resp.Header.Get("X-Cache") != wantCache || resp.Header.Get("X-Request-Id") != id {
		o.t.Fatalf("GET %s: %d, X-Cache %q, X-Request-Id %q; want %d, %s, %s\n%s", path, resp.StatusCode,
			resp.Header.Get("X-Cache"), resp.Header.Get("X-Request-Id"), wantStatus, wantCache, id, body)
	}
	if wantStatus == http.StatusOK {
		o.bytes[wantCache] += len(body)
		switch wantCache {
		case "HIT":
			o.hits++
		case "MISS":
			o.misses++
			o.fetched += len(body)
		case "STALE":
			o.stale++
		}
	}
	return body
}

// logLines returns regcache's JSON log lines that have every key=value of
// fields (values compared as text).
func logLines(t *testing.T, logs string, fields map[string]string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
lines:
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		for k, v := range fields {
			if fmt.Sprint(m[k]) != v {
				continue lines
			}
		}
		out = append(out, m)
	}
	return out
}

// waitLog waits for a JSON log line with fields.
func waitLog(t *testing.T, rc *peers.Regcache, fields map[string]string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); len(logLines(t, rc.Logs(), fields)) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %v", fields)
		}
	}
}

// TestObservability runs regcache (metrics on their own loopback address,
// JSON logs at debug level) under a real Prometheus, pulls an image
// through it cold, warm and stale with plain HTTP requests, pushes to a
// local repository, and checks:
//   - X-Cache of each answer: MISS, HIT, STALE, LOCAL;
//   - the request ID a client sent in every log line of its request, the
//     fill's included;
//   - through Prometheus's HTTP API, that the hit, miss, stale and byte
//     counters equal what the client did, credential set health, store
//     usage, and the alert of the broken credential set pending;
//   - that every query of the Grafana dashboard and every alert
//     expression runs without error; promtool check metrics on /metrics
//     and promtool check rules on the alert file;
//   - regcache status, and the status page rendered by headless Chromium
//     (DOM assertions; screenshots kept as artifacts).
func TestObservability(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	promtool := peers.Require(t, "promtool")
	chromium := peers.Require(t, "chromium")
	up := peers.StartGGCR(t)
	img := peers.SeedImage(t, up.Host+"/library/app:v1", true)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, `rules:
  - name: hub-library
    source: docker.io/library/*
    target: hub/*
    credentialSet: hub-creds
    tagTTL: 0s
  - name: quiet-rule
    source: docker.io/quiet/app
    target: quiet
credentialSets:
  - name: hub-creds
    loginServer: docker.io
    usernameSecret: env://REGCACHE_SECRET_HUB_USER
    passwordSecret: env://REGCACHE_SECRET_HUB_PASS
  - name: broken-creds
    loginServer: docker.io
    usernameSecret: env://REGCACHE_SECRET_HUB_USER
    passwordSecret: env://REGCACHE_SECRET_NOT_SET
`)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	rc := peers.StartRegcacheWith(t, bin, peers.ServeOptions{Env: []string{"REGCACHE_SECRET_HUB_USER=puller", "REGCACHE_SECRET_HUB_PASS=pw"}},
		"--config", cfg, "--upstream", "docker.io="+up.URL(), "--log-format", "json", "--log-level", "debug",
		"--metrics-listen", metricsAddr)
	// /metrics moved to its own address.
	for _, c := range []struct {
		url  string
		want int
	}{{rc.URL() + "/metrics", http.StatusNotFound}, {"http://" + metricsAddr + "/metrics", http.StatusOK}} {
		resp, err := http.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("GET %s: %s, want %d", c.url, resp.Status, c.want)
		}
	}
	alerts := deployFile(t, "observability/alerts.yaml")
	prom := peers.StartPrometheus(t, peers.PrometheusOptions{Job: "regcache", Targets: []string{metricsAddr}, RuleFiles: []string{alerts}})

	o := &obsRun{t: t, rc: rc, bytes: map[string]int{}}
	manifest := "/v2/hub/app/manifests/v1"
	blobs := append([]string{img.Config}, img.Layers...)
	// Cold: every read is a miss; the first layer's request has an ID of
	// the client's own.
	o.get(manifest, "", http.StatusOK, "MISS")
	const fillID = "e2e-fill-request.7"
	for i, b := range blobs {
		id := ""
		if i == 1 {
			id = fillID
		}
		o.get("/v2/hub/app/blobs/"+b, id, http.StatusOK, "MISS")
		waitLog(t, rc, map[string]string{"msg": "cached blob", "digest": b})
	}
	// Warm: every read is a hit (the tag, TTL 0s, is revalidated).
	o.get(manifest, "", http.StatusOK, "HIT")
	for _, b := range blobs {
		o.get("/v2/hub/app/blobs/"+b, "", http.StatusOK, "HIT")
	}
	// A local repository: a push, then a pull.
	local := []byte("a blob pushed to a local repository")
	ld := sha(local)
	resp, err := http.Post(rc.URL()+"/v2/lab/tools/blobs/uploads/?digest="+ld, "application/octet-stream", strings.NewReader(string(local)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Cache") != "LOCAL" {
		t.Fatalf("push to lab/tools: %s, X-Cache %q; want 201, LOCAL", resp.Status, resp.Header.Get("X-Cache"))
	}
	o.get("/v2/lab/tools/blobs/"+ld, "", http.StatusOK, "LOCAL")
	// The upstream goes: the tag is served stale, the blobs still hit.
	up.Stop()
	o.get(manifest, "", http.StatusOK, "STALE")
	o.get("/v2/hub/app/blobs/"+img.Config, "", http.StatusOK, "HIT")

	t.Run("request ID", func(t *testing.T) {
		// Every line about the layer the request filled carries its ID: the
		// upstream request, the fill's end, the access log line.
		kinds := map[string]bool{}
		for _, l := range logLines(t, rc.Logs(), nil) {
			text, _ := json.Marshal(l)
			if !strings.Contains(string(text), img.Layers[0]) || (l["msg"] == "request" && l["cache"] == "HIT") {
				continue // another line, or the access line of a later hit
			}
			kinds[fmt.Sprint(l["msg"])] = true
			if l["requestId"] != fillID {
				t.Errorf("a line of request %s without its ID: %s", fillID, text)
			}
		}
		for _, k := range []string{"upstream request", "cached blob", "request"} {
			if !kinds[k] {
				t.Errorf("no %q line of request %s (lines seen: %v)", k, fillID, kinds)
			}
		}
	})

	// Prometheus scrapes every second: wait until it has seen the last
	// counts, then compare each with what the client did.
	imageBytes := o.bytes["MISS"]
	want := []struct {
		query string
		value float64
	}{
		{`regcache_cache_hits_total{rule="hub-library"}`, float64(o.hits)},
		{`regcache_cache_misses_total{rule="hub-library"}`, float64(o.misses)},
		{`regcache_cache_stale_serves_total{rule="hub-library"}`, float64(o.stale)},
		{`regcache_cache_hits_total{rule="quiet-rule"}`, 0},
		{`regcache_served_bytes_total{rule="hub-library",cache="HIT"}`, float64(o.bytes["HIT"])},
		{`regcache_served_bytes_total{rule="hub-library",cache="MISS"}`, float64(imageBytes)},
		{`regcache_served_bytes_total{rule="hub-library",cache="STALE"}`, float64(o.bytes["STALE"])},
		{`regcache_served_bytes_total{cache="LOCAL"}`, float64(len(local))},
		{`regcache_upstream_fetched_bytes_total{upstream="docker.io"}`, float64(o.fetched)},
		{`sum(regcache_http_requests_total{route="manifest",code="2xx"})`, 3},
		{`regcache_credential_set_healthy{set="hub-creds"}`, 1},
		{`regcache_credential_set_healthy{set="broken-creds"}`, 0},
		{`regcache_store_blobs`, float64(len(blobs) + 2)}, // the manifest and the local blob too
		{`regcache_store_bytes`, float64(imageBytes + len(local))},
		{`regcache_fills_in_progress`, 0},
		{`regcache_upload_sessions`, 0},
		// The revalidation that failed once the upstream stopped.
		{`regcache_upstream_requests_total{upstream="docker.io",method="HEAD",code="error"}`, 1},
	}
	if o.hits != 1+len(blobs)+1 || o.misses != 1+len(blobs) || o.stale != 1 {
		t.Fatalf("the run did %d hits, %d misses, %d stale serves", o.hits, o.misses, o.stale)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, w := range want {
		for {
			got, err := prom.Query(t, w.query)
			if err != nil {
				t.Fatal(err)
			}
			v := -1.0
			if len(got) == 1 {
				v = got[0].Value
			}
			if v == w.value {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("Prometheus: %s = %v (%d series), want %v", w.query, v, len(got), w.value)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	t.Run("dashboard and alert queries", func(t *testing.T) {
		exprs := dashboardQueries(t)
		exprs = append(exprs, alertExprs(t, alerts)...)
		if len(exprs) < 30 {
			t.Fatalf("only %d queries found", len(exprs))
		}
		for _, e := range exprs {
			if _, err := prom.Query(t, e); err != nil {
				t.Errorf("%v", err)
			}
		}
		// The rules loaded and evaluate; the broken set's alert is pending.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
			pending, bad := promAlerts(t, prom)
			if len(bad) > 0 {
				t.Fatalf("rules that do not evaluate: %v", bad)
			}
			if pending["RegcacheCredentialSetUnhealthy/broken-creds"] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("RegcacheCredentialSetUnhealthy is not pending for broken-creds: %v", pending)
			}
		}
	})

	t.Run("promtool", func(t *testing.T) {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		text, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		out, errOut, code := peers.RunWith(t, peers.RunOptions{Stdin: strings.NewReader(string(text))}, promtool, "check", "metrics")
		if code != 0 || strings.TrimSpace(out+errOut) != "" {
			t.Errorf("promtool check metrics: exit %d\n%s%s", code, out, errOut)
		}
		if out := runOK(t, peers.RunOptions{}, promtool, "check", "rules", alerts); !strings.Contains(out, "SUCCESS: 10 rules found") {
			t.Errorf("promtool check rules: %s", out)
		}
	})

	t.Run("status command", func(t *testing.T) {
		out := runOK(t, peers.RunOptions{}, bin, "status", "--server", rc.URL(), "--token", rc.Token())
		for _, want := range []string{"2 problems", "credential set broken-creds is unhealthy", "upstream docker.io could not be reached", "hub-library", "quiet-rule", "Healthy", "Unhealthy"} {
			if !strings.Contains(out, want) {
				t.Errorf("regcache status lacks %q:\n%s", want, out)
			}
		}
		var s struct {
			Rules []struct {
				Name   string `json:"name"`
				Hits   int    `json:"hits"`
				Misses int    `json:"misses"`
				Stale  int    `json:"stale"`
			} `json:"rules"`
		}
		raw := runOK(t, peers.RunOptions{}, bin, "status", "-o", "json", "--server", rc.URL(), "--token", rc.Token())
		if err := json.Unmarshal([]byte(raw), &s); err != nil || len(s.Rules) != 2 || s.Rules[0].Hits != o.hits || s.Rules[0].Misses != o.misses || s.Rules[0].Stale != o.stale {
			t.Errorf("regcache status -o json rules %+v (%v), want hub-library with %d hits, %d misses, %d stale", s.Rules, err, o.hits, o.misses, o.stale)
		}
	})

	t.Run("status page", func(t *testing.T) {
		dom := chromiumPage(t, chromium, bin, rc, "", "")
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`<tr data-rule="hub-library">[\s\S]*?data-hits="` + fmt.Sprint(o.hits) + `"[\s\S]*?data-misses="` + fmt.Sprint(o.misses) + `"`),
			regexp.MustCompile(`<tr data-rule="quiet-rule">[\s\S]*?data-hits="0"`),
			regexp.MustCompile(`<tr data-set="hub-creds">[\s\S]*?data-state="Healthy"`),
			regexp.MustCompile(`<tr data-set="broken-creds">[\s\S]*?data-state="Unhealthy"`),
			regexp.MustCompile(`<tr data-upstream="docker.io">[\s\S]*?data-state="unreachable"`),
			regexp.MustCompile(`id="overall"[^>]*>2 problems<`),
			regexp.MustCompile(`id="reads">` + fmt.Sprint(o.hits+o.misses+o.stale) + `<`),
			regexp.MustCompile(`<svg id="ratio-chart"[\s\S]*?<rect class="(good|warn|bad)"`),
		} {
			if !want.MatchString(dom) {
				t.Errorf("the page's DOM does not match %s", want)
			}
		}
		if strings.Contains(dom, "<script") {
			t.Error("the page carries a script")
		}
		for _, shot := range []struct{ name, size string }{{"status-desktop.png", "1280,1180"}, {"status-phone.png", "390,2600"}} {
			chromiumPage(t, chromium, bin, rc, filepath.Join(t.ArtifactDir(), shot.name), shot.size)
		}
	})
}

// chromiumPage opens the status page of rc in headless Chromium through a
// one-time link (regcache status --ui-link): it returns the DOM, or, when
// screenshot is set, saves a screenshot of a window of size "w,h" there.
func chromiumPage(t *testing.T, chromium, bin string, rc *peers.Regcache, screenshot, size string) string {
	t.Helper()
	out := runOK(t, peers.RunOptions{}, bin, "status", "--ui-link", "--server", rc.URL(), "--token", rc.Token())
	link, _, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(link, rc.URL()+"/ui/login?ticket=") {
		t.Fatalf("regcache status --ui-link printed %q", out)
	}
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir()}
	if screenshot != "" {
		args = append(args, "--window-size="+size, "--screenshot="+screenshot)
	} else {
		args = append(args, "--dump-dom")
	}
	dom := runOK(t, peers.RunOptions{}, chromium, append(args, link)...)
	if screenshot != "" {
		if fi, err := os.Stat(screenshot); err != nil || fi.Size() < 10000 {
			t.Errorf("screenshot %s: %v", screenshot, err)
		}
		t.Logf("screenshot: %s", screenshot)
		return ""
	}
	if !strings.Contains(dom, `data-rule=`) {
		t.Fatalf("Chromium did not reach the status page:\n%s", dom)
	}
	return dom
}

// dashboardQueries returns every PromQL expression of the Grafana
// dashboard (panels, rows' panels and templating), with Grafana's
// variables replaced by what Grafana would send.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(deployFile(t, "observability/dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__range", "5m", "$__interval", "15s", "$instance", ".*")
	var exprs []string
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, r := range ps {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q has a target without an expression", p.Title)
				}
				exprs = append(exprs, vars.Replace(tg.Expr))
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+), *\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		m := labelValues.FindStringSubmatch(fmt.Sprint(q["query"]))
		if m == nil {
			t.Errorf("template variable query %v is not label_values(<series>, <label>)", v.Query)
			continue
		}
		exprs = append(exprs, m[1])
	}
	for _, e := range exprs {
		if strings.Contains(e, "$") {
			t.Errorf("a dashboard query keeps a variable this test does not know: %s", e)
		}
	}
	return exprs
}

// alertExprs returns the expressions of the rules in a rule file.
func alertExprs(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Expr string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return out
}

// promAlerts reads /api/v1/rules: the alerts pending or firing (as
// "name/set"), and the rules whose last evaluation failed.
func promAlerts(t *testing.T, p *peers.Prometheus) (active map[string]bool, bad []string) {
	t.Helper()
	resp, err := http.Get("http://" + p.Addr + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
					Alerts    []struct {
						Labels map[string]string `json:"labels"`
						State  string            `json:"state"`
					} `json:"alerts"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	active = map[string]bool{}
	n := 0
	for _, g := range body.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health == "err" {
				bad = append(bad, r.Name+": "+r.LastError)
			}
			for _, a := range r.Alerts {
				active[r.Name+"/"+a.Labels["set"]] = true
			}
		}
	}
	if n != 10 {
		bad = append(bad, fmt.Sprintf("%d rules loaded, want 10", n))
	}
	return active, bad
}

// waitFillsDone waits until rc has no blob fill running (its status
// summary says so): a pull returns once the client has the bytes, a
// moment before the fill commits them to the store.
func waitFillsDone(t *testing.T, rc *peers.Regcache) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rc.URL()+"/admin/v1/status", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+rc.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Fills struct {
				Running int `json:"running"`
			} `json:"fills"`
		}
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /admin/v1/status: %s, %v", resp.Status, err)
		}
		if s.Fills.Running == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d fills still running after 30s", s.Fills.Running)
		}
	}
}

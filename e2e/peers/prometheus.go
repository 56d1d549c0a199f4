package peers

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// Prometheus is a running Prometheus server (Debian's prometheus package)
// on a 127.0.0.1 port, with a temporary configuration and storage.
type Prometheus struct {
	// Addr is "127.0.0.1:port".
	Addr string
	out  *syncBuffer
}

// PrometheusOptions configures StartPrometheus.
type PrometheusOptions struct {
	// Job names the scrape job of Targets (the job label).
	Job string
	// Targets are host:port addresses scraped every ScrapeInterval at
	// MetricsPath (default /metrics).
	Targets        []string
	MetricsPath    string
	ScrapeInterval time.Duration
	// RuleFiles are loaded as rule_files: Prometheus refuses to start on
	// a file it cannot load.
	RuleFiles []string
}

// StartPrometheus starts prometheus on a free loopback port and waits until
// it is ready. The test is skipped (failed in CI) when the program is not
// installed; the server is killed by t.Cleanup and its output logged when
// the test failed.
func StartPrometheus(t testing.TB, opts PrometheusOptions) *Prometheus {
	t.Helper()
	bin := Require(t, "prometheus")
	dir := t.TempDir()
	if opts.MetricsPath == "" {
		opts.MetricsPath = "/metrics"
	}
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Second
	}
	type staticConfig struct {
		Targets []string `yaml:"targets"`
	}
	cfg := map[string]any{
		"global": map[string]any{"scrape_interval": opts.ScrapeInterval.String(), "evaluation_interval": opts.ScrapeInterval.String()},
		"scrape_configs": []map[string]any{{
			"job_name": opts.Job, "metrics_path": opts.MetricsPath, "scrape_interval": opts.ScrapeInterval.String(),
			"static_configs": []staticConfig{{Targets: opts.Targets}},
		}},
		"rule_files": opts.RuleFiles,
	}
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("start prometheus: encode config: %v", err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	out := &syncBuffer{}
	var p *process
	var addr string
	for attempt := 0; attempt < bindAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("start prometheus: %v", err)
		}
		addr = loopback(port)
		off := out.Len()
		p, err = startProcess(bin, []string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr, "--log.level=warn"}, childEnv(nil), out)
		if err != nil {
			t.Fatalf("start prometheus: %v", err)
		}
		err = waitReady(t.Context(), "http://"+addr+"/-/ready", nil, func(code int) bool { return code == http.StatusOK }, p, readyTimeout)
		if err == nil {
			break
		}
		p.kill()
		if !errors.Is(err, errExited) || !bindFailed(out.since(off)) {
			t.Fatalf("start prometheus: %v\nconfig:\n%s\noutput:\n%s", err, raw, out.String())
		}
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("prometheus %s output:\n%s", addr, out.String())
		}
	})
	return &Prometheus{Addr: addr, out: out}
}

// Sample is one series of a query result.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Query runs an instant query through the HTTP API
// (https://prometheus.io/docs/prometheus/latest/querying/api/). A query
// Prometheus refuses (a bad expression, an unknown function) is an error,
// with its message; an empty result is not. Scalar and string results
// come back as one sample without labels.
func (p *Prometheus) Query(t testing.TB, expr string) ([]Sample, error) {
	t.Helper()
	u := "http://" + p.Addr + "/api/v1/query?" + url.Values{"query": {expr}}.Encode()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, fmt.Errorf("query %q: %s: %s", expr, resp.Status, raw)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, body.Error)
	}
	switch body.Data.ResultType {
	case "scalar", "string":
		var v [2]any
		if err := json.Unmarshal(body.Data.Result, &v); err != nil {
			return nil, fmt.Errorf("query %q: %w", expr, err)
		}
		f, _ := strconv.ParseFloat(fmt.Sprint(v[1]), 64)
		return []Sample{{Value: f}}, nil
	}
	var series []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
		Values [][2]any          `json:"values"`
	}
	if err := json.Unmarshal(body.Data.Result, &series); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	out := make([]Sample, 0, len(series))
	for _, s := range series {
		v := s.Value
		if len(s.Values) > 0 { // a range vector: its last value
			v = s.Values[len(s.Values)-1]
		}
		f, err := strconv.ParseFloat(fmt.Sprint(v[1]), 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %v: %w", expr, v[1], err)
		}
		out = append(out, Sample{Metric: s.Metric, Value: f})
	}
	return out, nil
}

// Logs returns what the server has written so far.
func (p *Prometheus) Logs() string { return p.out.String() }

package peers

import (
	"strings"
	"testing"
	"time"
)

// TestStartPrometheus starts a Prometheus that scrapes itself, waits for
// its first scrape, and checks that Query returns samples and refuses a
// bad expression with Prometheus's message.
func TestStartPrometheus(t *testing.T) {
	t.Parallel()
	p := StartPrometheus(t, PrometheusOptions{Job: "self"})
	// The target is only known once it listens: a second one scrapes the first.
	q := StartPrometheus(t, PrometheusOptions{Job: "other", Targets: []string{p.Addr}})
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := q.Query(t, `up{job="other"}`)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 && got[0].Value == 1 && got[0].Metric["instance"] == p.Addr {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful scrape of %s: %+v", p.Addr, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got, err := q.Query(t, `1 + 1`); err != nil || len(got) != 1 || got[0].Value != 2 {
		t.Errorf("scalar query: %+v, %v", got, err)
	}
	if _, err := q.Query(t, `sum(rate(up[5m]`); err == nil || !strings.Contains(err.Error(), "parse error") {
		t.Errorf("a bad expression: %v, want Prometheus's parse error", err)
	}
}

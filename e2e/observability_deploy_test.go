package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/regcache/regcache/e2e/peers"
)

// renderObjects renders a kustomization with `kubectl kustomize` and
// decodes every object as a generic document.
func renderObjects(t *testing.T, dir string) []map[string]any {
	t.Helper()
	kubectl := peers.Require(t, "kubectl")
	out := runOK(t, peers.RunOptions{}, kubectl, "kustomize", dir)
	var objs []map[string]any
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		objs = append(objs, o)
	}
}

// field follows keys through nested maps (an int key indexes a list).
func field(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func objectOf(t *testing.T, objs []map[string]any, kind string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, o := range objs {
		if o["kind"] == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s rendered, want 1", len(found), kind)
	}
	return found[0]
}

// TestKustomizeObservability renders deploy/observability and checks it
// against deploy/kubernetes: the ServiceMonitor selects the regcache
// Service by its labels, in its namespace, on its port, at /metrics; the
// PrometheusRule holds exactly the rules of alerts.yaml; the dashboard
// ConfigMap holds dashboard.json byte for byte with Grafana's sidecar
// label. The StatefulSet's pods carry the prometheus.io scrape
// annotations for the port regcache listens on.
func TestKustomizeObservability(t *testing.T) {
	t.Parallel()
	app := renderObjects(t, deployFile(t, "kubernetes"))
	obs := renderObjects(t, deployFile(t, "observability"))
	svc := objectOf(t, app, "Service")
	sm := objectOf(t, obs, "ServiceMonitor")

	sel, _ := field(sm, "spec", "selector", "matchLabels").(map[string]any)
	labels, _ := field(svc, "metadata", "labels").(map[string]any)
	if len(sel) == 0 {
		t.Error("the ServiceMonitor selects no labels")
	}
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%v; the Service's labels are %v", k, v, labels)
		}
	}
	ns := field(svc, "metadata", "namespace")
	if names := field(sm, "spec", "namespaceSelector", "matchNames"); !reflect.DeepEqual(names, []any{ns}) || field(sm, "metadata", "namespace") != ns {
		t.Errorf("the ServiceMonitor is in %v looking at %v; the Service is in %v", field(sm, "metadata", "namespace"), names, ns)
	}
	port, path := field(sm, "spec", "endpoints", 0, "port"), field(sm, "spec", "endpoints", 0, "path")
	if port != field(svc, "spec", "ports", 0, "name") || path != "/metrics" {
		t.Errorf("the ServiceMonitor scrapes port %v at %v; the Service's port is %v, regcache serves /metrics", port, path, field(svc, "spec", "ports", 0, "name"))
	}

	var alerts map[string]any
	raw, err := os.ReadFile(deployFile(t, "observability/alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &alerts); err != nil {
		t.Fatal(err)
	}
	rule := objectOf(t, obs, "PrometheusRule")
	if !reflect.DeepEqual(field(rule, "spec", "groups"), alerts["groups"]) {
		t.Error("prometheusrule.yaml's spec.groups differ from alerts.yaml's groups: copy alerts.yaml into it")
	}

	cm := objectOf(t, obs, "ConfigMap")
	dashboard, err := os.ReadFile(deployFile(t, "observability/dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if field(cm, "data", "regcache.json") != string(dashboard) || field(cm, "metadata", "labels", "grafana_dashboard") != "1" {
		t.Error("the dashboard ConfigMap does not hold dashboard.json with the label grafana_dashboard=1")
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []any  `json:"panels"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil || d.UID == "" || len(d.Panels) == 0 {
		t.Errorf("dashboard.json: %v (uid %q, %d panels)", err, d.UID, len(d.Panels))
	}

	sts := objectOf(t, app, "StatefulSet")
	ann, _ := field(sts, "spec", "template", "metadata", "annotations").(map[string]any)
	containerPort := field(sts, "spec", "template", "spec", "containers", 0, "ports", 0, "containerPort")
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" || ann["prometheus.io/port"] != fmt.Sprint(containerPort) {
		t.Errorf("pod annotations %v: want prometheus.io/scrape true, path /metrics, port %v", ann, containerPort)
	}
}

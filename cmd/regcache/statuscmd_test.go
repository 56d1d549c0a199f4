package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/regcache/regcache/status"
)

// TestStatusCommand prints the summary of a running server as tables, JSON
// and YAML, and a one-time link that opens the status page.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	srv := newCLIServer(t)
	env := map[string]string{"REGCACHE_SERVER": srv.url, "REGCACHE_TOKEN": cliToken}

	out, _, err := runCLI(t, t.Context(), env, "status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, want := range []string{"regcache v-cli-test, up ", ": all healthy", "LAST HOUR", "HIT RATIO", "STORE", "CREDENTIAL SETS",
		"UPSTREAMS", "RULES (since start)", "cfg-alpine", "docker.io/library/ubuntu", "unknown"} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	rules := strings.Split(strings.TrimSpace(out[strings.Index(out, "RULES (since start)"):]), "\n")
	if len(rules) != 4 || !strings.HasPrefix(rules[2], "Ubuntu ") || !strings.HasPrefix(rules[3], "cfg-alpine ") ||
		!slices.Equal(strings.Fields(rules[3])[4:], []string{"0", "0", "0", "–", "0", "B"}) {
		t.Errorf("rules table:\n%s", strings.Join(rules, "\n"))
	}

	out, _, err = runCLI(t, t.Context(), env, "status", "-o", "json")
	var s status.Summary
	if err != nil || json.Unmarshal([]byte(out), &s) != nil || len(s.Rules) != 2 || s.Version != "v-cli-test" {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, t.Context(), env, "status", "-o", "yaml")
	var y map[string]any
	if err != nil || yaml.Unmarshal([]byte(out), &y) != nil || y["version"] != "v-cli-test" {
		t.Fatalf("status -o yaml: %v\n%s", err, out)
	}
	var usage *usageError
	if _, _, err := runCLI(t, t.Context(), env, "status", "-o", "wide"); !errors.As(err, &usage) {
		t.Errorf("status -o wide: %v, want a usage error", err)
	}

	out, _, err = runCLI(t, t.Context(), env, "status", "--ui-link")
	link, _, _ := strings.Cut(out, "\n")
	if err != nil || !strings.HasPrefix(link, srv.url+"/ui/login?ticket=") {
		t.Fatalf("status --ui-link: %v\n%s", err, out)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Errorf("the link answered %s with cookies %v, want a session and a redirect to the page", resp.Status, resp.Cookies())
	}
}

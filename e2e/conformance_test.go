package e2e

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcache/regcache/e2e/peers"
)

// conformanceVersion is the version of the OCI distribution-spec
// conformance suite (module github.com/opencontainers/distribution-spec/
// conformance) that .ci/install-peers builds as oci-conformance-<version>.
const conformanceVersion = "v0.0.0-20231101194043-f2182352d4cc"

// conformanceWorkflows are the suite's workflows, as its report names them.
var conformanceWorkflows = []string{"Pull", "Push", "Content Discovery", "Content Management"}

// TestConformance runs the OCI distribution-spec conformance suite against
// regcache: all four workflows (pull, push, content discovery, content
// management) on a local namespace, and the pull workflow, read-only (no
// setup pushes), on a cached repository. Every check must pass. The suite's
// JUnit and HTML reports are kept in the test's artifact directory (go
// test -artifacts keeps them under -outputdir).
func TestConformance(t *testing.T) {
	t.Parallel()
	suite := peers.Require(t, "oci-conformance-"+conformanceVersion)
	bin := peers.BuildRegcache(t)
	u := peers.StartGGCR(t)
	img := peers.SeedImage(t, u.Host+"/library/conformance:v1", true)
	rc := peers.StartRegcache(t, bin, "--upstream", "docker.io="+u.URL(), "--default-registry", "docker.io", "--local-namespace", "lab/*")
	createRule(t, bin, rc, "HubLibrary", "docker.io/library/*", "hub/*")

	t.Run("local namespace, all workflows", func(t *testing.T) {
		counts := runConformance(t, suite, map[string]string{
			"OCI_ROOT_URL":                rc.URL(),
			"OCI_NAMESPACE":               "lab/conformance",
			"OCI_CROSSMOUNT_NAMESPACE":    "lab/conformance-mount",
			"OCI_TEST_PULL":               "1",
			"OCI_TEST_PUSH":               "1",
			"OCI_TEST_CONTENT_DISCOVERY":  "1",
			"OCI_TEST_CONTENT_MANAGEMENT": "1",
		})
		for _, w := range conformanceWorkflows {
			if counts[w].passed == 0 {
				t.Errorf("workflow %s: no check passed (%+v)", w, counts[w])
			}
		}
	})

	t.Run("cached repository, pull workflow", func(t *testing.T) {
		before := len(rc.Logs())
		counts := runConformance(t, suite, map[string]string{
			"OCI_ROOT_URL":        rc.URL(),
			"OCI_NAMESPACE":       "hub/conformance",
			"OCI_TEST_PULL":       "1",
			"OCI_TAG_NAME":        "v1",
			"OCI_MANIFEST_DIGEST": img.Digest,
			"OCI_BLOB_DIGEST":     img.Config,
		})
		if counts["Pull"].passed == 0 {
			t.Errorf("pull workflow: no check passed (%+v)", counts["Pull"])
		}
		// Read-only: the suite pushed nothing.
		for _, line := range strings.Split(rc.Logs()[before:], "\n") {
			kv := logFields(line)
			if kv["msg"] == "request" && kv["method"] != "GET" && kv["method"] != "HEAD" {
				t.Errorf("the read-only run sent a %s: %s", kv["method"], line)
			}
		}
	})
}

// workflowCount counts the checks of one workflow.
type workflowCount struct{ passed, failed, skipped int }

// runConformance runs the suite with env, logs its per-workflow results
// and fails the test on any failed check.
func runConformance(t *testing.T, suite string, env map[string]string) map[string]workflowCount {
	t.Helper()
	dir := t.ArtifactDir()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite, "-test.v", "-ginkgo.no-color")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OCI_REPORT_DIR="+dir, "OCI_HIDE_SKIPPED_WORKFLOWS=1", "OCI_DEBUG=0")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, runErr := cmd.CombinedOutput()
	if err := os.WriteFile(filepath.Join(dir, "output.txt"), out, 0o644); err != nil {
		t.Error(err)
	}
	counts, err := junitCounts(filepath.Join(dir, "junit.xml"))
	if err != nil {
		t.Fatalf("conformance report: %v (suite: %v)\n%s", err, runErr, tail(string(out), 80))
	}
	failed := 0
	for _, w := range conformanceWorkflows {
		c := counts[w]
		failed += c.failed
		t.Logf("conformance %s %s: %d passed, %d failed, %d skipped", conformanceVersion, w, c.passed, c.failed, c.skipped)
	}
	t.Logf("reports: %s", dir)
	if failed > 0 || runErr != nil {
		t.Fatalf("conformance: %d checks failed (suite exit: %v)\n%s", failed, runErr, tail(string(out), 150))
	}
	return counts
}

// junitCounts reads a ginkgo JUnit report and counts its checks by
// workflow.
func junitCounts(path string) (map[string]workflowCount, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var report struct {
		Suites []struct {
			Cases []struct {
				Name    string    `xml:"name,attr"`
				Status  string    `xml:"status,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(raw, &report); err != nil {
		return nil, err
	}
	const prefix = "OCI Distribution Conformance Tests "
	counts := map[string]workflowCount{}
	for _, s := range report.Suites {
		for _, c := range s.Cases {
			_, name, ok := strings.Cut(c.Name, prefix)
			if !ok {
				continue // suite-level nodes (reporters)
			}
			workflow := ""
			for _, w := range conformanceWorkflows {
				if strings.HasPrefix(name, w+" ") {
					workflow = w
				}
			}
			if workflow == "" {
				return nil, fmt.Errorf("check %q belongs to no known workflow", c.Name)
			}
			wc := counts[workflow]
			switch {
			case c.Failure != nil || c.Error != nil || c.Status == "failed" || c.Status == "panicked":
				wc.failed++
			case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
				wc.skipped++
			default:
				wc.passed++
			}
			counts[workflow] = wc
		}
	}
	return counts, nil
}

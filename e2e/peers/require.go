package peers

import (
	"os"
	"os/exec"
	"testing"
)

// Require returns the path of the program bin found on $PATH. When it is
// missing the test is skipped, except in CI (CI=true), where every peer must
// be installed and a missing one fails the test instead of silently skipping
// the coverage it provides.
func Require(t testing.TB, bin string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not installed: CI requires it (run .ci/install-peers): %v", bin, err)
	}
	t.Skipf("%s not installed (run .ci/install-peers): %v", bin, err)
	return ""
}

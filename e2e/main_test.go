package e2e

import (
	"os"
	"testing"

	"github.com/regcache/regcache/e2e/peers"
)

// TestMain stops the SeaweedFS that REGCACHE_E2E_STORE=s3 shares between
// the tests once they ran.
func TestMain(m *testing.M) {
	code := m.Run()
	peers.StopSharedS3(code != 0, os.Stderr)
	os.Exit(code)
}

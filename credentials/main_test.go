package credentials

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: health
// checks, token watchers and upstream connections must end with their owner.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

package cache

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: fills,
// flushers and upstream connections must all end with their owner.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

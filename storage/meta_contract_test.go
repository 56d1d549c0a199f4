package storage_test

import (
	"path/filepath"
	"testing"

	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/storage/metatest"
)

// TestMetaContract runs the metadata contract on bbolt. One process holds
// a bbolt file, so the concurrency cases race through one handle.
func TestMetaContract(t *testing.T) {
	t.Parallel()
	metatest.Run(t, func(t *testing.T) metatest.Store {
		m, err := storage.OpenMeta(filepath.Join(t.TempDir(), "meta.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	})
}

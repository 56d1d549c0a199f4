//go:build !unix

package storage

// freeSpace is unknown here: blobs are refused only when a write fails.
func freeSpace(string) (uint64, bool) { return 0, false }

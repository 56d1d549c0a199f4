//go:build !unix

package storage

// freeSpace is unknown here: blobs are refused only when a write fails.
func freeSpace(string) (uint64, bool) { return 0, false }

func fsSpace(string) (size, free uint64, ok bool) { return 0, 0, false }

//go:build !unix

package storage

// FilesystemSize cannot tell the capacity of a filesystem here.
func FilesystemSize(string) (uint64, bool) { return 0, false }

//go:build unix

package storage

import "syscall"

// FilesystemSize returns the capacity in bytes of the filesystem holding
// dir (a cache limit given as a percentage of it); false when it cannot be
// told.
func FilesystemSize(dir string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return uint64(st.Blocks) * uint64(st.Bsize), true
}

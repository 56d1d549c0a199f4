//go:build unix

package storage

import "syscall"

// freeSpace returns the bytes an unprivileged writer may still use on the
// filesystem holding dir.
func freeSpace(dir string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true
}

// fsSpace returns the size of the filesystem holding dir and the bytes an
// unprivileged writer may still use there.
func fsSpace(dir string) (size, free uint64, ok bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, false
	}
	return uint64(st.Blocks) * uint64(st.Bsize), uint64(st.Bavail) * uint64(st.Bsize), true
}

//go:build !linux

package storage

// lockHolder cannot tell who holds a lock outside Linux (no /proc/locks);
// OpenMeta then says that another process holds the database.
func lockHolder(string) (pid int, command string, ok bool) { return 0, "", false }

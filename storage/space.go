package storage

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrStorageFull reports that the store's filesystem has no room for what
// is being written (ENOSPC, or a quota).
var ErrStorageFull = errors.New("cache storage full")

// full returns err as ErrStorageFull when it is the filesystem saying it
// has no room, else err. The message names what was being stored, not the
// file (an internal path).
func full(err error, what string) error {
	if err == nil || errors.Is(err, ErrStorageFull) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: no room to store %s", ErrStorageFull, what)
	}
	return err
}

// checkRoom refuses, before a byte is written, a blob of size bytes that
// cannot fit in the free space of the filesystem holding dir: a client
// then gets "storage full" at once rather than a stream that breaks off.
func checkRoom(dir string, size int64, what string) error {
	if size <= 0 {
		return nil
	}
	free, ok := freeSpace(dir)
	if !ok || uint64(size) <= free {
		return nil
	}
	return fmt.Errorf("%w: %s needs %d bytes, %d are free", ErrStorageFull, what, size, free)
}

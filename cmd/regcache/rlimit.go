package main

import (
	"log/slog"
	"syscall"
)

// raiseOpenFilesLimit raises the soft limit on open files to the hard
// limit (every client connection, blob being served and upstream
// connection holds a descriptor) and returns the limit in force. The Go
// runtime raises it at start on Linux already; this makes it explicit,
// and logged, whatever started the process.
func raiseOpenFilesLimit(log *slog.Logger) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open-files limit", "err", err)
		return 0
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			log.Warn("cannot raise the open-files limit", "soft", lim.Cur, "hard", lim.Max, "err", err)
			return lim.Cur
		}
		lim = raised
	}
	return lim.Cur
}

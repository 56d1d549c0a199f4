package storage

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockHolder returns the PID and command name of the process holding the
// flock(2) lock that bbolt takes on the file at path, as the kernel lists it
// in /proc/locks. ok is false when it cannot be told: the file or
// /proc/locks cannot be read, or the holder is not visible from this PID
// namespace (the kernel shows PID 0 then).
func lockHolder(path string) (pid int, command string, ok bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, "", false
	}
	st, isStat := fi.Sys().(*syscall.Stat_t)
	if !isStat {
		return 0, "", false
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0, "", false
	}
	want := fileID(uint64(st.Dev), uint64(st.Ino)) // the types vary by architecture
	for line := range strings.Lines(string(locks)) {
		// "3: FLOCK  ADVISORY  WRITE 1234 fe:00:762139 0 EOF"; a waiter
		// blocked on that lock is listed as "3: -> FLOCK ..." and skipped.
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil || pid <= 0 {
			return 0, "", false
		}
		comm, err := os.ReadFile("/proc/" + f[4] + "/comm")
		if err != nil {
			// The holder exited since /proc/locks was read.
			return 0, "", false
		}
		return pid, strings.TrimSpace(string(comm)), true
	}
	return 0, "", false
}

// fileID formats a device and inode number as /proc/locks does:
// "<major>:<minor>:<inode>", major and minor in hexadecimal (at least two
// digits), the inode in decimal. The device number is split the way glibc's
// major() and minor() split Linux's dev_t.
func fileID(dev, ino uint64) string {
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	return pad2(strconv.FormatUint(major, 16)) + ":" + pad2(strconv.FormatUint(minor, 16)) + ":" + strconv.FormatUint(ino, 10)
}

func pad2(s string) string {
	if len(s) < 2 {
		return "0" + s
	}
	return s
}

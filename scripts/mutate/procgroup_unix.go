//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup runs cmd (go test) in a process group of its own and makes
// cancelling it kill the whole group: the test binary and anything it
// started (regcache, registries, daemons of the end-to-end tests) end with
// it when the check is interrupted.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

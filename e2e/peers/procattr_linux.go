package peers

import (
	"os/exec"
	"syscall"
)

// configureChild makes the kernel kill the child if the test binary dies
// without running its cleanups (a panic, a -timeout), so that no registry or
// regcache process outlives the test run holding a port.
func configureChild(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

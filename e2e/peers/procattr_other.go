//go:build !linux

package peers

import "os/exec"

// configureChild is a no-op where the kernel offers no parent-death signal.
func configureChild(*exec.Cmd) {}

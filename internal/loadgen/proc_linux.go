package loadgen

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel kill the child when the bench dies, so
// that no server outlives an interrupted run.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

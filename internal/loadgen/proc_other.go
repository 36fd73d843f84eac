//go:build !linux

package loadgen

import "os/exec"

func setParentDeath(*exec.Cmd) {}

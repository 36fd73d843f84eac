//go:build unix

package bolt

import (
	"os"
	"syscall"
)

// unlock drops bbolt's flock on f. Closing f is not enough: the memory
// mapping bbolt made keeps the open file, and so the lock, alive.
func unlock(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

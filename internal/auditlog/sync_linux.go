package auditlog

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data (not its times): all a reader needs.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	return serr
}

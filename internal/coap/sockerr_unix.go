//go:build unix

package coap

import (
	"net"

	"golang.org/x/sys/unix"
)

// clearSocketError reads and so clears the error a socket keeps (say an
// ICMP port-unreachable for an exchange that is over), so that it does not
// fail the next exchange on the socket. It reports false when the socket
// is unusable.
func clearSocketError(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	if err := rc.Control(func(fd uintptr) {
		_, gerr := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		ok = gerr == nil
	}); err != nil {
		return false
	}
	return ok
}

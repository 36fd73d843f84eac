//go:build !unix

package coap

import "net"

// clearSocketError cannot clear a kept socket error here: the socket is
// not reused.
func clearSocketError(*net.UDPConn) bool { return false }

//go:build !linux

package coap

import "syscall"

const reusePortSupported = false

func setReusePort(_, _ string, _ syscall.RawConn) error { return nil }

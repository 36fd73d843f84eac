//go:build !linux

package auditlog

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

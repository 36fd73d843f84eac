//go:build !unix

package bolt

import "os"

// unlock is a no-op where bbolt's lock ends with the file handle.
func unlock(*os.File) {}

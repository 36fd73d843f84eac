// Package testenv holds the helpers every package's tests share, one per
// need: a locked buffer for logs written from other goroutines
// (LockedBuffer), a bounded wait on a real condition instead of a sleep
// (Eventually, EventuallyWithin, Poll), and the end of a test whose
// service or program is missing from this machine (SkipOrFail): under
// CI=true it fails (CI must run every test), and otherwise it skips with
// a message saying how to get what is missing.
//
// "go test ./..." shows nothing of a passing package's output without -v,
// t.Skip's message included, so a developer would never learn that the
// PostgreSQL or Chromium tests did not run. SkipOrFail therefore also
// writes its message, once per process, to standard error (seen with -v,
// in "go test" of the current directory and when the package fails) and
// to the terminal, when there is one, which sees it in every mode.
package testenv

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
)

// CIEnv is the variable whose value "true" makes a missing service fail
// the test.
const CIEnv = "CI"

var told sync.Map // messages already written

// terminal opens the controlling terminal; tests replace it.
var terminal = func() (io.WriteCloser, error) { return os.OpenFile("/dev/tty", os.O_WRONLY, 0) }

// SkipOrFail ends t: Fatal under CI=true, Skip otherwise, with msg, which
// should say what is missing and how to get it.
func SkipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(CIEnv) == "true" {
		t.Fatal(msg)
	}
	Note(msg)
	t.Skip(msg)
}

// Note writes "SKIP: msg" where a developer sees it even without -v:
// standard error and the terminal, once per process.
func Note(msg string) {
	if _, dup := told.LoadOrStore(msg, true); dup {
		return
	}
	// One line, whatever the wrapped errors in msg hold.
	line := fmt.Sprintf("SKIP (%s): %s\n", program(), strings.Join(strings.Fields(msg), " "))
	os.Stderr.WriteString(line)
	if tty, err := terminal(); err == nil {
		io.WriteString(tty, line)
		tty.Close()
	}
}

// program names the test binary ("postgres.test"), which names the
// package.
func program() string {
	if len(os.Args) == 0 {
		return "test"
	}
	name := os.Args[0]
	for i := len(name) - 1; i >= 0; i-- {
		if os.IsPathSeparator(name[i]) {
			return name[i+1:]
		}
	}
	return name
}

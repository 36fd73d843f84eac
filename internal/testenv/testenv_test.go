package testenv

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

// TestNoteOnce: a message reaches the terminal once, however many tests
// skip for the same reason.
func TestNoteOnce(t *testing.T) {
	var tty bytes.Buffer
	old := terminal
	terminal = func() (io.WriteCloser, error) { return nopCloser{&tty}, nil }
	defer func() { terminal = old }()
	Note("Frobnicator is not reachable: start it")
	Note("Frobnicator is not reachable: start it")
	if got := tty.String(); strings.Count(got, "SKIP (") != 1 || !strings.Contains(got, "Frobnicator is not reachable: start it\n") {
		t.Fatalf("terminal got %q", got)
	}
}

// TestSkipOrFail: outside CI the test skips (the CI=true branch is
// t.Fatal, which a test cannot call on a TB of its own).
func TestSkipOrFail(t *testing.T) {
	old := terminal
	terminal = func() (io.WriteCloser, error) { return nopCloser{&bytes.Buffer{}}, nil }
	defer func() { terminal = old }()
	t.Setenv(CIEnv, "")
	t.Run("outside CI", func(t *testing.T) {
		ran := false
		defer func() {
			if !t.Skipped() || ran {
				t.Errorf("skipped %v, ran on %v", t.Skipped(), ran)
			}
		}()
		SkipOrFail(t, "no frobnicator here")
		ran = true
	})
}

package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDeviceFlagsRefused: out-of-range limits are refused before anything
// is read or bound.
func TestDeviceFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--source-rate", "0"}, "--source-rate 0 and --source-burst 20 must be positive"},
		{[]string{"--source-burst", "-1"}, "must be positive"},
		{[]string{"--max-sessions-per-user", "0"}, "--max-sessions-per-user and --max-pending-per-user must be at least 1"},
		{[]string{"--max-pending-per-user", "0"}, "must be at least 1"},
		{[]string{"--verify-source=maybe"}, "invalid boolean value"},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"device", "--cred", "/nonexistent/cred.json", "--listen", "127.0.0.1:0"}, tc.args...)
		if code := run(args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.wantErr) {
			t.Errorf("tagauth %q: exit %d, stderr %q; want 2 and %q", args, code, stderr.String(), tc.wantErr)
		}
	}
}

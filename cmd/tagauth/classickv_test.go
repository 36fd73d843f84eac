package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClassicKeyVersionCLI: a classic gateway has one master key, version
// 1, and the CLI, the credential file and the gateway's info all say so
// (they used to say 0 for the credential).
func TestClassicKeyVersionCLI(t *testing.T) {
	dir, _ := gwServeTest(t, "--profile", "classic")
	credPath := filepath.Join(t.TempDir(), "d1.json")
	out := gwMustRun(t, "provision", "--id", "d1", "--out", credPath, "--data", dir)
	if !strings.Contains(out, "(key version 1)") {
		t.Errorf("provision said %q, want key version 1", out)
	}
	b, err := os.ReadFile(credPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"kv": 1,`) {
		t.Errorf("classic credential file:\n%s\nwant \"kv\": 1", b)
	}
	if out := gwMustRun(t, "info", "--data", dir); !strings.Contains(out, "key versions: 1\n") || !strings.Contains(out, "profile:      classic") {
		t.Errorf("gateway info:\n%s", out)
	}
}

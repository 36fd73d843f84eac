package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/store/bolt"
)

// "gateway compact" rewrites a stopped gateway's store, keeps the old one
// beside it, and the gateway opens the new one; bad audit flags are usage
// errors that name the flag.
func TestGatewayCompact(t *testing.T) {
	dir := t.TempDir()
	g, err := gateway.Open(gateway.Config{DataDir: dir, CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	rc, out, errOut := gwRun("compact", "--data", dir)
	if rc != 0 || !strings.Contains(out, "compacted") {
		t.Fatalf("compact: %d %q %q", rc, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, bolt.FileName+".old")); err != nil {
		t.Fatalf("old store not kept: %v", err)
	}
	g, err = gateway.Open(gateway.Config{DataDir: dir, CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("the compacted store does not open: %v", err)
	}
	g.Close()
	if rc, _, _ := gwRun("compact"); rc != 2 {
		t.Errorf("compact without --data: exit %d, want 2", rc)
	}
	for flag, val := range map[string]string{"--audit-fsync": "sometimes", "--audit-keep": "1m", "--audit-sample": "1ns"} {
		rc, _, errOut := gwRun("serve", "--data", dir, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0", flag, val)
		if rc != 2 || !strings.Contains(errOut, flag) {
			t.Errorf("serve %s %s: %d %q", flag, val, rc, errOut)
		}
	}
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
)

// TestProvisionFromCSV: "provision --from" writes one 0600 credential per
// device, named by the id's escaping, and a re-run, a bad row or a file
// already in the way is refused before anything is provisioned.
func TestProvisionFromCSV(t *testing.T) {
	dir, _ := gwServeTest(t)
	src := filepath.Join(t.TempDir(), "devices.csv")
	if err := os.WriteFile(src, []byte("id,group\nfleet-1,plant-a\n\"fleet/../2\",plant-b\n.fleet-3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "creds")
	stdout := gwMustRun(t, "provision", "--from", src, "--out-dir", out, "--data", dir)
	if !strings.Contains(stdout, "provisioned 3 devices from "+src) {
		t.Fatalf("provision --from said %q", stdout)
	}
	for id, name := range map[string]string{"fleet-1": "fleet-1.json", "fleet/../2": "fleet%2F..%2F2.json", ".fleet-3": "%2Efleet-3.json"} {
		path := filepath.Join(out, name)
		c, err := credfile.Load(path) // refuses a file others may read
		if err != nil || c.ID != id {
			t.Fatalf("%s: %+v %v", path, c, err)
		}
		if fi, err := os.Stat(path); err != nil || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600) {
			t.Fatalf("%s: %v %v", path, fi.Mode(), err)
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 3 {
		t.Fatalf("%d files in the out dir, want 3", len(ents))
	}

	// A re-run into the same directory: refused by the files, before the
	// gateway is asked.
	rc, _, errOut := gwRun("provision", "--from", src, "--out-dir", out, "--data", dir)
	if rc != 1 || !strings.Contains(errOut, "3 credential files cannot be written") || !strings.Contains(errOut, "line 3: "+filepath.Join(out, "fleet%2F..%2F2.json")+" already exists") {
		t.Fatalf("re-run into the same dir: exit %d, %q", rc, errOut)
	}
	// Into another: the gateway refuses, naming the rows; nothing is written.
	out2 := filepath.Join(t.TempDir(), "creds2")
	rc, _, errOut = gwRun("provision", "--from", src, "--out-dir", out2, "--data", dir)
	if rc != 1 || !strings.Contains(errOut, "3 of 3 rows refused, nothing was provisioned") || !strings.Contains(errOut, `line 2: device "fleet-1" is already provisioned`) {
		t.Fatalf("re-run: exit %d, %q", rc, errOut)
	}
	if _, err := os.Stat(out2); err == nil {
		t.Fatal("a refused batch made its out dir")
	}

	// A bad row: named with its line; the good rows are not provisioned.
	bad := filepath.Join(t.TempDir(), "bad.csv")
	os.WriteFile(bad, []byte("good-1\ngood-2,g,extra\n"), 0o644)
	rc, _, errOut = gwRun("provision", "--from", bad, "--out-dir", out2, "--data", dir)
	if rc != 1 || !strings.Contains(errOut, "line 2: 3 fields") {
		t.Fatalf("three fields: exit %d, %q", rc, errOut)
	}
	os.WriteFile(bad, []byte("good-1\ngood-2\ngood-1\n"), 0o644)
	rc, _, errOut = gwRun("provision", "--from", bad, "--out-dir", out2, "--data", dir)
	if rc != 1 || !strings.Contains(errOut, `line 3: device "good-1" is also on line 1`) {
		t.Fatalf("duplicate: exit %d, %q", rc, errOut)
	}
	// Ids whose files differ only in case.
	os.WriteFile(bad, []byte("Cam\ncam\n"), 0o644)
	rc, _, errOut = gwRun("provision", "--from", bad, "--out-dir", out, "--data", dir)
	if rc != 1 || !strings.Contains(errOut, "line 2: cam.json differs from line 1's Cam.json only in case") {
		t.Fatalf("case clash: exit %d, %q", rc, errOut)
	}
	var dl adminapi.DeviceList
	o := gwMustRun(t, "devices", "--json", "--data", dir)
	if err := json.Unmarshal([]byte(o), &dl); err != nil || len(dl.Devices) != 3 {
		t.Fatalf("devices after the refusals: %v %s", err, o)
	}

	// Flags that do not go together.
	for _, args := range [][]string{{"--from", src}, {"--out-dir", out}, {"--from", src, "--out-dir", out, "--id", "x"}} {
		if rc, _, _ := gwRun(append([]string{"provision", "--data", dir}, args...)...); rc != 2 {
			t.Errorf("provision %v: exit %d, want 2", args, rc)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// TestEnrolCodeCommand: enrol-code prints the code alone on stdout and,
// on stderr, the whole "tagauth user enroll" command with the admin URL
// and fingerprint; that command, run as printed, enrols the user.
func TestEnrolCodeCommand(t *testing.T) {
	dir, banner := gwServeTest(t)
	m := regexp.MustCompile(`admin API:\s+(\S+)\n\s+fingerprint:\s+([0-9a-f]{64})`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner:\n%s", banner)
	}
	rc, out, errOut := gwRun("enrol-code", "--user", "alice", "--data", dir)
	if rc != 0 {
		t.Fatalf("enrol-code: exit %d: %s", rc, errOut)
	}
	code := strings.TrimSpace(out)
	want := "tagauth user enroll --id alice --code " + code + " --card alice.card --admin " + m[1] + " --fingerprint " + m[2] + "\n"
	if !strings.Contains(errOut, want) {
		t.Fatalf("enrol-code did not print the enrol command %q:\n%s", want, errOut)
	}
	args := strings.Fields(strings.TrimSuffix(want, "\n"))[3:]
	card := filepath.Join(t.TempDir(), "alice.card")
	args[5] = card // --card's value, into the test's directory
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pw.WriteString("correct horse\n")
	pw.Close()
	args = append(args, "--password-fd", strconv.Itoa(int(pr.Fd())))
	var uout, uerr bytes.Buffer
	if rc := runUser(append([]string{"enroll"}, args...), &uout, &uerr); rc != 0 {
		t.Fatalf("the printed command failed: exit %d\n%s%s", rc, uout.String(), uerr.String())
	}
	if _, err := os.Stat(card); err != nil {
		t.Fatalf("no card after the printed command: %v", err)
	}
}

// TestKeysListJSON: "keys list --json" prints the admin API's KeyList,
// through the API with a gateway running and from the data directory
// without one.
func TestKeysListJSON(t *testing.T) {
	dir, _ := gwServeTest(t)
	gwMustRun(t, "provision", "--id", "d1", "--out", filepath.Join(t.TempDir(), "d1.json"), "--data", dir)
	var kl adminapi.KeyList
	out := gwMustRun(t, "keys", "list", "--json", "--data", dir)
	if err := json.Unmarshal([]byte(out), &kl); err != nil {
		t.Fatalf("keys list --json: %v\n%s", err, out)
	}
	if kl.Profile != "hardened" || len(kl.Keys) != 1 || !kl.Keys[0].Newest || kl.Keys[0].Devices != 1 {
		t.Fatalf("keys list --json: %+v", kl)
	}
}

// TestServeErrorPrefix: a daemon error is said under one prefix.
func TestServeErrorPrefix(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // should it start after all, it stops at once
	var stdout, stderr bytes.Buffer
	rc := gwServe(ctx, nil, []string{"--data", t.TempDir(), "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--cert", filepath.Join(t.TempDir(), "cert.pem")}, &stdout, &stderr)
	errOut := stderr.String()
	if rc != 1 || !strings.HasPrefix(errOut, "tagauth gateway: give both --cert and --key") {
		t.Fatalf("serve with --cert alone: exit %d, %q", rc, errOut)
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestServeBounds: serve's flags and configuration file share bounds and
// want units; each refusal names the flag or key and exits 2 before
// anything is created.
func TestServeBounds(t *testing.T) {
	conf := func(body string) string {
		p := filepath.Join(t.TempDir(), "gw.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--window", "1ns"}, "--window: out of range: 1ns is not from 1s to 1h0m0s"},
		{[]string{"--window", "10"}, `a duration needs a unit, e.g. "10s"`},
		{[]string{"--window", "0"}, `a duration needs a unit, e.g. "10s"`},
		{[]string{"--replay-size", "0"}, "--replay-size: out of range"},
		{[]string{"--rate-source", "-1"}, "--rate-source: out of range"},
		{[]string{"--lockout-for", "0s"}, "--lockout-for: out of range"},
		{[]string{"--kdf-min-t", "0"}, "--kdf-min-t: out of range"},
		{[]string{"--kdf-min-m", "4"}, "--kdf-min-m: out of range"},
		{[]string{"--config", conf("window = 10\n")}, `window: a duration needs a unit, e.g. "10s"`},
		{[]string{"--config", conf("[rate_limit]\ndevice_burst = -1\n")}, "rate_limit.device_burst: out of range"},
		{[]string{"--lockout-window", "0"}, `a duration needs a unit, e.g. "10s"`},
		{[]string{"--lockout-familiar-for", "0"}, `a duration needs a unit, e.g. "10s"`},
		{[]string{"--audit-keep", "0"}, `a duration needs a unit, e.g. "10s"`},
		{[]string{"--audit-sample", "10"}, `a duration needs a unit, e.g. "10s"`},
		{[]string{"--lockout-max-familiar", "65"}, "--lockout-max-familiar: out of range"},
		{[]string{"--audit-keep", "5m"}, "--audit-keep: out of range"},
		{[]string{"--config", conf("[audit]\nkeep = \"5m\"\n")}, "audit.keep: out of range"},
		{[]string{"--config", conf("[audit]\nsample = \"1ms\"\n")}, "audit.sample: out of range"},
		{[]string{"--config", conf("[audit]\nfsync = \"10\"\n")}, "audit.fsync: "},
		{[]string{"--config", conf("[lockout]\nunfamiliar_failures = 0\n")}, "lockout.unfamiliar_failures: out of range"},
		{[]string{"--config", conf("[lockout]\nfamiliar_for = \"1s\"\n")}, "lockout.familiar_for: out of range"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		args := append([]string{"serve", "--data", data, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, c.args...)
		rc, _, errOut := gwRun(args...)
		if rc != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d %q, want 2 and %q", c.args, rc, errOut, c.want)
		}
		if _, err := os.Stat(data); !os.IsNotExist(err) {
			t.Errorf("%v: the data directory was made (%v)", c.args, err)
		}
	}
}

// TestEnrolBelowKDFFloor: the user CLI shows the gateway's refusal of a
// card cheaper than its floor, and writes no card.
func TestEnrolBelowKDFFloor(t *testing.T) {
	dir, banner := gwServeTest(t)
	m := regexp.MustCompile(`admin API:\s+(\S+)\n\s+fingerprint:\s+([0-9a-f]{64})`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner:\n%s", banner)
	}
	code := strings.TrimSpace(gwMustRun(t, "enrol-code", "--user", "alice", "--data", dir))
	t.Setenv("TAGAUTH_PASSWORD", "correct horse battery staple")
	card := filepath.Join(t.TempDir(), "alice.card")
	var stdout, stderr bytes.Buffer
	rc := runUser([]string{"enroll", "--admin", m[1], "--fingerprint", m[2], "--code", code, "--id", "alice",
		"--card", card, "--kdf-t", "1", "--kdf-m", "8"}, &stdout, &stderr)
	want := "kdf: Argon2id t=1 m=8 KiB is below this gateway's floor (t>=2, m>=19456 KiB): enrol with at least --kdf-t 2 --kdf-m 19456"
	if rc == 0 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("enroll below the floor: exit %d, stderr %q", rc, stderr.String())
	}
	if _, err := os.Stat(card); !os.IsNotExist(err) {
		t.Fatalf("a card was written: %v", err)
	}
}

package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// fastKDF keeps the demo's Argon2id cheap under test; the parameters are
// within the spec's range, so the code path is the real one.
var fastKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

var bothProfiles = []protocol.Profile{protocol.Classic, protocol.Hardened}

// secretHex matches a 32-byte value written in hex: a key, tag, alpha_i,
// W_i or a full fingerprint. The demo shows only 8-byte prefixes.
var secretHex = regexp.MustCompile(`(?i)[0-9a-f]{64}`)

func TestDemoOutput(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(&out, demoOptions{profiles: bothProfiles, kdf: fastKDF, memory: true}); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"classic profile", "hardened profile",
		"m1", "m2", "m3", "m4", "m5",
		"card -> device", "device -> gateway", "gateway -> device", "device -> card",
		"gateway verified E_i and I_j",
		"device verified m3 by recomputing E_i",
		"card verified gamma_i and tau_j",
		"device verified tau_i",
		"card unlock (Argon2id)",
		`card sealed "sensor.read"`,
		demoReading,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(s, "keys match"); n != 2 {
		t.Errorf(`"keys match" appears %d times, want once per profile`, n)
	}
	if m := secretHex.FindString(s); m != "" {
		t.Errorf("output contains a 64-hex-digit value %s", m)
	}
	if strings.Contains(s, demoPassword) {
		t.Error("output contains the password")
	}
	if t.Failed() {
		t.Logf("output:\n%s", s)
	}
}

// TestDemoFingerprintsEqual reads the two fingerprint lines back: "keys
// match" is printed only after comparing them, and this holds the printed
// values to the same claim.
func TestDemoFingerprintsEqual(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(&out, demoOptions{profiles: []protocol.Profile{protocol.Hardened}, kdf: fastKDF, memory: true}); err != nil {
		t.Fatal(err)
	}
	fps := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "card" || f[0] == "device") {
			fps[f[0]] = f[1]
		}
	}
	if len(fps["card"]) != 16 || fps["card"] != fps["device"] {
		t.Fatalf("fingerprints: card %q, device %q; want equal 16-hex-digit prefixes", fps["card"], fps["device"])
	}
}

func TestDemoClassicOnly(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(&out, demoOptions{profiles: []protocol.Profile{protocol.Classic}, memory: true}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.Contains(s, "hardened profile") || strings.Contains(s, "\nm5 ") {
		t.Errorf("classic-only run shows hardened steps:\n%s", s)
	}
	if !strings.Contains(s, "no key confirmation") {
		t.Errorf("classic run does not say it lacks key confirmation:\n%s", s)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy source down") }

func TestDemoFailsLoudly(t *testing.T) {
	var out bytes.Buffer
	err := runDemo(&out, demoOptions{profiles: bothProfiles, kdf: fastKDF, rand: failingReader{}, memory: true})
	if err == nil {
		t.Fatal("demo succeeded without randomness")
	}
	if !strings.Contains(err.Error(), "classic profile") || !strings.Contains(err.Error(), "entropy source down") {
		t.Errorf("error %q does not say where and why it failed", err)
	}
	if strings.Contains(out.String(), "keys match") {
		t.Error("failed run claims matching keys")
	}
}

func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		code    int
		wantErr string // substring of stderr
		wantOut string // substring of stdout
	}{
		{nil, 2, "usage: tagauth", ""},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`, ""},
		{[]string{"help"}, 0, "", "demo"},
		{[]string{"demo", "-profile", "quantum"}, 2, `unknown profile "quantum"`, ""},
		{[]string{"demo", "extra"}, 2, `unexpected argument "extra"`, ""},
		{[]string{"demo", "-h"}, 0, "-profile", ""},
		{[]string{"demo", "-profile", "classic"}, 0, "", "keys match"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code {
			t.Errorf("tagauth %q: exit %d, want %d (stderr %q)", tc.args, code, tc.code, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.wantErr) {
			t.Errorf("tagauth %q: stderr %q lacks %q", tc.args, stderr.String(), tc.wantErr)
		}
		if !strings.Contains(stdout.String(), tc.wantOut) {
			t.Errorf("tagauth %q: stdout lacks %q", tc.args, tc.wantOut)
		}
	}
}

// TestNetworkDemo runs part 2: real daemons on loopback. It must show the
// tasks' answers, the refusal after revocation and the audit reason, and
// leave no temporary directory behind.
func TestNetworkDemo(t *testing.T) {
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "tagauth-demo-*"))
	var out bytes.Buffer
	if err := runDemo(&out, demoOptions{profiles: []protocol.Profile{protocol.Hardened}, kdf: fastKDF, network: true}); err != nil {
		t.Fatalf("network demo failed: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"authenticated alice <-> sensor-7", "sealed task echo", "-> hello", `"simulated":true`,
		"from the authenticated user \"alice\"", "refused as it should be", "reason: revoked user"} {
		if !strings.Contains(s, want) {
			t.Errorf("network demo output lacks %q", want)
		}
	}
	if regexp.MustCompile(`[0-9a-f]{64}`).MatchString(s) {
		t.Error("network demo printed a 64-hex-digit value (a key, tag or token?)")
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "tagauth-demo-*"))
	if len(after) > len(before) {
		t.Errorf("demo left temporary directories: %v", after)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/testenv"
)

// gwServeTest runs "tagauth gateway serve" on loopback ports until the
// test ends, and returns its data directory and printed banner.
func gwServeTest(t *testing.T, extra ...string) (dir, banner string) {
	t.Helper()
	dir = t.TempDir()
	return dir, gwServeIn(t, dir, "admin token:", extra...)
}

// gwServeIn runs serve with data directory dir on loopback ports until the
// test ends, and returns its stdout once it holds marker.
func gwServeIn(t *testing.T, dir, marker string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testenv.LockedBuffer
	done := make(chan int, 1)
	args := append([]string{"--data", dir, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, extra...)
	go func() { done <- gwServe(ctx, nil, args, &stdout, &stderr) }()
	t.Cleanup(func() {
		cancel()
		if rc := <-done; rc != 0 {
			t.Errorf("serve exited %d: %s", rc, stderr.String())
		}
	})
	// Serve exiting before it prints marker ends the wait too.
	exited := -1
	testenv.Eventually(t, fmt.Sprintf("serve printing %q", marker), func() bool {
		select {
		case exited = <-done:
			done <- exited // for the cleanup
			return true
		default:
		}
		return strings.Contains(stdout.String(), marker)
	})
	if exited >= 0 {
		t.Fatalf("serve exited %d before printing %q: %s", exited, marker, stderr.String())
	}
	return stdout.String()
}

// gwRun runs "tagauth gateway ARGS" and returns exit status and output.
func gwRun(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	rc := runGateway(args, &stdout, &stderr)
	return rc, stdout.String(), stderr.String()
}

func gwMustRun(t *testing.T, args ...string) string {
	t.Helper()
	rc, out, errOut := gwRun(args...)
	if rc != 0 {
		t.Fatalf("tagauth gateway %s: exit %d\n%s%s", strings.Join(args, " "), rc, out, errOut)
	}
	return out
}

// TestGatewayCLI drives the admin commands against a served gateway, with
// each way of naming it: --data, flags, environment.
func TestGatewayCLI(t *testing.T) {
	dir, banner := gwServeTest(t)
	m := regexp.MustCompile(`admin API:\s+(\S+)\n\s+fingerprint:\s+([0-9a-f]{64})\n\s+admin token:\s+(\S+)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner does not say URL, fingerprint and token file:\n%s", banner)
	}
	adminURL, fp, tokenFile := m[1], m[2], m[3]
	if tokenFile != filepath.Join(dir, adminapi.TokenFileName) {
		t.Fatalf("banner token location %q", tokenFile)
	}
	byData := []string{"--data", dir}
	byFlags := []string{"--admin", adminURL, "--fingerprint", fp, "--token-file", tokenFile}
	credPath := filepath.Join(t.TempDir(), "d1.json")

	// The steps build on each other (provision, grant, revoke, audit):
	// they run in order, each named so that a failure says which.
	t.Run("enrol-code", func(t *testing.T) {
		code := strings.TrimSpace(gwMustRun(t, append([]string{"enrol-code", "--user", "alice"}, byData...)...))
		if !regexp.MustCompile(`^[A-Z2-7]{4}(-[A-Z2-7]{4})+$`).MatchString(code) {
			t.Fatalf("enrol-code printed %q", code)
		}
	})
	t.Run("provision", func(t *testing.T) {
		out := gwMustRun(t, append([]string{"provision", "--id", "d1", "--group", "plant-a", "--out", credPath}, byFlags...)...)
		if !strings.Contains(out, "provisioned device d1") {
			t.Fatalf("provision said %q", out)
		}
		cred, err := credfile.Load(credPath)
		if err != nil {
			t.Fatal(err)
		}
		if cred.ID != "d1" || cred.Fingerprint != fp || cred.AdminURL != adminURL {
			t.Fatalf("credential %+v", cred)
		}
		// The device's Tag_j is the secret the file holds: no encoding of
		// it, nor any 8-byte piece of it, may reach the terminal.
		for _, enc := range []string{hex.EncodeToString(cred.Tag[:]), strings.ToUpper(hex.EncodeToString(cred.Tag[:])), base64.StdEncoding.EncodeToString(cred.Tag[:]), base64.RawURLEncoding.EncodeToString(cred.Tag[:])} {
			for i := 0; i+16 <= len(enc); i += 8 {
				if strings.Contains(out, enc[i:i+16]) {
					t.Fatalf("provision printed part of the device tag (%s):\n%s", enc[i:i+16], out)
				}
			}
		}
	})
	t.Run("provision never overwrites", func(t *testing.T) {
		rc, _, errOut := gwRun(append([]string{"provision", "--id", "d2", "--out", credPath}, byData...)...)
		if rc != 1 || !strings.Contains(errOut, "already exists") {
			t.Fatalf("provision over an existing file: %d %q", rc, errOut)
		}
	})

	// From here on the environment names the gateway.
	t.Setenv(envAdminURL, adminURL)
	t.Setenv(envFingerprint, fp)
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envAdminToken, strings.TrimSpace(string(tok)))
	t.Run("grant", func(t *testing.T) {
		gwMustRun(t, "grant", "--user", "alice", "--group", "plant-a")
		if out := gwMustRun(t, "grants"); !strings.Contains(out, "alice") || !strings.Contains(out, "plant-a") {
			t.Fatalf("grants:\n%s", out)
		}
		if out := gwMustRun(t, "devices"); !strings.Contains(out, "d1") || !strings.Contains(out, "plant-a") || !strings.Contains(out, "active") {
			t.Fatalf("devices:\n%s", out)
		}
	})
	t.Run("revoke", func(t *testing.T) {
		gwMustRun(t, "revoke-device", "d1")
		if out := gwMustRun(t, "devices"); !strings.Contains(out, "revoked") {
			t.Fatalf("devices after revoke:\n%s", out)
		}
		rc, _, errOut := gwRun("revoke-user", "nobody")
		if rc != 1 || !strings.Contains(errOut, "404") || !strings.Contains(errOut, "nobody") {
			t.Fatalf("revoke unknown user: %d %q", rc, errOut)
		}
		gwMustRun(t, "ungrant", "--user", "alice", "--group", "plant-a")
	})
	t.Run("audit", func(t *testing.T) {
		out := gwMustRun(t, "audit", "--kind", "revoke")
		if !strings.Contains(out, "d1") || !strings.Contains(out, "device revoked by admin") {
			t.Fatalf("audit:\n%s", out)
		}
		if out := gwMustRun(t, "audit", "--json", "--kind", "policy"); !strings.Contains(out, `"reason": "ungranted"`) {
			t.Fatalf("audit --json:\n%s", out)
		}
	})
	t.Run("queries", func(t *testing.T) {
		if out := gwMustRun(t, "info"); !strings.Contains(out, "hardened") || !strings.Contains(out, fp) {
			t.Fatalf("info:\n%s", out)
		}
		if out := gwMustRun(t, "users"); !strings.Contains(out, "ID") {
			t.Fatalf("users:\n%s", out)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		// Refused by the gateway: exit 1 with its message.
		t.Setenv(envAdminToken, "not-the-token-at-all")
		rc, _, errOut := gwRun("users")
		if rc != 1 || !strings.Contains(errOut, "401") {
			t.Fatalf("wrong token: %d %q", rc, errOut)
		}
	})
	t.Run("wrong fingerprint", func(t *testing.T) {
		// Never reaches the API.
		rc, _, errOut := gwRun("info", "--fingerprint", strings.Repeat("0", 64))
		if rc != 1 || !strings.Contains(errOut, "fingerprint") {
			t.Fatalf("wrong fingerprint: %d %q", rc, errOut)
		}
	})
}

// TestGatewayKeysCLI: rotate and retire through the CLI reach the running
// gateway; refusals say why.
func TestGatewayKeysCLI(t *testing.T) {
	dir, _ := gwServeTest(t)
	out := gwMustRun(t, "keys", "list", "--data", dir)
	if !strings.Contains(out, "1 ") || !strings.Contains(out, "newest") {
		t.Fatalf("keys list:\n%s", out)
	}
	if out := gwMustRun(t, "keys", "rotate", "--data", dir); !strings.Contains(out, "version 2") {
		t.Fatalf("rotate: %q", out)
	}
	gwWaitVersions(t, dir, "key versions: 1, 2")
	if out := gwMustRun(t, "info", "--data", dir); !strings.Contains(out, "spec version: 1.1\n") {
		t.Fatalf("gateway info does not name the spec version:\n%s", out)
	}
	rc, _, errOut := gwRun("keys", "retire", "2", "--data", dir)
	if rc != 1 || !strings.Contains(errOut, "newest") {
		t.Fatalf("retire newest: %d %q", rc, errOut)
	}
	gwMustRun(t, "keys", "--data", dir, "retire", "1")
	gwWaitVersions(t, dir, "key versions: 2\n")
	kf, err := keyfile.Load(filepath.Join(dir, keyfile.FileName))
	if err != nil || len(kf.Keys) != 1 || kf.Keys[0].Version != 2 {
		t.Fatalf("key file after retire: %v %v", kf, err)
	}
	for _, args := range [][]string{
		{"keys", "--data", dir},
		{"keys", "retire", "--data", dir},
		{"keys", "retire", "x", "--data", dir},
		{"keys", "retire", "0", "--data", dir},
		{"keys", "spin", "--data", dir},
		{"keys", "list"},
	} {
		if rc, _, _ := gwRun(args...); rc != 2 {
			t.Errorf("%v: exit %d, want 2", args, rc)
		}
	}
	if rc, _, errOut := gwRun("keys", "list", "--data", t.TempDir()); rc != 1 || !strings.Contains(errOut, "start the gateway once") {
		t.Errorf("keys list on an empty dir: %d %q", rc, errOut)
	}
}

func gwWaitVersions(t *testing.T, dir, want string) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("gateway info showing %q", want), func() bool {
		return strings.Contains(gwMustRun(t, "info", "--data", dir), want)
	})
}

// TestGatewayCLIUsage: usage errors exit 2 before anything is sent;
// refusals to start exit 1 with what to do.
func TestGatewayCLIUsage(t *testing.T) {
	for _, args := range [][]string{
		{"frobnicate"},
		{},
		{"serve"},
		{"serve", "--data", t.TempDir(), "--profile", "quantum"},
		{"serve", "--data", t.TempDir(), "--window", "-1s"},
		{"serve", "--data", t.TempDir(), "stray"},
		{"enrol-code", "--admin", "https://127.0.0.1:1", "--fingerprint", strings.Repeat("a", 64)},
		{"enrol-code", "--user", "alice"},
		{"provision", "--id", "d1", "--data", t.TempDir()},
		{"revoke-user"},
		{"revoke-user", "a", "b"},
		{"grant", "--user", "alice"},
		{"users", "--admin", "http://127.0.0.1:1", "--fingerprint", strings.Repeat("a", 64), "--token-file", "x"},
	} {
		if rc, _, errOut := gwRun(args...); rc != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, rc, errOut)
		}
	}
	if rc, out, _ := gwRun("help"); rc != 0 || !strings.Contains(out, "enrol-code") {
		t.Errorf("help: %d %q", rc, out)
	}
	if rc, _, _ := gwRun("audit", "-h"); rc != 0 {
		t.Errorf("audit -h: exit %d", rc)
	}

	// A key file others can read stops serve with the fix.
	dir := t.TempDir()
	g, err := gateway.Open(gateway.Config{DataDir: dir, CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if err := os.Chmod(filepath.Join(dir, keyfile.FileName), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, _, errOut := gwRun("serve", "--data", dir, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	if rc != 1 || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("serve on a 0644 key file: %d %q", rc, errOut)
	}
}

package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/config"
)

// TestConfigSettingsAreFlags: every setting of the configuration file is a
// flag of "tagauth gateway serve".
func TestConfigSettingsAreFlags(t *testing.T) {
	_, _, usage := gwRun("serve", "-h")
	for _, f := range config.Flags() {
		if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(f) + `\b`).MatchString(usage) {
			t.Errorf("setting for --%s has no serve flag", f)
		}
	}
}

// TestServeConfigFile: the file's settings apply, a flag overrides the
// file, relative paths are the file's directory's, and a bad file stops
// serve with the line at fault.
func TestServeConfigFile(t *testing.T) {
	cdir := t.TempDir()
	if err := os.WriteFile(filepath.Join(cdir, "metrics-token"), []byte("a-metrics-token-of-some-length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(cdir, "gateway.toml")
	doc := `metrics_token_file = "metrics-token"
[lockout]
max_failures = 3
window = "2m"
[rate_limit]
source_rate = 10
device_rate = 2.5
device_burst = 7
`
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	banner := gwServeUntil(t, "rate limits:", "--config", cfg, "--lockout-window", "1m")
	for _, want := range []string{
		"lockout:      3 failures within 1m0s lock for 15m0s", // window: the flag beats the file
		"rate limits:  per source 10/s, burst 20; per device 2.5/s, burst 7",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	// The metrics token from the file (relative to it) reads /metrics.
	url := regexp.MustCompile(`admin API:\s+(\S+)`).FindStringSubmatch(banner)[1]
	fp := regexp.MustCompile(`fingerprint:\s+([0-9a-f]{64})`).FindStringSubmatch(banner)[1]
	hc, err := adminapi.PinnedClient(fp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer a-metrics-token-of-some-length")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics with the metrics token from the config file: %d", resp.StatusCode)
	}

	bad := filepath.Join(cdir, "bad.toml")
	os.WriteFile(bad, []byte("[lockout]\nmax_failure = 3\n"), 0o644)
	rc, _, errs := gwRun("serve", "--config", bad, "--data", t.TempDir())
	if rc != 2 || !strings.Contains(errs, `line 2 column 1: unknown setting "lockout.max_failure"`) {
		t.Fatalf("bad config: exit %d, %s", rc, errs)
	}
	rc, _, errs = gwRun("serve", "--data", t.TempDir(), "--lockout-failures", "0")
	if rc != 2 || !strings.Contains(errs, "--lockout-failures") {
		t.Fatalf("bad lockout flag: exit %d, %s", rc, errs)
	}
}

// gwServeUntil runs serve on loopback ports until the test ends and
// returns its stdout once it holds marker.
func gwServeUntil(t *testing.T, marker string, extra ...string) string {
	t.Helper()
	return gwServeIn(t, t.TempDir(), marker, extra...)
}

// TestOpsCommands: the operator commands that mirror the console's
// actions work through the admin API.
func TestOpsCommands(t *testing.T) {
	banner := gwServeUntil(t, "rate limits:")
	m := regexp.MustCompile(`admin API:\s+(\S+)\n\s+fingerprint:\s+([0-9a-f]{64})\n\s+admin token:\s+(\S+)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner:\n%s", banner)
	}
	admin := []string{"--admin", m[1], "--fingerprint", m[2], "--token-file", m[3]}
	with := func(args ...string) []string { return append(args, admin...) }

	gwMustRun(t, with("enrol-code", "--user", "alice")...)
	if rc, _, errs := gwRun(with("unlock", "alice")...); rc != 1 || !strings.Contains(errs, `no user "alice"`) {
		t.Fatalf("unlock of a user not registered: %d %s", rc, errs)
	}
	if out := gwMustRun(t, with("locks")...); !strings.Contains(out, "USER") || !strings.Contains(out, "5 failures within 5m0s") {
		t.Fatalf("locks:\n%s", out)
	}
	if out := gwMustRun(t, with("stats")...); !strings.Contains(out, "MINUTE (UTC)") {
		t.Fatalf("stats:\n%s", out)
	}
	if out := gwMustRun(t, with("keys", "rotate")...); !strings.Contains(out, "added master key version 2") {
		t.Fatalf("keys rotate via the API:\n%s", out)
	}
	if out := gwMustRun(t, with("keys", "list")...); !regexp.MustCompile(`(?m)^2\s+\S+\s+0\s+0\s+newest`).MatchString(out) {
		t.Fatalf("keys list via the API:\n%s", out)
	}
	if rc, _, errs := gwRun(with("keys", "retire", "2")...); rc != 1 || !strings.Contains(errs, "409") {
		t.Fatalf("retiring the newest key: %d %s", rc, errs)
	}
	gwMustRun(t, with("keys", "retire", "1")...)
	out := gwMustRun(t, with("audit", "--newest", "--limit", "2")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "retired") || !strings.Contains(lines[2], "added") {
		t.Fatalf("audit --newest:\n%s", out)
	}
	if rc, _, errs := gwRun(with("audit", "--newest", "--after", "3")...); rc != 2 || !strings.Contains(errs, "--before") {
		t.Fatalf("audit --newest --after: %d %s", rc, errs)
	}
}

// TestOddIDsCLI: unlock and revoke reach the gateway's handler with the
// very identity given, for every odd identity of the spec (paths clean
// "." and "..", Go's router cannot match an escaped "/"), and the
// answer shows it escaped.
func TestOddIDsCLI(t *testing.T) {
	banner := gwServeUntil(t, "rate limits:")
	m := regexp.MustCompile(`admin API:\s+(\S+)\n\s+fingerprint:\s+([0-9a-f]{64})\n\s+admin token:\s+(\S+)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner:\n%s", banner)
	}
	admin := []string{"--admin", m[1], "--fingerprint", m[2], "--token-file", m[3]}
	for _, id := range []string{".", "..", "/", "%2F", "a b", "../x", "\u202eevil", strings.Repeat("é", 32)} {
		for _, c := range []struct{ cmd, what string }{{"unlock", "user"}, {"revoke-user", "user"}, {"revoke-device", "device"}} {
			rc, _, errs := gwRun(append([]string{c.cmd, id}, admin...)...)
			if want := fmt.Sprintf("no %s %q", c.what, id); rc != 1 || !strings.Contains(errs, want) {
				t.Errorf("%s %q: rc %d, %q; want %q", c.cmd, id, rc, errs, want)
			}
			if strings.ContainsRune(errs, '\u202e') {
				t.Errorf("%s %q: a raw bidi override in the output", c.cmd, id)
			}
		}
	}
}

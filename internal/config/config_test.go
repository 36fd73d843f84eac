package config_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/config"
)

func TestLoadExample(t *testing.T) {
	g, err := config.Load("testdata/gateway.toml")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var order []string
	for _, s := range g.Settings() {
		got[s.Flag] = s.Value
		order = append(order, s.Key)
	}
	want := map[string]string{
		"data": "/var/lib/tagauth", "profile": "hardened", "coap": ":5683", "admin": "127.0.0.1:8443",
		"advertise": "gw.example.net", "window": "10s", "replay-size": "1048576", "allow-all": "false",
		"log-level": "info", "audit-log": "/var/log/tagauth/audit.jsonl", "metrics-token-file": "/etc/tagauth/metrics-token",
		"lockout-failures": "5", "lockout-window": "5m0s", "lockout-for": "15m0s",
		"rate-source": "200", "rate-source-burst": "400", "rate-device": "50.5", "rate-device-burst": "100",
		"audit-keep": "2160h0m0s", "audit-fsync": "10ms", "audit-sample": "10s",
	}
	if len(got) != len(want) {
		t.Errorf("%d settings, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("flag %s = %q, want %q", k, got[k], v)
		}
	}
	// Absent settings are absent, not zero.
	if _, ok := got["lockout-off"]; ok {
		t.Error("lockout-off reported though absent")
	}
	if !slices.Contains(order, "lockout.max_failures") || !slices.Contains(order, "rate_limit.device_rate") {
		t.Errorf("keys %v", order)
	}
}

// TestStrict: typos, wrong types and bad durations are errors that say
// where.
func TestStrict(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{"datadir = \"/x\"\n", `line 1 column 1: unknown setting "datadir"`},
		{"[lockout]\nmax_failure = 3\n", `line 2 column 1: unknown setting "lockout.max_failure"`},
		{"[lockout]\nwindow = \"5 minutes\"\n", `"5 minutes" is not a duration`},
		{"replay_size = \"big\"\n", "line 1"},
		{"allow_all = 1\n", "line 1"},
		{"data = \n", "line 1"},
	} {
		_, err := config.Parse([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.doc, err, c.want)
		}
	}
	if _, err := config.Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestEmpty(t *testing.T) {
	g, err := config.Parse(nil)
	if err != nil || len(g.Settings()) != 0 {
		t.Fatalf("empty file: %v %v", g, err)
	}
}

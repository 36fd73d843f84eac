package config_test

import (
	"errors"
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

// TestDurationNeedsUnit: a duration written as a number, bare or quoted,
// is an error naming the key, never nanoseconds.
func TestDurationNeedsUnit(t *testing.T) {
	for _, c := range []struct{ doc, key string }{
		{"window = 10\n", "window"},
		{"window = 10.5\n", "window"},
		{"window = \"10\"\n", "window"},
		{"window = \"0\"\n", "window"},
		{"[lockout]\nlock_for = 900\n", "lockout.lock_for"},
		{"[lockout]\nwindow = 300\n", "lockout.window"},
	} {
		_, err := config.Parse([]byte(c.doc))
		if err == nil {
			t.Errorf("%q parsed", c.doc)
			continue
		}
		want := c.key + `: a duration needs a unit, e.g. "10s"`
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %q, want it to contain %q", c.doc, err, want)
		}
	}
	if _, err := config.ParseDuration("10"); !errors.Is(err, config.ErrNoUnit) {
		t.Errorf("ParseDuration(10): %v", err)
	}
}

// TestBounds: every bounded setting refuses a value past either end,
// naming the key; the ends themselves pass.
func TestBounds(t *testing.T) {
	for _, c := range []struct {
		doc, key string
		ok       bool
	}{
		{"window = \"1ns\"\n", "window", false},
		{"window = \"999ms\"\n", "window", false},
		{"window = \"1s\"\n", "window", true},
		{"window = \"1h\"\n", "window", true},
		{"window = \"1h1s\"\n", "window", false},
		{"window = \"-5s\"\n", "window", false},
		{"replay_size = 0\n", "replay_size", false},
		{"replay_size = 1\n", "replay_size", true},
		{"replay_size = 100000000000\n", "replay_size", false},
		{"[lockout]\nmax_failures = 0\n", "lockout.max_failures", false},
		{"[lockout]\nmax_failures = 257\n", "lockout.max_failures", false},
		{"[lockout]\nwindow = \"0s\"\n", "lockout.window", false},
		{"[lockout]\nlock_for = \"8760h\"\n", "lockout.lock_for", false},
		{"[rate_limit]\nsource_rate = -1\n", "rate_limit.source_rate", false},
		{"[rate_limit]\nsource_rate = 0\n", "rate_limit.source_rate", true},
		{"[rate_limit]\ndevice_rate = 1e300\n", "rate_limit.device_rate", false},
		{"[rate_limit]\ndevice_rate = nan\n", "rate_limit.device_rate", false},
		{"[rate_limit]\nsource_burst = -2\n", "rate_limit.source_burst", false},
		{"[rate_limit]\ndevice_burst = 99999999\n", "rate_limit.device_burst", false},
		{"kdf_min_t = 0\n", "kdf_min_t", false},
		{"kdf_min_t = 2\n", "kdf_min_t", true},
		{"kdf_min_m_kib = 7\n", "kdf_min_m_kib", false},
		{"kdf_min_m_kib = 19456\n", "kdf_min_m_kib", true},
		{"kdf_min_m_kib = 2000000\n", "kdf_min_m_kib", false},
		{"[lockout]\nunfamiliar_failures = 0\n", "lockout.unfamiliar_failures", false},
		{"[lockout]\nunfamiliar_failures = 256\n", "lockout.unfamiliar_failures", true},
		{"[lockout]\nunfamiliar_failures = 257\n", "lockout.unfamiliar_failures", false},
		{"[lockout]\nmax_familiar = 0\n", "lockout.max_familiar", false},
		{"[lockout]\nmax_familiar = 64\n", "lockout.max_familiar", true},
		{"[lockout]\nmax_familiar = 65\n", "lockout.max_familiar", false},
		{"[lockout]\nfamiliar_for = \"59s\"\n", "lockout.familiar_for", false},
		{"[lockout]\nfamiliar_for = \"1m\"\n", "lockout.familiar_for", true},
		{"[lockout]\nfamiliar_for = \"8760h\"\n", "lockout.familiar_for", true},
		{"[lockout]\nfamiliar_for = \"8761h\"\n", "lockout.familiar_for", false},
		{"[audit]\nkeep = \"0s\"\n", "audit.keep", true},
		{"[audit]\nkeep = \"59m\"\n", "audit.keep", false},
		{"[audit]\nkeep = \"-1h\"\n", "audit.keep", false},
		{"[audit]\nkeep = \"1h\"\n", "audit.keep", true},
		{"[audit]\nkeep = \"2160h\"\n", "audit.keep", true},
		{"[audit]\nsample = \"99ms\"\n", "audit.sample", false},
		{"[audit]\nsample = \"100ms\"\n", "audit.sample", true},
		{"[audit]\nsample = \"1h1s\"\n", "audit.sample", false},
		{"[audit]\nfsync = \"always\"\n", "audit.fsync", true},
		{"[audit]\nfsync = \"10ms\"\n", "audit.fsync", true},
		{"[audit]\nfsync = \"10\"\n", "audit.fsync", false},
		{"[audit]\nfsync = \"2s\"\n", "audit.fsync", false},
		{"[audit]\nfsync = \"sometimes\"\n", "audit.fsync", false},
	} {
		_, err := config.Parse([]byte(c.doc))
		if c.ok {
			if err != nil {
				t.Errorf("%q: %v", c.doc, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.key+": ") {
			t.Errorf("%q: error %v, want one starting %q", c.doc, err, c.key+": ")
		}
	}
}

// TestCheckFlags: every bounded flag is a setting of the file, so the
// file and the command line cannot drift apart.
func TestCheckFlags(t *testing.T) {
	flags := config.Flags()
	for _, f := range config.Bounded() {
		if !slices.Contains(flags, f) {
			t.Errorf("bounded flag %s is no setting", f)
		}
	}
	if err := config.Check("window", "1ns"); !errors.Is(err, config.ErrOutOfRange) {
		t.Errorf("Check(window, 1ns) = %v", err)
	}
	if err := config.Check("coap", ":0"); err != nil {
		t.Errorf("unbounded flag: %v", err)
	}
}

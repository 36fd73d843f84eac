package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/config"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/lockout"
)

// Operations flags of "tagauth gateway serve" (lockout, rate limits,
// metrics token, configuration file) and the operator commands beside
// them: unlock, locks, stats, and keys through the admin API.

const envMetricsToken = "TAGAUTH_METRICS_TOKEN"

// gwOpsFlags are serve's operations flags.
type gwOpsFlags struct {
	config                           *string
	lockoutOff                       *bool
	lockoutFailures                  *int
	lockoutWindow, lockoutFor        *time.Duration
	lockoutUnfamiliar, lockoutMaxFam *int
	lockoutFamiliarFor               *time.Duration
	rateSource, rateDevice           *float64
	rateSourceBurst, rateDeviceBurst *int
	metricsTokenFile                 *string
}

func registerOpsFlags(fset *flag.FlagSet) *gwOpsFlags {
	return &gwOpsFlags{
		config:          fset.String("config", "", "configuration `file` (TOML): its settings are flags' defaults, flags given here override it (see docs/OPERATIONS.md)"),
		lockoutOff:      fset.Bool("lockout-off", false, "disable the lockout of users after failed logins"),
		lockoutFailures: fset.Int("lockout-failures", lockout.DefaultMaxFailures, "failed logins of a user from one source `n`, within --lockout-window, that lock that source"),
		lockoutWindow:   durationFlag(fset, "lockout-window", lockout.DefaultWindow, "window in which failed logins count"),
		lockoutFor:      durationFlag(fset, "lockout-for", lockout.DefaultLockFor, "how long a lockout lasts (tagauth gateway unlock ends it early)"),
		lockoutUnfamiliar: fset.Int("lockout-unfamiliar-failures", lockout.DefaultUnfamiliarFailures,
			"failed logins of a user `n`, within --lockout-window, from sources it has not logged in from lately (or unverified ones) that lock all of those"),
		lockoutFamiliarFor: durationFlag(fset, "lockout-familiar-for", lockout.DefaultFamiliarFor, "how long a successful login makes its source familiar to the user"),
		lockoutMaxFam:      fset.Int("lockout-max-familiar", lockout.DefaultMaxFamiliar, "familiar sources kept per user `n` (the most recent)"),
		rateSource:         fset.Float64("rate-source", 0, "verify requests per second allowed per source IP `address` (0: no limit); over it: busy"),
		rateSourceBurst:    fset.Int("rate-source-burst", 0, "burst of --rate-source (0: twice the rate)"),
		rateDevice:         fset.Float64("rate-device", 0, "verify requests per second allowed per device `id` (0: no limit); over it: busy"),
		rateDeviceBurst:    fset.Int("rate-device-burst", 0, "burst of --rate-device (0: twice the rate)"),
		metricsTokenFile:   fset.String("metrics-token-file", "", "`file` holding a read-only token for GET /metrics (or "+envMetricsToken+"); the admin token works too"),
	}
}

// apply puts the flags into cfg; an error is a usage error.
func (f *gwOpsFlags) apply(cfg *gateway.Config) error {
	if *f.lockoutFailures < 1 || *f.lockoutFailures > lockout.MaxTracked {
		return fmt.Errorf("--lockout-failures must be from 1 to %d", lockout.MaxTracked)
	}
	if *f.lockoutWindow <= 0 || *f.lockoutFor <= 0 {
		return errors.New("--lockout-window and --lockout-for must be positive durations")
	}
	if *f.lockoutUnfamiliar < 1 || *f.lockoutUnfamiliar > lockout.MaxTracked {
		return fmt.Errorf("--lockout-unfamiliar-failures must be from 1 to %d", lockout.MaxTracked)
	}
	if *f.lockoutMaxFam < 1 || *f.lockoutMaxFam > lockout.MaxFamiliarLimit {
		return fmt.Errorf("--lockout-max-familiar must be from 1 to %d", lockout.MaxFamiliarLimit)
	}
	if *f.lockoutFamiliarFor < time.Minute {
		return errors.New("--lockout-familiar-for must be at least 1m")
	}
	cfg.LockoutOff = *f.lockoutOff
	cfg.Lockout = lockout.Policy{MaxFailures: *f.lockoutFailures, Window: *f.lockoutWindow, LockFor: *f.lockoutFor,
		UnfamiliarFailures: *f.lockoutUnfamiliar, FamiliarFor: *f.lockoutFamiliarFor, MaxFamiliar: *f.lockoutMaxFam}
	var err error
	if cfg.SourceLimit, err = rateLimit("rate-source", *f.rateSource, *f.rateSourceBurst); err != nil {
		return err
	}
	if cfg.DeviceLimit, err = rateLimit("rate-device", *f.rateDevice, *f.rateDeviceBurst); err != nil {
		return err
	}
	tok := os.Getenv(envMetricsToken)
	if *f.metricsTokenFile != "" {
		b, err := os.ReadFile(*f.metricsTokenFile)
		if err != nil {
			return fmt.Errorf("--metrics-token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok != "" {
		if err := gateway.CheckTokenStrength(tok); err != nil {
			return fmt.Errorf("the metrics token: %w", err)
		}
	}
	cfg.MetricsToken = tok
	return nil
}

func rateLimit(name string, rate float64, burst int) (gateway.RateLimit, error) {
	if rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0) || burst < 0 {
		return gateway.RateLimit{}, fmt.Errorf("--%s and --%s-burst must not be negative", name, name)
	}
	if rate > 0 && burst == 0 {
		burst = max(1, int(math.Ceil(2*rate)))
	}
	return gateway.RateLimit{Rate: rate, Burst: burst}, nil
}

// applyConfigFile finds --config in args and sets the flags its settings
// stand for, before the command line is parsed, so that flags override
// the file. Relative paths in the file are relative to its directory.
func applyConfigFile(fset *flag.FlagSet, args []string) error {
	path := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return errors.New("--config needs a file")
			}
			val = args[i+1]
		}
		path = val
	}
	if path == "" {
		return nil
	}
	c, err := config.Load(path)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	for _, s := range c.Settings() {
		if fset.Lookup(s.Flag) == nil {
			return fmt.Errorf("config %s: setting %s is not supported by this build", path, s.Key)
		}
		v := s.Value
		if slices.Contains([]string{"data", "cert", "key", "audit-log", "metrics-token-file"}, s.Flag) && v != "" && !filepath.IsAbs(v) {
			v = filepath.Join(dir, v)
		}
		if err := fset.Set(s.Flag, v); err != nil {
			return fmt.Errorf("config %s: %s = %q: %v", path, s.Key, s.Value, err)
		}
	}
	return nil
}

// printOps adds the console, lockout, limits and metrics to serve's
// banner.
func printOps(w io.Writer, g *gateway.Gateway, cfg *gateway.Config) {
	fmt.Fprintf(w, "  console:      %s/console/ (log in with the admin token)\n", g.AdminURL())
	fmt.Fprintf(w, "  metrics:      %s/metrics (bearer: admin or metrics token)\n", g.AdminURL())
	if cfg.LockoutOff {
		fmt.Fprintln(w, "  lockout:      off")
	} else {
		p := cfg.Lockout.WithDefaults()
		fmt.Fprintf(w, "  lockout:      %s, per (user, source)\n", cfg.Lockout)
		fmt.Fprintf(w, "                %d from unfamiliar or unverified sources lock those; sources stay familiar %s after a login (%d per user)\n",
			p.UnfamiliarFailures, p.FamiliarFor, p.MaxFamiliar)
	}
	limit := func(rl gateway.RateLimit) string {
		if rl.Rate <= 0 {
			return "none"
		}
		return fmt.Sprintf("%g/s, burst %d", rl.Rate, rl.Burst)
	}
	fmt.Fprintf(w, "  rate limits:  per source %s; per device %s\n", limit(cfg.SourceLimit), limit(cfg.DeviceLimit))
}

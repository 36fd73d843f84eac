package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
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

func gwUnlock(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("unlock", "ID [admin flags]", "Lifts a user's lockout and clears their failed logins.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	c, pos, rc := gwAdminCommand(fset, &opts, args, 1, true, nil, stderr)
	if c == nil {
		return rc
	}
	var u gateway.Unlocked
	if err := c.do(http.MethodPost, "/v1/users/unlock", adminapi.IDRequest{ID: pos[0]}, &u); err != nil {
		return gwFail(stderr, fset, err)
	}
	if u.WasLocked {
		fmt.Fprintf(stdout, "unlocked user %s\n", gwText(u.ID))
	} else {
		fmt.Fprintf(stdout, "user %s was not locked; their failed logins are cleared\n", gwText(u.ID))
	}
	return 0
}

func gwLocks(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "locks", "Lists the locks set by failed logins: of a user's logins from one source, or from\nevery source the user has not logged in from lately (\"unfamiliar sources\").", "/v1/locks",
		"USER\tLOCKED FOR\tUNTIL", func(tw io.Writer, l *gateway.LockList) {
			for _, x := range l.Locks {
				what := x.Scope
				if x.Source != "" {
					what = "source " + x.Source
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", gwText(x.User), gwText(what), gwTime(x.Until))
			}
			fmt.Fprintf(tw, "(policy: %s)\n", gwText(l.Policy))
		})
}

func gwStats(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "stats", "Shows this gateway's verifies per minute and refusals by reason over the last hour\n(what the console's overview charts).", "/v1/stats",
		"MINUTE (UTC)\tOK\tREFUSED\tERROR", func(tw io.Writer, s *gateway.Stats) {
			for _, m := range s.Minutes {
				if m.OK+m.Refused+m.Error > 0 {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", m.Start.UTC().Format("15:04"), m.OK, m.Refused, m.Error)
				}
			}
			fmt.Fprintln(tw, "\t\t\t")
			fmt.Fprintln(tw, "REASON\tCODE\tCOUNT\t")
			for _, r := range s.Reasons {
				fmt.Fprintf(tw, "%s\t%s\t%d\t\n", gwText(r.Reason), gwText(r.Code), r.Count)
			}
		})
}

// gwKeysUseAPI tells whether "keys" should go through the admin API: when
// it is given --admin, or an admin URL in the environment and no --data.
func gwKeysUseAPI(args []string) bool {
	has := func(name string) bool {
		return slices.ContainsFunc(args, func(a string) bool {
			n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			return strings.HasPrefix(a, "-") && n == name
		})
	}
	return has("admin") || (!has("data") && os.Getenv(envAdminURL) != "")
}

// gwKeysAPI is "tagauth gateway keys" through the admin API, for an
// operator who is not on the gateway's host.
func gwKeysAPI(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("keys", "list|rotate|retire VERSION [--force] --admin URL [admin flags]",
		"Lists, rotates or retires the gateway's master keys through the admin API.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	asJSON := fset.Bool("json", false, "print JSON (list)")
	force := fset.Bool("force", false, "retire: even if active users or devices still hold the version (they are refused from then on)")
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	want := map[string]int{"list": 1, "rotate": 1, "retire": 2}
	if len(pos) == 0 || want[pos[0]] != len(pos) {
		fset.Usage()
		return 2
	}
	c, err := opts.connect(true)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway keys: %v\n", err)
		return 2
	}
	switch pos[0] {
	case "list":
		var kl gateway.KeyList
		if err := c.do(http.MethodGet, "/v1/keys", nil, &kl); err != nil {
			return gwFail(stderr, fset, err)
		}
		if *asJSON {
			return gwPrintJSON(stdout, kl)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tCREATED\tUSERS\tDEVICES\t")
		for _, k := range kl.Keys {
			mark := ""
			if k.Newest {
				mark = "newest: new cards and credentials use it"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\n", k.Version, gwTime(k.Created), k.Users, k.Devices, mark)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "profile %s\n", gwText(kl.Profile))
		return 0
	case "rotate":
		var kc gateway.KeyChange
		if err := c.do(http.MethodPost, "/v1/keys/rotate", nil, &kc); err != nil {
			return gwFail(stderr, fset, err)
		}
		fmt.Fprintf(stdout, "added master key version %d: new cards and device credentials use it; older ones keep working until you retire their version\n", kc.Version)
		return 0
	default:
		v, err := strconv.ParseUint(pos[1], 10, 8)
		if err != nil || v == 0 {
			fmt.Fprintf(stderr, "tagauth gateway keys retire: VERSION must be a number from 1 to 255, not %q\n", pos[1])
			return 2
		}
		path := "/v1/keys/" + strconv.FormatUint(v, 10) + "/retire"
		if *force {
			path += "?force=1"
		}
		var kc gateway.KeyChange
		if err := c.do(http.MethodPost, path, nil, &kc); err != nil {
			return gwFail(stderr, fset, err)
		}
		fmt.Fprintf(stdout, "retired master key version %d: cards and device credentials under it are refused from now on (re-enrol or re-provision them)\n", v)
		if kc.HeldBy != nil {
			fmt.Fprintf(stdout, "refused from now on: %s\n", gwText(kc.HeldBy.String()))
		}
		return 0
	}
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

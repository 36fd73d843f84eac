package main

// "tagauth gateway": the dispatcher of its subcommands and serve, which
// runs the daemon.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tagauth/tagauth/internal/config"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/protocol"
)

// Environment variables read by the gateway commands.
const (
	envAdminURL    = "TAGAUTH_ADMIN_URL"
	envFingerprint = "TAGAUTH_FINGERPRINT"
	envAdminToken  = "TAGAUTH_ADMIN_TOKEN"
)

// gwSubcommand is one "tagauth gateway" subcommand.
type gwSubcommand struct {
	name, args, summary string
	run                 func(args []string, stdout, stderr io.Writer) int
}

func gwSubcommands() []gwSubcommand {
	return []gwSubcommand{
		{"serve", "--data DIR [flags]", "run the gateway (the default subcommand)", gwServeCmd},
		{"keys", "list|rotate|retire VERSION [--force] --data DIR | --admin URL", "manage master keys (retire refuses a version still in use unless --force)", gwKeys},
		{"info", "[admin flags]", "show the gateway's profile, key versions and addresses (no token needed)", gwInfo},
		{"enrol-code", "--user ID [--ttl 15m]", "make a one-time enrolment code for a user id", gwEnrolCode},
		{"provision", "--id DID [--group G] --out FILE", "provision a device and write its credential file", gwProvision},
		{"revoke-user", "ID", "revoke a user: refused from the next login on", gwRevokeUser},
		{"revoke-device", "ID", "revoke a device: refused from the next login on", gwRevokeDevice},
		{"grant", "--user U --group G", `let a user log in to every device of a group ("*": all devices)`, gwGrant},
		{"ungrant", "--user U --group G", "remove a grant", gwUngrant},
		{"users", "[--json]", "list users", gwUsers},
		{"devices", "[--json]", "list devices", gwDevices},
		{"grants", "[--json]", "list grants", gwGrants},
		{"audit", "[--kind K --user U --device D --outcome O --since T --until T --after N --limit N --newest --json]", "query the audit log (audit export --since T: JSON lines for a SIEM)", gwAudit},
		{"unlock", "ID", "lift a user's lockout (after too many failed logins)", gwUnlock},
		{"locks", "[--json]", "list users locked out by failed logins", gwLocks},
		{"stats", "[--json]", "verifies per minute and refusals by reason, last hour", gwStats},
		{"status", "[--json]", "health of the gateway, its store, replay cache and audit trail (exit 1: not ok)", gwStatus},
		{"compact", "--data DIR", "give the space pruned audit records left back (gateway stopped)", gwCompact},
		{"dump", "--out FILE [--audit] (--data DIR | --store URL)", "export the store as a backend-neutral dump", gwDump},
		{"load", "--in FILE (--data DIR | --store URL)", "load a dump into an empty store", gwLoad},
		{"backup", "--out FILE [--recipient age1...] [admin flags]", "online, encrypted backup of the store and key file", gwBackup},
		{"restore", "--in FILE --data DIR [--store URL]", "restore a backup into an empty data directory", gwRestore},
		{"token", "add --name N --role R [--out FILE] | list [--json] | revoke NAME", "admin tokens with a role: admin, operator or auditor", gwToken},
	}
}

// runGateway is "tagauth gateway": the daemon (serve) and the commands an
// operator uses on it.
func runGateway(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "-help" && args[0] != "--help" {
		return gwServeCmd(args, stdout, stderr)
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		gwUsage(stdout)
		return 0
	}
	for _, c := range gwSubcommands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "tagauth gateway: unknown subcommand %q\n\n", args[0])
	gwUsage(stderr)
	return 2
}

func gwUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: tagauth gateway [subcommand] [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "subcommands:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range gwSubcommands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Admin commands reach the gateway's HTTPS admin API. They take --admin URL,")
	fmt.Fprintln(w, "--fingerprint HEX and --token-file FILE (or TAGAUTH_ADMIN_URL, TAGAUTH_FINGERPRINT,")
	fmt.Fprintln(w, "TAGAUTH_ADMIN_TOKEN), or --data DIR on the gateway's own host.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "tagauth gateway <subcommand> -h" for its flags.`)
}

// gwParse parses flags that may come before, between or after positional
// arguments ("keys retire 2 --data DIR") and returns the positionals.
func gwParse(fset *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fset.Parse(args); err != nil {
			return nil, err
		}
		args = fset.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// gwFlags makes a flag set whose usage line is the subcommand's.
func gwFlags(name, argsLine, about string, stderr io.Writer) *flag.FlagSet {
	fset := flag.NewFlagSet("gateway "+name, flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprintf(stderr, "usage: tagauth gateway %s %s\n\n%s\n\n", name, argsLine, about)
		fset.PrintDefaults()
	}
	return fset
}

// gwParseExit turns a parse error into an exit status.
func gwParseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func gwServeCmd(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return gwServe(ctx, hup, args, stdout, stderr)
}

// gwServe runs the gateway until ctx ends; a value on reload makes it
// re-read the key file at once.
func gwServe(ctx context.Context, reload <-chan os.Signal, args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("serve", "--data DIR [--profile hardened|classic] [--coap :5683] [--admin 127.0.0.1:8443] [flags]",
		"Runs the gateway: CoAP /tagauth/verify for devices, the HTTPS admin API for operators and\n"+
			"enrolment, and the audit log (JSON lines on stderr). Stops on SIGINT or SIGTERM; SIGHUP\n"+
			"re-reads the key file (it is also watched). The admin token is read from TAGAUTH_ADMIN_TOKEN\n"+
			"or DATA/admin-token, made at first start.", stderr)
	data := fset.String("data", "", "data `directory`: keys, store, certificate, token (created at first start; required)")
	profile := fset.String("profile", "hardened", "protocol `profile`: hardened or classic (must match the data directory's)")
	coapAddr := fset.String("coap", gateway.DefaultCoAPAddr, "UDP `address` of the CoAP verify service")
	admin := fset.String("admin", gateway.DefaultAdminAddr, "TCP `address` of the HTTPS admin API")
	advertise := fset.String("advertise", "", "`host` clients dial when an address binds every interface (default 127.0.0.1)")
	cert := fset.String("cert", "", "operator TLS certificate `file` (PEM) for the admin API, instead of the self-signed one")
	key := fset.String("key", "", "private key `file` (PEM, mode 0600) of --cert")
	window := durationFlag(fset, "window", protocol.DefaultWindow, "freshness window dT, from 1s to 1h")
	replaySize := fset.Int("replay-size", gateway.DefaultReplaySize, "most logins the replay cache holds (memory bound; when full, logins answer busy)")
	allowAll := fset.Bool("allow-all", false, "let every user log in to every device, without grants")
	logLevel := fset.String("log-level", "info", "log `level`: debug, info, warn or error")
	auditLog := fset.String("audit-log", "", "append audit records (JSON lines) to `file` instead of stderr")
	storeURL := fset.String("store", "", "shared store `URL` of gateway replicas, postgres://user@host/db[?schema=S] (default: the embedded store in --data; see docs/OPERATIONS.md#replicas)")
	kdfMinT := fset.Int("kdf-min-t", int(protocol.DefaultKDF.Time), "enrolment floor: least Argon2id time cost `t` of a hardened card")
	kdfMinM := fset.Int("kdf-min-m", int(protocol.DefaultKDF.MemoryKiB), "enrolment floor: least Argon2id memory of a hardened card, in `KiB`")
	insecureKDF := fset.Bool("insecure-test-kdf", false, "TESTS ONLY, INSECURE: accept any valid Argon2id parameters at enrolment, below the floor (cheap cards for load tests)")
	replayURL := fset.String("replay", "", "shared replay cache `URL` of replicas, redis://host:6379/0[?prefix=P] (default: in memory; needs --store)")
	args, benchFlags, err := takeBenchFlags(args) // hidden --cpuprofile and --debug-addr (bench.go)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
		return 2
	}
	var mf mqttFlags // mqtt.go
	mf.register(fset, "serve verify (shared subscription, alongside CoAP)")
	ops := registerOpsFlags(fset)          // gwops.go: --config, lockout, rate limits, metrics token
	auditFlags := registerAuditFlags(fset) // gwaudit.go: retention, fsync, sampling
	if err := applyConfigFile(fset, args); err != nil {
		fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
		return 2
	}
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "tagauth gateway: unexpected argument %q\n", pos[0])
		return 2
	}
	if *data == "" {
		fmt.Fprintln(stderr, "tagauth gateway: --data DIR is required (the directory for keys, store and certificate; created at first start)")
		return 2
	}
	p, err := protocol.ParseProfile(*profile)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway: --profile: %v\n", err)
		return 2
	}
	// The same bounds as the configuration file's, named as flags.
	for _, name := range config.Bounded() {
		if fl := fset.Lookup(name); fl != nil {
			if err := config.Check(name, fl.Value.String()); err != nil {
				fmt.Fprintf(stderr, "tagauth gateway: --%s: %v\n", name, err)
				return 2
			}
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "tagauth gateway: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	var auditOut io.Writer = stderr
	if *auditLog != "" {
		f, err := os.OpenFile(*auditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway: --audit-log: %v\n", err)
			return 1
		}
		defer f.Close()
		auditOut = f
	}
	cfg := gateway.Config{
		DataDir: *data, Profile: p, CoAPAddr: *coapAddr, AdminAddr: *admin, Advertise: *advertise,
		AdminToken: os.Getenv(envAdminToken), TLSCert: *cert, TLSKey: *key, Window: *window,
		ReplaySize: *replaySize, AllowAll: *allowAll, Logger: logger, AuditOut: auditOut,
		KDFFloor:        protocol.KDFParams{Time: uint32(*kdfMinT), MemoryKiB: uint32(*kdfMinM), Threads: 1},
		InsecureTestKDF: *insecureKDF,
	}
	if *insecureKDF {
		logger.Warn("--insecure-test-kdf: enrolment accepts Argon2id parameters below the floor; never use it outside tests")
	}
	if err := ops.apply(&cfg); err != nil {
		fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
		return 2
	}
	if err := auditFlags.apply(&cfg); err != nil {
		fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
		return 2
	}
	closeBackends, err := openBackends(&cfg, *storeURL, *replayURL) // backends.go
	if err != nil {
		gwServeFail(stderr, err)
		return 1
	}
	g, err := gateway.Open(cfg)
	if err != nil {
		closeBackends()
		gwServeFail(stderr, err)
		return 1
	}
	stopBench, err := benchFlags.start()
	if err != nil {
		g.Close()
		fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
		return 1
	}
	defer stopBench()
	tokenAt := "TAGAUTH_ADMIN_TOKEN (from the environment)"
	if g.TokenPath() != "" {
		tokenAt = g.TokenPath()
	}
	fmt.Fprintf(stdout, "tagauth gateway: profile %v, data %s\n", g.Profile(), *data)
	fmt.Fprintf(stdout, "  CoAP verify:  %s (udp, bound to %s)\n", g.CoAPPublic(), g.CoAPAddr())
	fmt.Fprintf(stdout, "  admin API:    %s\n", g.AdminURL())
	fmt.Fprintf(stdout, "  fingerprint:  %s\n", g.Fingerprint())
	fmt.Fprintf(stdout, "  admin token:  %s\n", tokenAt)
	printOps(stdout, g, &cfg) // gwops.go
	if !*allowAll {
		fmt.Fprintln(stdout, "  policy:       users log in to the device groups granted to them (tagauth gateway grant)")
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-reload:
				g.ReloadKeys()
			}
		}
	}()
	if mf.url != "" {
		stopMQTT, err := gatewayMQTT(ctx, g, &mf, *replayURL, *window, logger, stdout) // gatewaymqtt.go
		if err != nil {
			g.Close()
			fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
			return 1
		}
		defer stopMQTT()
	}
	if err := g.Run(ctx); err != nil {
		gwServeFail(stderr, err)
		return 1
	}
	return 0
}

// gwServeFail reports the daemon's failure under the command's prefix
// once: the daemon's own errors start with "gateway: ", which
// "tagauth gateway: " already says.
func gwServeFail(stderr io.Writer, err error) {
	fmt.Fprintf(stderr, "tagauth gateway: %s\n", strings.TrimPrefix(err.Error(), "gateway: "))
}

// durationFlag is a duration flag that, like the configuration file,
// wants a unit: "--window 10" says so instead of "parse error".
func durationFlag(fset *flag.FlagSet, name string, value time.Duration, usage string) *time.Duration {
	d := (*unitDuration)(&value)
	fset.Var(d, name, usage)
	return &value
}

type unitDuration time.Duration

func (d *unitDuration) String() string { return time.Duration(*d).String() }

func (d *unitDuration) Set(s string) error {
	v, err := config.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = unitDuration(v)
	return nil
}

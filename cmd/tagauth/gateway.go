package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/config"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
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
		{"audit", "[--kind K --user U --device D --outcome O --since T --until T --after N --limit N --newest --json]", "query the audit log", gwAudit},
		{"unlock", "ID", "lift a user's lockout (after too many failed logins)", gwUnlock},
		{"locks", "[--json]", "list users locked out by failed logins", gwLocks},
		{"stats", "[--json]", "verifies per minute and refusals by reason, last hour", gwStats},
		{"compact", "--data DIR", "give the space pruned audit records left back (gateway stopped)", gwCompact},
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
		fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
		return 1
	}
	g, err := gateway.Open(cfg)
	if err != nil {
		closeBackends()
		fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
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
		fmt.Fprintf(stderr, "tagauth gateway: %v\n", err)
		return 1
	}
	return 0
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

// gwKeys is "tagauth gateway keys": it edits the key file, which a
// running gateway watches.
func gwKeys(args []string, stdout, stderr io.Writer) int {
	if gwKeysUseAPI(args) { // gwops.go
		return gwKeysAPI(args, stdout, stderr)
	}
	fset := gwFlags("keys", "list|rotate|retire VERSION [--force] --data DIR",
		"Lists, rotates or retires the gateway's master keys. Rotation adds a version that new cards\n"+
			"and device credentials use; older ones keep working until their version is retired.\n"+
			"Retiring a version that active users or devices still hold is refused unless --force.\n"+
			"With the gateway running the change goes through its admin API, found through --data;\n"+
			"otherwise the key file is edited and the next start uses it.", stderr)
	data := fset.String("data", "", "the gateway's data `directory` (required)")
	force := fset.Bool("force", false, "retire: even if active users or devices still hold the version (they are refused from then on)")
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	if len(pos) == 0 {
		fset.Usage()
		return 2
	}
	if *data == "" {
		fmt.Fprintln(stderr, "tagauth gateway keys: --data DIR is required")
		return 2
	}
	path := filepath.Join(*data, keyfile.FileName)
	want := map[string]int{"list": 1, "rotate": 1, "retire": 2}
	if n, ok := want[pos[0]]; !ok || len(pos) != n {
		fset.Usage()
		return 2
	}
	// A running gateway holds the store: it counts holders and edits the
	// key file itself (gwops.go).
	if gwRunning(*data) {
		return gwKeysAPI(args, stdout, stderr)
	}
	f, err := keyfile.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway keys: %v\n", err)
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintln(stderr, "tagauth gateway keys: start the gateway once with this --data to create its key file")
		}
		return 1
	}
	snap, haveSnap, err := gwOfflineSnapshot(*data)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway keys: %v\n", err)
		return 1
	}
	switch pos[0] {
	case "list":
		newest := f.Newest().Version
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tCREATED\tUSERS\tDEVICES\t")
		for _, k := range f.Keys {
			mark := ""
			if k.Version == newest {
				mark = "newest: new cards and credentials use it"
			}
			users, devices := "?", "?"
			if haveSnap {
				h := gateway.HoldersOf(snap, k.Version)
				users, devices = strconv.Itoa(h.Users), strconv.Itoa(h.Devices)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", k.Version, k.Created.UTC().Format(time.RFC3339), users, devices, mark)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "profile %v\n", f.Profile)
		return 0
	case "rotate":
		k, err := f.Rotate(rand.Reader, time.Now())
		if err == nil {
			err = f.Save(path)
		}
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway keys rotate: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "added master key version %d: new cards and device credentials use it; older ones keep working until you retire their version\n", k.Version)
		fmt.Fprintln(stdout, "a running gateway picks it up within a second")
		return 0
	default: // retire
		v, err := strconv.ParseUint(pos[1], 10, 8)
		if err != nil || v == 0 {
			fmt.Fprintf(stderr, "tagauth gateway keys retire: VERSION must be a number from 1 to 255, not %q\n", pos[1])
			return 2
		}
		var held gateway.KeyHolders
		if haveSnap {
			held = gateway.HoldersOf(snap, uint8(v))
			err = gateway.RetireCheck(held, *force)
		} else if !*force {
			err = fmt.Errorf("cannot tell who holds version %d: the gateway is not running and its store is not in %s (replicas share theirs): retire it with a gateway running, or with --force", v, *data)
		}
		if err == nil {
			err = f.Retire(uint8(v))
		}
		if err == nil {
			err = f.Save(path)
		}
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway keys retire: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "retired master key version %d: cards and device credentials under it are refused from now on (re-enrol or re-provision them)\n", v)
		if held.Any() {
			fmt.Fprintf(stdout, "refused from now on: %s\n", gwText(held.String()))
		}
		return 0
	}
}

// gwRunning tells whether a gateway serves the data directory: its
// admin.json names an admin API that answers.
func gwRunning(data string) bool {
	if _, err := os.Stat(filepath.Join(data, gateway.AdminInfoName)); err != nil {
		return false
	}
	o := gwAdminOpts{data: data, timeout: 5 * time.Second}
	c, err := o.connect(false)
	if err != nil {
		return false
	}
	var info adminapi.Info
	return c.do(http.MethodGet, "/v1/info", nil, &info) == nil
}

// gwOfflineSnapshot reads the registry from the embedded store of a data
// directory no gateway is serving; ok is false when the store is not
// there (a replica's is shared).
func gwOfflineSnapshot(data string) (snap store.Snapshot, ok bool, err error) {
	path := filepath.Join(data, gateway.StoreFileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return snap, false, nil
	}
	st, err := bolt.Open(path)
	if err != nil {
		return snap, false, fmt.Errorf("counting who holds each key version: %w", err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap, err = st.Snapshot(ctx)
	if err != nil {
		return snap, false, fmt.Errorf("counting who holds each key version: %w", err)
	}
	return snap, true, nil
}

// gwAdminOpts are the flags every admin client command takes.
type gwAdminOpts struct {
	url, fingerprint, tokenFile, data string
	timeout                           time.Duration
}

func (o *gwAdminOpts) register(fset *flag.FlagSet) {
	fset.StringVar(&o.url, "admin", "", "gateway admin `URL` (or "+envAdminURL+")")
	fset.StringVar(&o.fingerprint, "fingerprint", "", "pinned SHA-256 `hex` of the gateway's certificate (or "+envFingerprint+")")
	fset.StringVar(&o.tokenFile, "token-file", "", "`file` holding the admin token (or "+envAdminToken+")")
	fset.StringVar(&o.data, "data", "", "gateway data `directory`, on the gateway's host: URL, fingerprint and token are read from it")
	fset.DurationVar(&o.timeout, "timeout", 15*time.Second, "how long to wait for the gateway")
}

// gwAdminClient is a resolved admin connection.
type gwAdminClient struct {
	hc    *http.Client
	base  string
	token string
}

// connect resolves URL, fingerprint and (if needToken) token from flags,
// environment and data directory, in that order.
func (o *gwAdminOpts) connect(needToken bool) (*gwAdminClient, error) {
	base, fp, token := o.url, o.fingerprint, ""
	if base == "" {
		base = os.Getenv(envAdminURL)
	}
	if fp == "" {
		fp = os.Getenv(envFingerprint)
	}
	if (base == "" || fp == "") && o.data != "" {
		b, err := os.ReadFile(filepath.Join(o.data, gateway.AdminInfoName))
		if err != nil {
			return nil, fmt.Errorf("reading the gateway's admin address from --data: %w (has the gateway been started with this data directory?)", err)
		}
		var ai gateway.AdminInfo
		if err := json.Unmarshal(b, &ai); err != nil {
			return nil, fmt.Errorf("%s is damaged: %v (restart the gateway to rewrite it)", filepath.Join(o.data, gateway.AdminInfoName), err)
		}
		if base == "" {
			base = ai.URL
		}
		if fp == "" {
			fp = ai.Fingerprint
		}
	}
	if base == "" {
		return nil, errors.New("no admin URL: give --admin URL (the gateway prints it at start), set " + envAdminURL + ", or --data DIR on the gateway's host")
	}
	if u, err := url.Parse(base); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q must look like https://HOST:PORT", base)
	}
	base = strings.TrimRight(base, "/")
	if fp == "" {
		return nil, errors.New("no fingerprint: give --fingerprint HEX (the gateway prints it at start), set " + envFingerprint + ", or --data DIR on the gateway's host")
	}
	if needToken {
		var err error
		if token, err = o.token(); err != nil {
			return nil, err
		}
	}
	hc, err := adminapi.PinnedClient(strings.ToLower(fp), o.timeout)
	if err != nil {
		return nil, err
	}
	return &gwAdminClient{hc: hc, base: base, token: token}, nil
}

func (o *gwAdminOpts) token() (string, error) {
	path := o.tokenFile
	if path == "" {
		if t := os.Getenv(envAdminToken); t != "" {
			return t, nil
		}
		if o.data != "" {
			path = filepath.Join(o.data, gateway.TokenFileName)
		}
	}
	if path == "" {
		return "", errors.New("no admin token: give --token-file FILE, set " + envAdminToken + ", or --data DIR on the gateway's host")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return t, nil
}

func (c *gwAdminClient) do(method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A command makes a call or two: it holds no idle connection, which
	// would count against the gateway's per-source limit.
	defer c.hc.CloseIdleConnections()
	return adminapi.DoJSON(ctx, c.hc, method, c.base+path, c.token, in, out)
}

// gwAdminCommand runs the common part of an admin command: parse flags,
// check positionals, connect. When the command must stop it returns a nil
// client and the exit status; otherwise the status is meaningless.
// check, if not nil, validates the flags before anything is sent and
// returns a usage error message.
func gwAdminCommand(fset *flag.FlagSet, opts *gwAdminOpts, args []string, npos int, needToken bool, check func() string, stderr io.Writer) (*gwAdminClient, []string, int) {
	pos, err := gwParse(fset, args)
	if err != nil {
		return nil, nil, gwParseExit(err)
	}
	if len(pos) != npos {
		if len(pos) > npos {
			fmt.Fprintf(stderr, "tagauth %s: unexpected argument %q\n", fset.Name(), pos[npos])
		}
		fset.Usage()
		return nil, nil, 2
	}
	if check != nil {
		if msg := check(); msg != "" {
			fmt.Fprintf(stderr, "tagauth %s: %s\n", fset.Name(), msg)
			return nil, nil, 2
		}
	}
	c, err := opts.connect(needToken)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth %s: %v\n", fset.Name(), err)
		return nil, nil, 2
	}
	return c, pos, -1
}

// gwFail reports an admin call's failure.
func gwFail(stderr io.Writer, fset *flag.FlagSet, err error) int {
	fmt.Fprintf(stderr, "tagauth %s: %v\n", fset.Name(), err)
	return 1
}

func gwInfo(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("info", "[admin flags]", "Shows the gateway's profile, live key versions, CoAP address and fingerprint.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	asJSON := fset.Bool("json", false, "print JSON")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, false, nil, stderr)
	if c == nil {
		return rc
	}
	var info adminapi.Info
	if err := c.do(http.MethodGet, "/v1/info", nil, &info); err != nil {
		return gwFail(stderr, fset, err)
	}
	if *asJSON {
		return gwPrintJSON(stdout, info)
	}
	vs := make([]string, len(info.KeyVersions))
	for i, v := range info.KeyVersions {
		vs[i] = strconv.Itoa(int(v))
	}
	fmt.Fprintf(stdout, "profile:      %s\nspec version: %s\nkey versions: %s\nCoAP verify:  %s\nadmin API:    %s\nfingerprint:  %s\n",
		gwText(info.Profile), gwText(info.SpecVersion), strings.Join(vs, ", "), gwText(info.CoAP), c.base, gwText(info.Fingerprint))
	return 0
}

func gwEnrolCode(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("enrol-code", "--user ID [--ttl 15m] [admin flags]",
		"Makes a one-time enrolment code for a user id and prints it on stdout. Give it to the user,\n"+
			"who runs: tagauth user enroll --id ID --code CODE ...", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	user := fset.String("user", "", "user `id` the code is for (required)")
	ttl := fset.Duration("ttl", gateway.DefaultCodeTTL, "how long the code stays valid")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *user == "" {
			return "--user ID is required"
		}
		if *ttl < time.Second || *ttl > gateway.MaxCodeTTL {
			return fmt.Sprintf("--ttl must be between 1s and %s", gateway.MaxCodeTTL)
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	var code adminapi.EnrolCode
	if err := c.do(http.MethodPost, "/v1/enrol-codes", adminapi.EnrolCodeRequest{User: *user, TTLs: int(*ttl / time.Second)}, &code); err != nil {
		return gwFail(stderr, fset, err)
	}
	fmt.Fprintln(stdout, code.Code)
	fmt.Fprintf(stderr, "one-time enrolment code for user %s, valid until %s\n", gwText(*user), code.Expires.Local().Format(time.RFC3339))
	return 0
}

func gwProvision(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("provision", "--id DID [--group G] --out FILE [admin flags]",
		"Provisions a device and writes its credential file (mode 0600). The file holds the device's\n"+
			"secret tag: copy it to the device only, over a channel you trust.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	id := fset.String("id", "", "device `id` DID_j (required)")
	group := fset.String("group", "", "policy `group` of the device")
	out := fset.String("out", "", "credential `file` to write (required; never overwritten)")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *id == "" || *out == "" {
			return "--id DID and --out FILE are required"
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	// Refuse before the gateway provisions anything.
	if _, err := os.Lstat(*out); err == nil {
		fmt.Fprintf(stderr, "tagauth gateway provision: %s already exists; not overwriting a credential (choose another --out)\n", *out)
		return 1
	}
	var raw json.RawMessage
	if err := c.do(http.MethodPost, "/v1/devices", adminapi.DeviceRequest{ID: *id, Group: *group}, &raw); err != nil {
		return gwFail(stderr, fset, err)
	}
	defer clear(raw)
	cred, err := credfile.Unmarshal(raw)
	if err != nil {
		return gwFail(stderr, fset, fmt.Errorf("the gateway returned a bad credential: %w", err))
	}
	defer clear(cred.Tag[:])
	if err := credfile.Save(*out, cred); err != nil {
		return gwFail(stderr, fset, fmt.Errorf("device %s is provisioned but its credential could not be written: %w (revoke it and provision another id)", gwText(*id), err))
	}
	fmt.Fprintf(stdout, "provisioned device %s (key version %d) and wrote its credential to %s\n", gwText(cred.ID), cred.KV, *out)
	fmt.Fprintln(stdout, "the file holds the device's secret: copy it to the device only, then delete this copy")
	return 0
}

func gwRevokeUser(args []string, stdout, stderr io.Writer) int {
	return gwRevoke("revoke-user", "users", args, stdout, stderr)
}

func gwRevokeDevice(args []string, stdout, stderr io.Writer) int {
	return gwRevoke("revoke-device", "devices", args, stdout, stderr)
}

func gwRevoke(name, coll string, args []string, stdout, stderr io.Writer) int {
	fset := gwFlags(name, "ID [admin flags]", "Revokes the identity: the gateway refuses it from the next login on. Ids stay taken.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	c, pos, rc := gwAdminCommand(fset, &opts, args, 1, true, nil, stderr)
	if c == nil {
		return rc
	}
	var rv gateway.Revoked
	if err := c.do(http.MethodPost, "/v1/"+coll+"/revoke", adminapi.IDRequest{ID: pos[0]}, &rv); err != nil {
		return gwFail(stderr, fset, err)
	}
	fmt.Fprintf(stdout, "revoked %s %s at %s\n", strings.TrimSuffix(coll, "s"), gwText(rv.ID), rv.RevokedAt.Local().Format(time.RFC3339))
	return 0
}

func gwGrant(args []string, stdout, stderr io.Writer) int {
	return gwPolicy("grant", http.MethodPost, args, stdout, stderr)
}

func gwUngrant(args []string, stdout, stderr io.Writer) int {
	return gwPolicy("ungrant", http.MethodDelete, args, stdout, stderr)
}

func gwPolicy(name, method string, args []string, stdout, stderr io.Writer) int {
	fset := gwFlags(name, "--user U --group G [admin flags]", `Grants (or removes) a user's right to log in to every device of a group ("*": all devices).`, stderr)
	var opts gwAdminOpts
	opts.register(fset)
	user := fset.String("user", "", "user `id` (required)")
	group := fset.String("group", "", "device `group`, or * for every device (required)")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *user == "" || *group == "" {
			return "--user U and --group G are required"
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	if err := c.do(method, "/v1/grants", adminapi.Grant{User: *user, Group: *group}, nil); err != nil {
		return gwFail(stderr, fset, err)
	}
	if name == "grant" {
		fmt.Fprintf(stdout, "user %s may log in to the devices of group %s\n", gwText(*user), gwText(*group))
	} else {
		fmt.Fprintf(stdout, "removed the grant of group %s to user %s\n", gwText(*group), gwText(*user))
	}
	return 0
}

func gwUsers(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "users", "Lists the enrolled users.", "/v1/users",
		"ID\tKV\tCREATED\tSTATE", func(tw io.Writer, list *gateway.UserList) {
			for _, u := range list.Users {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", gwText(u.ID), u.KV, gwTime(u.Created), gwState(u.Revoked, u.RevokedAt))
			}
		})
}

func gwDevices(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "devices", "Lists the provisioned devices.", "/v1/devices",
		"ID\tGROUP\tKV\tCREATED\tSTATE", func(tw io.Writer, list *gateway.DeviceList) {
			for _, d := range list.Devices {
				group := d.Group
				if group == "" {
					group = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", gwText(d.ID), gwText(group), d.KV, gwTime(d.Created), gwState(d.Revoked, d.RevokedAt))
			}
		})
}

func gwGrants(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "grants", "Lists the policy grants: which user may log in to which device group.", "/v1/grants",
		"USER\tGROUP", func(tw io.Writer, list *gateway.GrantList) {
			for _, g := range list.Grants {
				fmt.Fprintf(tw, "%s\t%s\n", gwText(g.User), gwText(g.Group))
			}
		})
}

// gwList is a list command: it GETs path into a T and prints it as JSON
// (--json) or as a table with the given header and rows.
func gwList[T any](args []string, stdout, stderr io.Writer, name, about, path, header string, rows func(io.Writer, *T)) int {
	fset := gwFlags(name, "[--json] [admin flags]", about, stderr)
	var opts gwAdminOpts
	opts.register(fset)
	asJSON := fset.Bool("json", false, "print JSON")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, nil, stderr)
	if c == nil {
		return rc
	}
	var list T
	if err := c.do(http.MethodGet, path, nil, &list); err != nil {
		return gwFail(stderr, fset, err)
	}
	if *asJSON {
		return gwPrintJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw, &list)
	tw.Flush()
	return 0
}

func gwAudit(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("audit", "[filters] [--json] [admin flags]",
		"Queries the audit log, oldest first (--newest: newest first). For the next page, pass the\nprinted cursor as --after (--before with --newest).", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	asJSON := fset.Bool("json", false, "print JSON")
	kind := fset.String("kind", "", "only records of this `kind`: verify, enrol, provision, revoke, policy, key, lockout")
	user := fset.String("user", "", "only records about this user `id`")
	device := fset.String("device", "", "only records about this device `id`")
	outcome := fset.String("outcome", "", "only records with this `outcome`: ok, refused, error, locked")
	since := fset.String("since", "", "only records at or after this `time` (RFC 3339) or this long ago (such as 1h)")
	until := fset.String("until", "", "only records before this `time` (RFC 3339) or this long ago")
	after := fset.Uint64("after", 0, "only records after this sequence `number` (paging cursor)")
	limit := fset.Int("limit", 100, "most records to return (at most 1000)")
	newest := fset.Bool("newest", false, "newest first")
	before := fset.Uint64("before", 0, "with --newest: only records before this sequence `number` (paging cursor)")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *newest && *after > 0 || !*newest && *before > 0 {
			return "--after pages oldest first, --before pages --newest"
		}
		if *limit < 1 || *limit > 1000 {
			return "--limit must be from 1 to 1000"
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	q := url.Values{}
	for k, v := range map[string]string{"kind": *kind, "user": *user, "device": *device, "outcome": *outcome} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for k, v := range map[string]string{"since": *since, "until": *until} {
		if v == "" {
			continue
		}
		t, err := gwParseTime(v)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway audit: --%s: %v\n", k, err)
			return 2
		}
		q.Set(k, t.UTC().Format(time.RFC3339))
	}
	if *after > 0 {
		q.Set("after", strconv.FormatUint(*after, 10))
	}
	if *newest {
		q.Set("order", "desc")
	}
	if *before > 0 {
		q.Set("before", strconv.FormatUint(*before, 10))
	}
	q.Set("limit", strconv.Itoa(*limit))
	var page gateway.AuditPage
	if err := c.do(http.MethodGet, "/v1/audit?"+q.Encode(), nil, &page); err != nil {
		return gwFail(stderr, fset, err)
	}
	if *asJSON {
		return gwPrintJSON(stdout, page)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tOUTCOME\tREASON\tUSER\tDEVICE\tSOURCE\tDETAIL")
	for _, r := range page.Records {
		outcome := gwText(r.Outcome)
		if r.Count > 1 {
			outcome += fmt.Sprintf(" x%d", r.Count) // a sample of that many refusals
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, gwTime(r.Time), gwText(r.Kind), outcome,
			gwDash(r.Reason), gwDash(r.User), gwDash(r.Device), gwDash(r.Source), gwDash(r.Detail))
	}
	tw.Flush()
	if len(page.Records) == *limit {
		cursor := "--after"
		if *newest {
			cursor = "--before"
		}
		fmt.Fprintf(stderr, "more may follow: add %s %d\n", cursor, page.Next)
	}
	return 0
}

// gwParseTime reads an RFC 3339 time or a duration ago.
func gwParseTime(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2025-01-02T15:04:05Z) nor a duration (1h)", s)
	}
	return t, nil
}

func gwPrintJSON(w io.Writer, v any) int {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	w.Write(buf.Bytes())
	return 0
}

// gwText makes a value from the gateway safe to print on a terminal:
// printable text as is, anything else quoted with escapes.
func gwText(s string) string {
	if !utf8.ValidString(s) {
		return strconv.QuoteToASCII(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

func gwDash(s string) string {
	if s == "" {
		return "-"
	}
	return gwText(s)
}

func gwTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func gwState(revoked bool, at *time.Time) string {
	if !revoked {
		return "active"
	}
	if at == nil {
		return "revoked"
	}
	return "revoked " + gwTime(*at)
}

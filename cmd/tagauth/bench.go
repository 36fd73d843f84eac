package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/tagauth/tagauth/internal/loadgen"
	"github.com/tagauth/tagauth/protocol"
)

// runBench is "tagauth bench": the load generator and its baselines.
func runBench(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "serve" {
		return benchServe(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "mqtt" {
		return benchMQTT(args[1:], stdout, stderr) // benchmqtt.go
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench(ctx, args, stdout, stderr)
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("bench", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprint(stderr, `usage: tagauth bench [flags]

Loads a tagauth gateway on loopback with simulated users and devices and
reports throughput, latency (p50/p90/p99/max), errors by kind, the gateway's
CPU time per verify and the bytes per login on each link. By default it starts
its own gateway as a child process; --gateway and the admin flags point it at
a running one instead. --baseline adds a bare UDP echo server and TLS 1.3
handshakes with client certificates, measured the same way in the same run;
--compare runs both and the one-client login and checks the targets of
docs/BENCHMARKS.md. Every run ends by itself (--duration or --count).

Examples:
  tagauth bench --concurrency 16 --duration 10s
  tagauth bench --mode login --concurrency 1 --duration 5s
  tagauth bench --compare --concurrency 16 --duration 10s
  tagauth bench --sweep 1,4,16,64 --baseline all --json > sweep.json
  tagauth bench mqtt --count 1000    (logins through a local Mosquitto: tagauth bench mqtt -h)

flags:
`)
		fset.PrintDefaults()
	}
	mode := fset.String("mode", loadgen.ModeVerify, "`load`: verify (m2/m3 straight to the gateway) or login (m1..m5 and a sealed task through device agents)")
	profile := fset.String("profile", "hardened", "`profile` of the gateway the bench starts: hardened or classic")
	users := fset.Int("users", 100, "simulated `users` (cards), enrolled at start")
	devices := fset.Int("devices", 8, "simulated `devices`, provisioned at start (login mode: one device agent each, at least one per 32 clients)")
	conc := fset.Int("concurrency", 16, "requests in flight (workers)")
	sweep := fset.String("sweep", "", "comma-separated concurrency `levels` to run one after the other (instead of --concurrency)")
	rate := fset.Float64("rate", 0, "start this many operations per `second` (open loop, at most --concurrency in flight); 0: back to back")
	duration := fset.Duration("duration", 10*time.Second, "length of each measured run")
	count := fset.Int64("count", 0, "stop each run after this many operations (0: no limit; the run still ends at --duration)")
	warmup := fset.Duration("warmup", time.Second, "load before each measured run, not counted")
	baseline := fset.String("baseline", "", "add baselines to the run: udp-echo, mtls, or all (comma-separated)")
	only := fset.Bool("only-baselines", false, "run the baselines without tagauth")
	compare := fset.Bool("compare", false, "run tagauth verify, both baselines and a one-client login, and report the ratios against the targets")
	jsonOut := fset.Bool("json", false, "write the report as JSON on stdout instead of the table")
	gwAddr := fset.String("gateway", "", "CoAP `address` of a running gateway to load (default: start one)")
	admin := fset.String("admin", "", "admin `URL` of that gateway (to enrol the simulated users and devices)")
	fingerprint := fset.String("fingerprint", "", "its certificate's SHA-256 `hex`")
	tokenFile := fset.String("token-file", "", "`file` holding its admin token (or "+envAdminToken+")")
	gwPID := fset.Int("gateway-pid", 0, "its process `id` on this host, to report its CPU time per verify")
	cpuprofile := fset.String("gateway-cpuprofile", "", "write the started gateway's CPU profile to `file` (go tool pprof)")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "tagauth bench: unexpected argument %q\n", fset.Arg(0))
		return 2
	}
	p, err := protocol.ParseProfile(*profile)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth bench: --profile: %v\n", err)
		return 2
	}
	plan := loadgen.Plan{
		Profile: p, Mode: *mode, Users: *users, Devices: *devices, Concurrency: []int{*conc},
		Rate: *rate, Duration: *duration, Count: *count, Warmup: *warmup,
		NoTagauth: *only, Compare: *compare, Log: stderr,
	}
	if *sweep != "" {
		plan.Concurrency = nil
		for f := range strings.SplitSeq(*sweep, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				fmt.Fprintf(stderr, "tagauth bench: --sweep %q: want numbers separated by commas\n", *sweep)
				return 2
			}
			plan.Concurrency = append(plan.Concurrency, n)
		}
	}
	for b := range strings.SplitSeq(*baseline, ",") {
		switch b = strings.TrimSpace(b); b {
		case "":
		case "all":
			plan.Baselines = append(plan.Baselines, loadgen.BaselineUDPEcho, loadgen.BaselineMTLS)
		default:
			plan.Baselines = append(plan.Baselines, b)
		}
	}
	if *duration < 0 || *count < 0 || (*duration == 0 && *count == 0) {
		fmt.Fprintln(stderr, "tagauth bench: give a positive --duration or --count, so that the run ends")
		return 2
	}
	if *duration == 0 {
		// --count alone still gets a bound in time.
		plan.Duration = time.Hour
	}
	if *gwAddr != "" {
		if *admin == "" || *fingerprint == "" {
			fmt.Fprintln(stderr, "tagauth bench: --gateway needs --admin URL and --fingerprint HEX too (to enrol the simulated users and devices)")
			return 2
		}
		token := os.Getenv(envAdminToken)
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				reportErr(stderr, "bench", err, nil)
				return 1
			}
			token = strings.TrimSpace(string(b))
		}
		if token == "" {
			fmt.Fprintln(stderr, "tagauth bench: no admin token: give --token-file FILE or set "+envAdminToken)
			return 2
		}
		plan.Target = &loadgen.Target{CoAP: *gwAddr, AdminURL: strings.TrimRight(*admin, "/"), Fingerprint: strings.ToLower(*fingerprint), Token: token, PID: *gwPID}
	} else {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(stderr, "tagauth bench: cannot find the tagauth binary to start a gateway: %v\n", err)
			return 1
		}
		plan.Exe = exe
		if *cpuprofile != "" {
			plan.GatewayArgs = append(plan.GatewayArgs, "--cpuprofile", *cpuprofile)
		}
	}
	if plan.Exe == "" && len(plan.Baselines) > 0 {
		if exe, err := os.Executable(); err == nil {
			plan.Exe = exe
		}
	}
	if f, ok := stdout.(*os.File); ok && !*jsonOut && term.IsTerminal(int(f.Fd())) {
		plan.Progress = stdout
	}

	rep, err := loadgen.Run(ctx, plan)
	if rep != nil {
		if *jsonOut {
			if werr := rep.WriteJSON(stdout); werr != nil && err == nil {
				err = werr
			}
		} else {
			_ = rep.WriteTable(stdout)
		}
	}
	if err != nil {
		reportErr(stderr, "bench", err, nil)
		return 1
	}
	return 0
}

// benchServe is the hidden "tagauth bench serve udp-echo|mtls": a
// baseline server that the bench starts as a child process, so that its
// CPU time is its own.
func benchServe(args []string, stdout, stderr io.Writer) int {
	fset := newFlagSet("bench serve", "udp-echo|mtls --addr ADDR [--cert F --key F --client-ca F]",
		"Serves one baseline of tagauth bench (it starts this as a child process, so that the\n"+
			"server's CPU time is its own).", stderr)
	if len(args) == 0 || isHelpFlag(args[0]) {
		fset.Usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	kind := args[0]
	addr := fset.String("addr", "127.0.0.1:0", "listen `address`")
	cert := fset.String("cert", "", "server certificate `file` (mtls)")
	key := fset.String("key", "", "server key `file` (mtls)")
	clientCA := fset.String("client-ca", "", "CA `file` for client certificates (mtls)")
	if err := fset.Parse(args[1:]); err != nil {
		return parseExit(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch kind {
	case loadgen.BaselineUDPEcho:
		ua, err := net.ResolveUDPAddr("udp", *addr)
		if err != nil {
			reportErr(stderr, "bench serve", err, nil)
			return 2
		}
		conn, err := net.ListenUDP("udp", ua)
		if err != nil {
			reportErr(stderr, "bench serve", err, nil)
			return 1
		}
		fmt.Fprintf(stdout, "udp-echo listening on %s\n", conn.LocalAddr())
		context.AfterFunc(ctx, func() { conn.Close() })
		if err := loadgen.ServeUDPEcho(conn, 0); err != nil {
			reportErr(stderr, "bench serve", err, nil)
			return 1
		}
		return 0
	case loadgen.BaselineMTLS:
		var m loadgen.TLSMaterial
		for _, f := range []struct {
			dst  *[]byte
			path string
		}{{&m.ServerCert, *cert}, {&m.ServerKey, *key}, {&m.CA, *clientCA}} {
			b, err := os.ReadFile(f.path)
			if err != nil {
				reportErr(stderr, "bench serve", err, nil)
				return 2
			}
			*f.dst = b
		}
		cfg, err := m.ServerConfig()
		if err != nil {
			reportErr(stderr, "bench serve", err, nil)
			return 1
		}
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			reportErr(stderr, "bench serve", err, nil)
			return 1
		}
		fmt.Fprintf(stdout, "mtls listening on %s\n", ln.Addr())
		context.AfterFunc(ctx, func() { ln.Close() })
		if err := loadgen.ServeMTLS(ln, cfg); err != nil {
			reportErr(stderr, "bench serve", err, nil)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "tagauth bench serve: unknown server %q (udp-echo or mtls)\n", kind)
	return 2
}

// gwBenchFlags are the gateway's hidden benchmarking flags, taken out of
// the arguments before "gateway serve" parses them, so that they stay out
// of its usage: --cpuprofile FILE writes a CPU profile of the whole run,
// --debug-addr ADDR serves GET /debug/heap (heap statistics after a
// garbage collection) on a loopback address, for the bench's memory check.
type gwBenchFlags struct {
	cpuprofile, debugAddr string
}

// takeBenchFlags removes the hidden flags from args.
func takeBenchFlags(args []string) ([]string, gwBenchFlags, error) {
	var f gwBenchFlags
	var rest []string
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		var dst *string
		switch {
		case !strings.HasPrefix(args[i], "-"):
		case name == "cpuprofile":
			dst = &f.cpuprofile
		case name == "debug-addr":
			dst = &f.debugAddr
		}
		if dst == nil {
			rest = append(rest, args[i])
			continue
		}
		if !hasVal {
			if i+1 == len(args) {
				return nil, f, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			val = args[i]
		}
		*dst = val
	}
	return rest, f, nil
}

// start starts what the flags ask for; the returned function stops it.
func (f gwBenchFlags) start() (func(), error) {
	var stops []func()
	stop := func() {
		for _, s := range stops {
			s()
		}
	}
	if f.cpuprofile != "" {
		out, err := os.Create(f.cpuprofile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			out.Close()
			return nil, err
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); out.Close() })
	}
	if f.debugAddr != "" {
		host, _, err := net.SplitHostPort(f.debugAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			stop()
			return nil, fmt.Errorf("--debug-addr %q: give a loopback address (127.0.0.1:PORT)", f.debugAddr)
		}
		ln, err := net.Listen("tcp", f.debugAddr)
		if err != nil {
			stop()
			return nil, err
		}
		mux := http.NewServeMux()
		mux.Handle("/debug/heap", loadgen.HeapHandler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		stops = append(stops, func() { srv.Close() })
	}
	return stop, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/device"
	"github.com/tagauth/tagauth/protocol"
)

// runDevice is "tagauth device": the device agent, serving /tagauth/login,
// /tagauth/confirm and /tagauth/task over CoAP until SIGINT or SIGTERM.
func runDevice(args []string, stdout, stderr io.Writer) int {
	fset := newFlagSet("device", "--cred FILE [--listen :5683] [--gateway host:port] [--mqtt URL [--relay mqtt|coap]] [--metrics ADDR] [flags]",
		"Runs the device agent: users log in to this device through its gateway and send it sealed\n"+
			"tasks (built in: echo, sensor.read, control.write, and tasks, which lists them; see\n"+
			"docs/OPERATIONS.md). Logs go to stderr.", stderr)
	credPath := fset.String("cred", "", "device credential `file` made by the gateway when it provisioned this device (required)")
	listen := fset.String("listen", device.DefaultListen, "UDP `address` to serve CoAP on")
	gateway := fset.String("gateway", "", "gateway CoAP `host:port`, overriding the one in the credential file")
	window := fset.Duration("window", protocol.DefaultWindow, "freshness window dT: how far a timestamp may be from this device's clock")
	jsonLogs := fset.Bool("json", false, "write logs as JSON lines instead of text")
	verifySource := fset.Bool("verify-source", true, "answer an m1 from an address not verified lately with a CoAP Echo challenge (RFC 9175) and tell the gateway the verified address; false only for clients that cannot answer Echo, and then anyone who knows a user's ID can lock that user out through this device")
	sourceRate := fset.Float64("source-rate", device.DefaultSourceRate, "logins per second one client address may start (token bucket)")
	sourceBurst := fset.Int("source-burst", device.DefaultSourceBurst, "logins one client address may start at once (token bucket size)")
	perUserSessions := fset.Int("max-sessions-per-user", device.DefaultMaxSessionsPerUser, "sessions one user may hold on this device; a new one closes that user's oldest")
	perUserPending := fset.Int("max-pending-per-user", device.DefaultMaxPendingPerUser, "logins one user may leave waiting for m5; a new one drops that user's oldest")
	var mf mqttFlags // devicemqtt.go
	mf.register(fset, "serve login, confirm and task")
	relayVia := fset.String("relay", "", "how m2 reaches the gateway: mqtt (default with --mqtt) or coap (the credential's gateway address)")
	metricsAddr := fset.String("metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics (plain HTTP, no authentication; PORT or :PORT binds 127.0.0.1)")
	if err := fset.Parse(args); err != nil {
		return parseExit(err)
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "tagauth device: unexpected argument %q\n", fset.Arg(0))
		fset.Usage()
		return 2
	}
	if *credPath == "" {
		fmt.Fprintln(stderr, "tagauth device: --cred FILE is required (the credential file the gateway made when it provisioned this device)")
		return 2
	}
	if *window <= 0 || *window > time.Hour {
		fmt.Fprintf(stderr, "tagauth device: --window %s is out of range (want more than 0 and at most 1h)\n", *window)
		return 2
	}
	if *sourceRate <= 0 || *sourceRate > 1e6 || *sourceBurst < 1 || *sourceBurst > 1e6 {
		fmt.Fprintf(stderr, "tagauth device: --source-rate %g and --source-burst %d must be positive (and at most 1e6)\n", *sourceRate, *sourceBurst)
		return 2
	}
	if *perUserSessions < 1 || *perUserPending < 1 {
		fmt.Fprintln(stderr, "tagauth device: --max-sessions-per-user and --max-pending-per-user must be at least 1")
		return 2
	}
	metricsAt, err := metricsListenAddr(*metricsAddr)
	if err != nil {
		reportErr(stderr, "device", err, nil)
		return 2
	}
	if *gateway != "" {
		if _, _, err := net.SplitHostPort(*gateway); err != nil {
			fmt.Fprintf(stderr, "tagauth device: --gateway %q must be host:port, such as 192.0.2.10:5683\n", *gateway)
			return 2
		}
	}

	cred, err := credfile.Load(*credPath)
	if err != nil {
		reportErr(stderr, "device", err, nil)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintln(stderr, "tagauth device: ask the gateway operator to provision this device and copy its credential file here")
		case errors.Is(err, credfile.ErrInvalid):
			fmt.Fprintln(stderr, "tagauth device: the file is damaged or not a tagauth credential: restore it from the gateway's copy or provision the device again")
		}
		return 1
	}
	if *gateway != "" {
		cred.Gateway = *gateway
	}

	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if *jsonLogs {
		h = slog.NewJSONHandler(stderr, nil)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dcfg := device.Config{
		Credential: cred,
		Listen:     *listen,
		Window:     *window,
		Logger:     slog.New(h),

		NoSourceVerification: !*verifySource,
		SourceRate:           *sourceRate,
		SourceBurst:          *sourceBurst,
		MaxSessionsPerUser:   *perUserSessions,
		MaxPendingPerUser:    *perUserPending,
	}
	mb, err := deviceMQTT(ctx, fset, &mf, *relayVia, &dcfg) // devicemqtt.go
	if err != nil {
		reportErr(stderr, "device", err, nil)
		return 2
	}
	if mb != nil {
		defer mb.close()
	}
	agent, err := device.New(dcfg)
	if err != nil {
		reportErr(stderr, "device", err, nil)
		return 1
	}
	if mb != nil {
		if err := mb.serve(ctx, agent, stdout); err != nil {
			agent.Close()
			reportErr(stderr, "device", err, nil)
			return 1
		}
	}
	if metricsAt != "" {
		bound, err := serveMetrics(ctx, metricsAt, agent.MetricsHandler(), slog.New(h)) // devmetrics.go
		if err != nil {
			agent.Close()
			reportErr(stderr, "device", err, nil)
			return 1
		}
		fmt.Fprintf(stdout, "metrics at http://%s/metrics\n", bound)
	}
	if !*verifySource {
		slog.New(h).Warn("source verification is off (--verify-source=false): the gateway can only count failed logins per user, so anyone who knows a user's ID can lock that user out through this device")
	}
	if agent.Addr() != nil {
		fmt.Fprintf(stdout, "device %s (%s) serving CoAP on %s, gateway %s; stop with Ctrl-C\n",
			agent.ID(), agent.Profile(), agent.Addr(), agent.Gateway())
	}
	if err := agent.Run(ctx); err != nil {
		reportErr(stderr, "device", err, nil)
		return 1
	}
	return 0
}

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/device"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// benchMQTT is "tagauth bench mqtt": one run that logs in N times through
// a local Mosquitto broker (spec section 12) and N times over CoAP, with
// the same gateway (a child process, so that its CPU time is its own) and
// one user, one login at a time. It reports login p50/p99 for each path,
// the gateway's CPU per verify on each, and the broker's CPU per login,
// both read from /proc.
func benchMQTT(args []string, stdout, stderr io.Writer) int {
	fset := newFlagSet("bench mqtt", "[--count 1000] [--mosquitto PATH] [--gateway-cpuprofile FILE]",
		"Logs in --count times through a local Mosquitto broker and --count times over CoAP, one\n"+
			"login at a time, against one gateway, and reports login p50/p99 for each path and the\n"+
			"CPU time of the gateway per verify and of the broker per login.", stderr)
	count := fset.Int("count", 1000, "logins on each path")
	mosq := fset.String("mosquitto", "/usr/sbin/mosquitto", "mosquitto `binary` (started with TCP_NODELAY on a free loopback port)")
	profile := fset.String("gateway-cpuprofile", "", "write the gateway's CPU profile to `file`")
	if err := fset.Parse(args); err != nil {
		return parseExit(err)
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "tagauth bench mqtt: unexpected argument %q\n", fset.Arg(0))
		return 2
	}
	if *count < 10 {
		fmt.Fprintln(stderr, "tagauth bench mqtt: --count must be at least 10")
		return 2
	}
	if err := runBenchMQTT(*count, *mosq, *profile, stdout, stderr); err != nil {
		reportErr(stderr, "bench mqtt", err, nil)
		return 1
	}
	return 0
}

func runBenchMQTT(count int, mosq, profile string, stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tagauth-bench-mqtt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The broker: anonymous, loopback, TCP_NODELAY.
	port, err := freeTCPPort()
	if err != nil {
		return err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	user := "root"
	if u := os.Getenv("USER"); u != "" {
		user = u
	}
	if err := os.WriteFile(conf, fmt.Appendf(nil, "user %s\nlistener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nlog_dest none\n", user, port), 0o600); err != nil {
		return err
	}
	broker := exec.CommandContext(ctx, mosq, "-c", conf)
	if err := broker.Start(); err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}
	defer func() { cancel(); broker.Wait() }() // deferred calls run last first
	brokerURL := fmt.Sprintf("tcp://127.0.0.1:%d", port)

	// The gateway, as a child process.
	data := filepath.Join(dir, "gw")
	gw := exec.CommandContext(ctx, self, "gateway", "serve", "--data", data, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--allow-all", "--audit-log", filepath.Join(dir, "audit.jsonl"), "--log-level", "error", "--mqtt", brokerURL, "--insecure-test-kdf")
	if profile != "" {
		gw.Args = append(gw.Args, "--cpuprofile", profile)
	}
	gw.Cancel = func() error { return gw.Process.Signal(os.Interrupt) }
	gwOut, err := gw.StdoutPipe()
	if err != nil {
		return err
	}
	gw.Stderr = stderr
	if err := gw.Start(); err != nil {
		return err
	}
	defer func() { cancel(); gw.Wait() }()
	lines := bufio.NewScanner(gwOut)
	want := map[string]*regexp.Regexp{"coap": regexp.MustCompile(`CoAP verify:\s+(\S+)`), "mqtt": regexp.MustCompile(`MQTT verify:`)}
	got := map[string]string{}
	for len(got) < len(want) && lines.Scan() {
		for k, rx := range want {
			if m := rx.FindStringSubmatch(lines.Text()); m != nil {
				got[k] = m[len(m)-1]
			}
		}
	}
	if len(got) < len(want) {
		return errors.New("the gateway did not start")
	}
	go io.Copy(io.Discard, gwOut)

	// A device and an enrolled user, through the CLI like an operator.
	credPath := filepath.Join(dir, "dev.json")
	if out, err := exec.Command(self, "gateway", "provision", "--data", data, "--id", "bench-dev", "--out", credPath).CombinedOutput(); err != nil {
		return fmt.Errorf("provision: %v: %s", err, out)
	}
	codeOut, err := exec.Command(self, "gateway", "enrol-code", "--data", data, "--user", "bench-user").Output()
	if err != nil {
		return fmt.Errorf("enrol-code: %w", err)
	}
	cardPath := filepath.Join(dir, "bench.card")
	enrol := exec.Command(self, "gateway", "info", "--data", data)
	info, _ := enrol.Output()
	adminURL := regexp.MustCompile(`https://\S+`).FindString(string(info))
	fp := regexp.MustCompile(`[0-9a-f]{64}`).FindString(string(info))
	en := exec.Command(self, "user", "enroll", "--admin", adminURL, "--fingerprint", fp, "--code", strings.TrimSpace(string(codeOut)),
		"--id", "bench-user", "--card", cardPath, "--kdf-t=1", "--kdf-m=1024")
	en.Env = append(os.Environ(), "TAGAUTH_PASSWORD=bench password")
	if out, err := en.CombinedOutput(); err != nil {
		return fmt.Errorf("enroll (admin %q): %v: %s", adminURL, err, out)
	}
	u, err := unlockCard(cardPath, "bench password")
	if err != nil {
		return err
	}
	defer u.Close()
	cred, err := credfile.Load(credPath)
	if err != nil {
		return err
	}
	cred.Gateway = got["coap"]

	// Two agents of the same device: one on CoAP relaying over CoAP, one
	// on the broker only relaying through it.
	// One user logs in thousands of times a second from one address:
	// lift the per-source and per-user bounds meant for the field.
	lift := func(c device.Config) device.Config {
		c.SourceRate, c.SourceBurst = 1e9, 1<<30
		c.MaxSessionsPerUser, c.MaxPendingPerUser = 1<<20, 1<<20
		return c
	}
	coapAgent, err := device.New(lift(device.Config{Credential: cred, Listen: "127.0.0.1:0"}))
	if err != nil {
		return err
	}
	go coapAgent.Run(ctx)
	devConn, err := mqttbind.Dial(ctx, mqttbind.Config{URL: brokerURL})
	if err != nil {
		return err
	}
	defer devConn.Close()
	devRq, err := mqttbind.NewRequester(ctx, devConn)
	if err != nil {
		return err
	}
	mqttAgent, err := device.New(lift(device.Config{Credential: cred, NoListen: true, Relay: devRq.Gateway()}))
	if err != nil {
		return err
	}
	echo, err := mqttbind.NewEchoer(0)
	if err != nil {
		return err
	}
	if _, err := mqttbind.NewResponder(ctx, devConn, mqttbind.ResponderConfig{Handler: mqttAgent.Handler(),
		Routes: mqttbind.DeviceRoutes(devConn.Root(), mqttAgent.ID()), Echo: echo}); err != nil {
		return err
	}
	go mqttAgent.Run(ctx)
	userConn, err := mqttbind.Dial(ctx, mqttbind.Config{URL: brokerURL})
	if err != nil {
		return err
	}
	defer userConn.Close()
	userRq, err := mqttbind.NewRequester(ctx, userConn)
	if err != nil {
		return err
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := devConn.Ready(rctx); err != nil {
		return err
	}
	if err := userConn.Ready(rctx); err != nil {
		return err
	}

	paths := []struct {
		name   string
		poster transport.Poster
		broker bool
	}{
		{"coap", transport.CoAP{Client: &coap.Client{ACKTimeout: 500 * time.Millisecond}, Addr: coapAgent.Addr().String()}, false},
		{"mqtt", userRq.Device(cred.ID), true},
	}
	fmt.Fprintf(stdout, "tagauth bench mqtt: %d sequential logins (m1..m5, hardened) per path; gateway pid %d, mosquitto pid %d\n", count, gw.Process.Pid, broker.Process.Pid)
	fmt.Fprintln(stdout, "note: CPU and latency are of a shared machine; other processes may run.")
	fmt.Fprintf(stdout, "%-6s %10s %10s %10s %22s %22s\n", "path", "p50", "p99", "max", "gateway CPU/verify", "broker CPU/login")
	for _, p := range paths {
		// Warm up (and pass the Echo challenge of a new client).
		for range 20 {
			if err := benchLogin(ctx, u, p.poster, cred.ID); err != nil {
				return fmt.Errorf("%s warm-up: %w", p.name, err)
			}
		}
		gw0, err := procCPU(gw.Process.Pid)
		if err != nil {
			return err
		}
		br0, _ := procCPU(broker.Process.Pid)
		lat := make([]time.Duration, 0, count)
		for range count {
			t0 := time.Now()
			if err := benchLogin(ctx, u, p.poster, cred.ID); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			lat = append(lat, time.Since(t0))
		}
		gw1, _ := procCPU(gw.Process.Pid)
		br1, _ := procCPU(broker.Process.Pid)
		slices.Sort(lat)
		brokerCPU := "-"
		if p.broker {
			brokerCPU = fmtMicros((br1 - br0) / time.Duration(count))
		}
		fmt.Fprintf(stdout, "%-6s %10s %10s %10s %22s %22s\n", p.name, fmtMicros(lat[len(lat)/2]), fmtMicros(lat[len(lat)*99/100]),
			fmtMicros(lat[len(lat)-1]), fmtMicros((gw1-gw0)/time.Duration(count)), brokerCPU)
	}
	cancel()
	return nil
}

func benchLogin(ctx context.Context, u *protocol.User, dev transport.Poster, did string) error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := userclient.LoginVia(lctx, u, dev, did)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

func fmtMicros(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) + " µs"
}

// procCPU is a process's user and system CPU time, from /proc (Linux;
// clock ticks of 10 ms).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func freeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// unlockCard opens a card file with its password.
func unlockCard(path, pw string) (*protocol.User, error) {
	data, err := card.Load(path)
	if err != nil {
		return nil, err
	}
	c, err := card.Open(data, pw)
	if err != nil {
		return nil, err
	}
	return protocol.Unlock(c, pw, protocol.Config{Now: time.Now, Rand: rand.Reader})
}

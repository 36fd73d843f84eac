package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// Modes of tagauth load.
const (
	ModeVerify = "verify" // m2/m3 straight to the gateway
	ModeLogin  = "login"  // m1..m5 and one sealed task through device agents
)

// Baselines.
const (
	BaselineUDPEcho = "udp-echo"
	BaselineMTLS    = "mtls"
)

// Plan is what one invocation of the bench runs.
type Plan struct {
	// Exe is the tagauth binary, used to start the gateway and the
	// baseline servers as child processes so that their CPU time can be
	// read. Empty: baseline servers run inside this process and no CPU
	// figure is given for them; a gateway must then be given in Target.
	Exe string
	// Target is the gateway to load; nil starts one (with Exe) on
	// loopback with a fresh data directory.
	Target *Target
	// Profile is the self-started gateway's profile.
	Profile protocol.Profile
	// GatewayArgs are extra flags for the self-started gateway.
	GatewayArgs []string
	// Mode is ModeVerify or ModeLogin.
	Mode string
	// Users and Devices are the simulated fleet's size.
	Users, Devices int
	// Concurrency lists the concurrency levels: one, or several for a
	// sweep.
	Concurrency []int
	// Rate, Duration, Count and Warmup are as in Load.
	Rate     float64
	Duration time.Duration
	Count    int64
	Warmup   time.Duration
	// NoTagauth leaves tagauth out (baselines only).
	NoTagauth bool
	// Baselines to run after tagauth at each level.
	Baselines []string
	// Compare adds a full-login run with one client and computes the
	// ratios of the targets from this one invocation.
	Compare bool
	// Progress receives the live progress line (a terminal), or nil.
	Progress io.Writer
	// Log receives status lines ("starting the gateway..."), or nil.
	Log io.Writer
}

// Run carries out the plan and returns the report. It stops by itself:
// every run is bounded by its duration or count.
func Run(ctx context.Context, p Plan) (*Report, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) {
		if p.Log != nil {
			fmt.Fprintf(p.Log, "bench: "+format+"\n", args...)
		}
	}
	rep := newReport(p)
	var cleanup []func()
	defer func() {
		for _, f := range slices.Backward(cleanup) {
			f()
		}
	}()

	// The systems under load.
	var (
		fleet   *Fleet
		target  Target
		tr      = new(Traffic)
		agents  *Agents
		echoAt  string
		echoPID int
		mtlsAt  string
		mtlsPID int
		tlsMat  TLSMaterial
	)
	needTagauth := !p.NoTagauth || p.Compare
	if needTagauth {
		if p.Target != nil {
			target = *p.Target
			rep.Gateway = fmt.Sprintf("given: %s", target.CoAP)
		} else {
			logf("starting a gateway (%s) on loopback", p.Profile)
			child, t, dir, err := startGateway(p)
			if err != nil {
				return nil, err
			}
			cleanup = append(cleanup, func() { _ = child.Stop(); os.RemoveAll(dir) })
			target = t
			rep.Gateway = fmt.Sprintf("started by the bench: pid %d, %s", t.PID, t.CoAP)
		}
		if target.PID == 0 {
			rep.Notes = append(rep.Notes, "gateway CPU per verify not measured: its process id is unknown (--gateway-pid)")
		}
		logf("enrolling %d users and provisioning %d devices", p.Users, p.Devices)
		run := "" // a fresh gateway: plain names
		if p.Target != nil {
			run = "b" + randomHex(3)
		}
		f, err := Provision(ctx, target, p.Users, p.Devices, run)
		if err != nil {
			return nil, err
		}
		cleanup = append(cleanup, f.Close)
		fleet = f
		rep.Profile = f.Profile.String()
		rep.SimulatedUnlockUS = us(f.Unlock)
		if d, err := UnlockDefault(); err == nil {
			rep.DefaultUnlockMS = float64(d) / 1e6
		}
		if p.Mode == ModeLogin || p.Compare {
			a, err := StartAgents(f, tr)
			if err != nil {
				return nil, err
			}
			cleanup = append(cleanup, a.Stop)
			agents = a
		}
	}
	for _, b := range p.Baselines {
		switch b {
		case BaselineUDPEcho:
			addr, pid, stop, err := startEcho(p)
			if err != nil {
				return nil, err
			}
			cleanup = append(cleanup, stop)
			echoAt, echoPID = addr, pid
		case BaselineMTLS:
			m, err := NewTLSMaterial()
			if err != nil {
				return nil, err
			}
			addr, pid, stop, err := startMTLS(p, m)
			if err != nil {
				return nil, err
			}
			cleanup = append(cleanup, stop)
			tlsMat, mtlsAt, mtlsPID = m, addr, pid
		}
	}

	load := func(label string, c int, rate float64) Load {
		return Load{
			Concurrency: c, Rate: rate, Duration: p.Duration, Count: p.Count, Warmup: p.Warmup,
			Progress: p.Progress, Label: label,
		}
	}
	runTagauth := func(mode string, c int, rate float64) error {
		workers := c
		res := &Result{System: "tagauth", Mode: mode, Profile: fleet.Profile.String(), Concurrency: c, Rate: rate}
		var newOp func(int) (Op, error)
		var login *Hist
		if mode == ModeLogin {
			login = new(Hist)
			newOp = LoginOps(fleet, agents, tr, workers, login)
		} else {
			var err error
			if newOp, err = VerifyOps(fleet, target.CoAP, tr, workers); err != nil {
				return err
			}
		}
		var loginBase *Snapshot
		err := measure(ctx, res, load(fmt.Sprintf("tagauth %s c=%d", mode, c), c, rate), target.PID, target.HeapURL, newOp,
			func() {
				if login != nil {
					loginBase = login.Snapshot()
				}
			}, tr)
		if login != nil && loginBase != nil {
			q := quantiles(login.Snapshot().Sub(loginBase))
			res.LoginLatencyUS = &q
		}
		rep.Results = append(rep.Results, *res)
		return err
	}
	echoSize := 0 // sized at the first echo run
	runEcho := func(c int, rate float64) error {
		if echoSize == 0 {
			var err error
			if echoSize, err = echoDatagram(fleet, p.Profile); err != nil {
				return err
			}
		}
		link := new(Link)
		res := &Result{System: BaselineUDPEcho, Mode: "echo", Concurrency: c, Rate: rate, DatagramBytes: echoSize}
		err := measure(ctx, res, load(fmt.Sprintf("udp-echo c=%d", c), c, rate), echoPID, "", EchoOps(echoAt, echoSize, link), nil, linkOnly{"client<->server", link})
		rep.Results = append(rep.Results, *res)
		return err
	}
	runMTLS := func(c int, rate float64) error {
		link := new(Link)
		newOp, err := MTLSOps(mtlsAt, tlsMat, link)
		if err != nil {
			return err
		}
		res := &Result{System: BaselineMTLS, Mode: "handshake", Concurrency: c, Rate: rate}
		err = measure(ctx, res, load(fmt.Sprintf("mtls c=%d", c), c, rate), mtlsPID, "", newOp, nil, linkOnly{"client<->server", link})
		rep.Results = append(rep.Results, *res)
		return err
	}

	if p.Compare {
		// The one-client login first, on a gateway not yet holding the
		// replay entries of a saturating run: it measures latency.
		logf("tagauth login, one client")
		if err := runTagauth(ModeLogin, 1, 0); err != nil {
			return rep, err
		}
	}
	for _, c := range p.Concurrency {
		if !p.NoTagauth {
			logf("tagauth %s, concurrency %d", p.Mode, c)
			if err := runTagauth(p.Mode, c, p.Rate); err != nil {
				return rep, err
			}
		}
		for _, b := range p.Baselines {
			logf("%s, concurrency %d", b, c)
			var err error
			switch b {
			case BaselineUDPEcho:
				err = runEcho(c, p.Rate)
			case BaselineMTLS:
				err = runMTLS(c, p.Rate)
			}
			if err != nil {
				return rep, err
			}
		}
	}
	if p.Compare {
		if p.NoTagauth || p.Mode != ModeVerify {
			logf("tagauth verify, concurrency %d (for the comparison)", p.Concurrency[0])
			if err := runTagauth(ModeVerify, p.Concurrency[0], 0); err != nil {
				return rep, err
			}
		}
		rep.compare(p.Concurrency[0])
	}
	return rep, nil
}

func (p *Plan) check() error {
	if p.Mode == "" {
		p.Mode = ModeVerify
	}
	if p.Mode != ModeVerify && p.Mode != ModeLogin {
		return fmt.Errorf("mode %q: want verify or login", p.Mode)
	}
	if p.Profile == 0 {
		p.Profile = protocol.Hardened
	}
	if len(p.Concurrency) == 0 {
		p.Concurrency = []int{1}
	}
	for _, c := range p.Concurrency {
		if c < 1 || c > 4096 {
			return fmt.Errorf("concurrency %d: want 1 to 4096", c)
		}
	}
	if p.Duration <= 0 && p.Count <= 0 {
		return errors.New("give a duration or a count, so that the run ends")
	}
	if p.Users < 1 || p.Devices < 1 {
		return errors.New("need at least one user and one device")
	}
	if p.Mode == ModeLogin || p.Compare {
		// A device agent relays at most device.MaxRelays logins at once.
		need := (slices.Max(p.Concurrency) + 31) / 32
		if p.Devices < need {
			p.Devices = need
		}
	}
	for _, b := range p.Baselines {
		if b != BaselineUDPEcho && b != BaselineMTLS {
			return fmt.Errorf("baseline %q: want %s or %s", b, BaselineUDPEcho, BaselineMTLS)
		}
	}
	if p.Compare {
		for _, b := range []string{BaselineUDPEcho, BaselineMTLS} {
			if !slices.Contains(p.Baselines, b) {
				p.Baselines = append(p.Baselines, b)
			}
		}
	}
	if p.Target == nil && p.Exe == "" && (!p.NoTagauth || p.Compare) {
		return errors.New("no gateway: give one to load, or the tagauth binary to start one")
	}
	return nil
}

// measure drives newOp under l and fills res; pid's CPU time and heapURL's
// heap are sampled around the window. onStart runs at the window's start.
func measure(ctx context.Context, res *Result, l Load, pid int, heapURL string, newOp func(int) (Op, error), onStart func(), links linkSource) error {
	cpu := &CPUMeter{PID: pid}
	var before TrafficCounts
	l.OnStart = func() {
		// Memory after the warm-up: with a warm-up of 2 dT or more the
		// replay cache has reached its steady size.
		if heapURL != "" {
			if h, err := FetchHeap(ctx, heapURL); err == nil {
				res.HeapBefore = h
			}
		}
		cpu.Start()
		if onStart != nil {
			onStart()
		}
		// The traffic is read last here and first in OnStop, next to
		// Drive's own counts of the operations: an operation that ends
		// between the two readings is counted in one and not the other,
		// so nothing slow (a /proc read, the heap fetch) may sit between
		// them.
		before = links.read()
	}
	var after TrafficCounts
	l.OnStop = func() {
		after = links.read()
		cpu.Stop()
	}
	out, err := Drive(ctx, l, newOp)
	if out == nil {
		return err
	}
	if heapURL != "" {
		if h, err := FetchHeap(ctx, heapURL); err == nil {
			res.HeapAfter = h
		}
	}
	res.fill(out)
	if used, ok := cpu.Used(); ok && res.Ops > 0 {
		v := float64(used) / 1e3 / float64(res.Ops)
		cores := used.Seconds() / out.Elapsed.Seconds()
		res.ServerCPUPerOpUS, res.ServerCores = &v, &cores
	}
	res.Links = links.per(after.Sub(before), res.Ops)
	res.Retransmits = after.Sub(before).Retransmits
	return err
}

// linkSource reads a run's traffic counters and names its links.
type linkSource interface {
	read() TrafficCounts
	per(c TrafficCounts, ops uint64) []LinkResult
}

func (t *Traffic) read() TrafficCounts { return t.Read() }

func (t *Traffic) per(c TrafficCounts, ops uint64) []LinkResult {
	var out []LinkResult
	for _, l := range []struct {
		name string
		c    LinkCount
	}{{"card<->device", c.CardDevice}, {"device<->gateway", c.DeviceGateway}, {"task (card<->device)", c.Task}} {
		if l.c.Datagrams > 0 {
			out = append(out, perOp(l.name, l.c, ops))
		}
	}
	return out
}

// linkOnly is the single link of a baseline.
type linkOnly struct {
	name string
	l    *Link
}

func (s linkOnly) read() TrafficCounts {
	return TrafficCounts{CardDevice: s.l.read()}
}

func (s linkOnly) per(c TrafficCounts, ops uint64) []LinkResult {
	return []LinkResult{perOp(s.name, c.CardDevice, ops)}
}

func perOp(name string, c LinkCount, ops uint64) LinkResult {
	if ops == 0 {
		return LinkResult{Name: name}
	}
	return LinkResult{Name: name, DatagramsPerOp: float64(c.Datagrams) / float64(ops), BytesPerOp: float64(c.Bytes) / float64(ops),
		Datagrams: c.Datagrams, Repeats: c.Repeats}
}

// echoDatagram is the size of the echo baseline's datagrams: an m2 of
// fleet, or with no gateway (--only-baselines, fleet nil) of a fleet of
// one made here with the names the default fleet starts with.
func echoDatagram(fleet *Fleet, p protocol.Profile) (int, error) {
	if fleet == nil {
		f, err := offlineFleet(p)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		fleet = f
	}
	return m2Datagram(fleet)
}

// m2Datagram is the size of a CoAP datagram carrying one of the fleet's
// m2 to /tagauth/verify, with a 4-byte token: the UDP echo's datagram.
func m2Datagram(f *Fleet) (int, error) {
	cfg := clientConfig()
	d, err := protocol.NewDevice(f.Devices[0].DeviceCredential, noReplay{}, cfg)
	if err != nil {
		return 0, fmt.Errorf("loadgen: sizing the echo datagram: %w", err)
	}
	l, m1, err := f.Users[0].Login(nil, d.ID())
	if err != nil {
		return 0, fmt.Errorf("loadgen: sizing the echo datagram: %w", err)
	}
	defer l.Close()
	dl, m2, err := d.Start(context.Background(), nil, m1)
	if err != nil {
		return 0, fmt.Errorf("loadgen: sizing the echo datagram: %w", err)
	}
	defer dl.Close()
	m := message.Message{Token: make([]byte, 4), Options: userclient.PathOptions(coapbind.PathVerify), Code: codes.POST, Payload: m2, Type: message.Confirmable}
	n, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return 0, fmt.Errorf("loadgen: sizing the echo datagram: %w", err)
	}
	return n, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// startGateway starts "tagauth gateway serve" on loopback with a fresh
// data directory and its own admin token.
func startGateway(p Plan) (*Child, Target, string, error) {
	dir, err := os.MkdirTemp("", "tagauth-bench-")
	if err != nil {
		return nil, Target{}, "", err
	}
	debugAddr, err := freeTCPPort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, Target{}, "", err
	}
	token := randomHex(32)
	args := append([]string{"gateway", "serve", "--data", filepath.Join(dir, "gw"), "--profile", p.Profile.String(),
		"--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--audit-log", filepath.Join(dir, "audit.jsonl"),
		"--debug-addr", debugAddr,
		// The simulated cards use BenchKDF, below a real gateway's floor:
		// this gateway exists only for the bench.
		"--insecure-test-kdf"}, p.GatewayArgs...)
	child, got, err := StartChild("gateway", p.Exe, args, []string{"TAGAUTH_ADMIN_TOKEN=" + token},
		`CoAP verify:\s+(\S+)`, `admin API:\s+(\S+)`, `fingerprint:\s+([0-9a-f]{64})`)
	if err != nil {
		os.RemoveAll(dir)
		return nil, Target{}, "", err
	}
	t := Target{CoAP: got[0], AdminURL: got[1], Fingerprint: got[2], Token: token, PID: child.PID(),
		HeapURL: "http://" + debugAddr + "/debug/heap"}
	return child, t, dir, nil
}

func freeTCPPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startEcho starts the UDP echo server: a child process when the plan has
// the binary, else a goroutine (then its CPU is not measured: pid 0).
func startEcho(p Plan) (addr string, pid int, stop func(), err error) {
	if p.Exe != "" {
		child, got, err := StartChild("UDP echo server", p.Exe, []string{"bench", "serve", BaselineUDPEcho, "--addr", "127.0.0.1:0"}, nil,
			`listening on (\S+)`)
		if err != nil {
			return "", 0, nil, err
		}
		return got[0], child.PID(), func() { _ = child.Stop() }, nil
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return "", 0, nil, err
	}
	done := make(chan struct{})
	go func() { _ = ServeUDPEcho(conn, runtime.GOMAXPROCS(0)); close(done) }()
	return conn.LocalAddr().String(), 0, func() { conn.Close(); <-done }, nil
}

// startMTLS starts the TLS server, as startEcho does.
func startMTLS(p Plan, m TLSMaterial) (addr string, pid int, stop func(), err error) {
	if p.Exe != "" {
		dir, err := os.MkdirTemp("", "tagauth-bench-tls-")
		if err != nil {
			return "", 0, nil, err
		}
		files := map[string][]byte{"ca.pem": m.CA, "cert.pem": m.ServerCert, "key.pem": m.ServerKey}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				os.RemoveAll(dir)
				return "", 0, nil, err
			}
		}
		child, got, err := StartChild("TLS server", p.Exe, []string{"bench", "serve", BaselineMTLS, "--addr", "127.0.0.1:0",
			"--cert", filepath.Join(dir, "cert.pem"), "--key", filepath.Join(dir, "key.pem"), "--client-ca", filepath.Join(dir, "ca.pem")}, nil,
			`listening on (\S+)`)
		if err != nil {
			os.RemoveAll(dir)
			return "", 0, nil, err
		}
		return got[0], child.PID(), func() { _ = child.Stop(); os.RemoveAll(dir) }, nil
	}
	cfg, err := m.ServerConfig()
	if err != nil {
		return "", 0, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	done := make(chan struct{})
	go func() { _ = ServeMTLS(ln, cfg); close(done) }()
	return ln.Addr().String(), 0, func() { ln.Close(); <-done }, nil
}

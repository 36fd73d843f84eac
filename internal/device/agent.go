// Package device is the tagauth device agent: the program that runs on a
// terminal device D_j, holds its credential (DID_j, Tag_j, kv_j) and serves
// three CoAP endpoints (spec section 11), and /tagauth/info, a binding
// extension that says which profile and DID_j it serves (info.go):
//
//   - /tagauth/login: m1 from a user's card. An m1 from an address not
//     verified lately is first answered 4.01 with an Echo option (RFC 9175,
//     see source.go); the client repeats it with that value. The agent
//     checks the m1, relays m2 with the verified address in the Source option
//     to the gateway's /tagauth/verify with retransmission and a deadline,
//     checks the gateway's m3 and answers m4. A refusal from the gateway is
//     relayed with the same wire code; an unreachable gateway is answered
//     busy (5.03).
//   - /tagauth/confirm: m5 (hardened). The session is established only once
//     tau_i verifies.
//   - /tagauth/task: a sealed record. The agent finds the session by its sid,
//     opens the record, runs the named task handler with the authenticated
//     user id and answers with a sealed result.
//
// # Task handlers
//
// Integrators register named handlers with [Agent.Handle]: a handler gets
// the authenticated user id and the task's arguments and returns a result.
// The task plaintexts are the JSON objects of [coapbind.TaskRequest] and
// [coapbind.TaskResponse]. Unless [Config.NoBuiltins] is set, New
// registers three demonstration handlers: "echo" (returns its arguments),
// "sensor.read" (a simulated reading, see [SensorReading]) and
// "control.write" (records the instruction and who sent it, readable with
// [Agent.Controls]), and "tasks", which lists the registered tasks as JSON
// [TaskInfo] so that users can discover them.
//
// # Bounded state
//
// Everything the agent keeps per peer is bounded: at most MaxSessions
// pending logins (from m1 until m5, or until m4 under classic), each
// expiring dT after the device answered m4; at most MaxSessions established
// sessions, closed after their idle time or maximum life by a janitor; a
// replay cache of (ID_i, E_i). When a table is full the agent answers busy
// rather than forget live state. One user (authenticated by the gateway)
// holds at most MaxSessionsPerUser sessions and MaxPendingPerUser logins
// awaiting m5: beyond that its own oldest is closed, so that one user
// cannot fill a table for everyone. Per client address, a token bucket
// bounds the logins started and MaxRelaysPerSource the relay slots held;
// refusal log lines are sampled (source.go).
//
// # Matching m5 to its login
//
// The confirm request names its login (spec section 11): its payload is
// sid || m5, where sid is the session's identifier (section 9), which both
// sides compute from E_i once m1 is sent. The agent finds the pending login
// by sid and checks one tau_i, whatever address m5 comes from (NAT
// rebinding, a proxy, a broker). A payload under 9 bytes is malformed; an
// unknown sid is rejected, and so is an m5 after the login was dropped (dT
// after m4); an m5 whose sid names a session already established is
// replayed; a wrong tau_i is rejected and leaves the login pending.
//
// # Blocking
//
// The CoAP server answers each request on the worker goroutine that read it,
// and a login handler blocks there while it waits for the gateway (up to
// GatewayTimeout). So that slow relays or slow task handlers can never take
// every worker, each kind holds one of a fixed number of slots
// ([MaxRelays], [MaxTasks]) and the server runs that many workers more than
// GOMAXPROCS; a request that finds no free slot is answered busy at once.
//
// # Logs
//
// Every login outcome is logged at info level with the claimed user, the
// outcome and the precise reason; refusals, which anyone can cause, at most
// 10 lines per 10 s and then one line with the count of the rest (every
// one is in the metrics); messages that do not even parse, and records for
// unknown sessions, only at debug level. Echo challenges are not logged.
// Keys, tags, message bytes and task arguments are never logged; identities
// with a rune that is not printable are logged in hex (logID); task names
// are logged with the authenticated user.
package device

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/echo"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// Defaults for the zero fields of Config.
const (
	DefaultListen         = ":5683"
	DefaultGatewayTimeout = 5 * time.Second
	DefaultMaxSessions    = 10000
	DefaultTaskTimeout    = 5 * time.Second
	// DefaultMaxSessionsPerUser and DefaultMaxPendingPerUser bound one
	// user's share of the tables: enough for a user's scripts and
	// devices, far below MaxSessions.
	DefaultMaxSessionsPerUser = 64
	DefaultMaxPendingPerUser  = 16
)

// Concurrency bounds (see the package doc, "Blocking").
const (
	// MaxRelays is how many logins may wait for the gateway at once.
	MaxRelays = 32
	// MaxTasks is how many task handlers may run at once.
	MaxTasks = 32
	// MaxPendingPerAddress bounds the pending logins from one IP address,
	// so that one address cannot take the whole pending table.
	MaxPendingPerAddress = 64
)

// sweepEvery is how often the janitor drops expired logins and sessions.
const sweepEvery = time.Second

// Refusal log lines: at most refusalLogLines per refusalLogEvery, the rest
// counted (see logSampler).
const (
	refusalLogLines = 10
	refusalLogEvery = 10 * time.Second
)

// Config configures an Agent. Only Credential is required.
type Config struct {
	// Credential is the device's credential and the address of its
	// gateway (Credential.Gateway).
	Credential credfile.Credential
	// Listen is the UDP address to serve on; default ":5683".
	Listen string
	// Window is dT, the freshness window; default 10 s.
	Window time.Duration
	// Logger receives login outcomes and failures; default: discard.
	Logger *slog.Logger
	// GatewayTimeout bounds one relay to the gateway, retransmissions
	// included; default 5 s.
	GatewayTimeout time.Duration
	// MaxSessions bounds the pending logins and, separately, the
	// established sessions; default 10000.
	MaxSessions int
	// Client sends m2 to the gateway; nil uses RFC 7252's retransmission
	// parameters.
	Client *coap.Client
	// Relay, when not nil, carries m2 to the gateway instead of CoAP to
	// Credential.Gateway with Client: the MQTT binding (mqttbind).
	Relay transport.Poster
	// NoListen serves no CoAP socket: the requests come through another
	// binding (the MQTT broker) that feeds them to Handler.
	NoListen bool
	// Conn, when set, is the packet conn the agent serves CoAP on instead
	// of a UDP socket at Listen: an in-process network (package memnet)
	// in tests. The agent closes it when it stops.
	Conn coap.PacketConn

	// SessionIdle and SessionLife bound an established session; zero
	// means 5 minutes and 1 hour (spec section 9).
	SessionIdle time.Duration
	SessionLife time.Duration
	// TaskTimeout is the deadline given to a task handler's context;
	// default 5 s.
	TaskTimeout time.Duration
	// NoBuiltins leaves out the echo, sensor.read and control.write
	// handlers.
	NoBuiltins bool

	// NoSourceVerification turns off the return-routability check of
	// the sender of an m1 (CoAP Echo, see source.go) for clients that
	// cannot answer an Echo challenge. The relayed m2 then carries no
	// Source option, and the gateway can only count failed logins per
	// user: anyone who knows a user's ID can then lock that user out
	// through this device. Leave it off.
	NoSourceVerification bool
	// VerifiedSources bounds the table of verified client addresses;
	// default DefaultVerifiedSources.
	VerifiedSources int
	// SourceRate (logins per second) and SourceBurst are the token
	// bucket of logins per client address; defaults DefaultSourceRate
	// and DefaultSourceBurst.
	SourceRate  float64
	SourceBurst int
	// MaxSessionsPerUser and MaxPendingPerUser bound what one user
	// (authenticated by the gateway) holds on this device: established
	// sessions, and logins waiting for m5. A new one beyond the bound
	// closes that user's oldest; defaults DefaultMaxSessionsPerUser and
	// DefaultMaxPendingPerUser.
	MaxSessionsPerUser int
	MaxPendingPerUser  int
	// Now and Rand replace the clock and the randomness (K_j); defaults
	// time.Now and crypto/rand. Tests move the clock.
	Now  func() time.Time
	Rand io.Reader
}

// Agent is a running device agent. Its methods are safe for concurrent use.
type Agent struct {
	cfg     Config
	gateway string
	log     *slog.Logger
	dev     *protocol.Device
	relay   transport.Poster
	conn    coap.PacketConn // nil with NoListen
	srv     *coap.Server
	mux     *coap.Mux

	// ctx is Run's context: relays and tasks end when Run is asked to
	// stop. It is set before the server starts.
	ctx     context.Context
	running atomic.Bool
	started chan struct{} // closed by Run once ctx is set

	relays chan struct{} // slots for logins waiting on the gateway
	tasks  chan struct{} // slots for running task handlers

	mu       sync.Mutex
	pending  map[netip.Addr][]*pendingLogin
	bySID    map[[protocol.SIDSize]byte]*pendingLogin // logins waiting for m5
	nPending int
	sessions map[[protocol.SIDSize]byte]*session
	// userSess and userWait are each user's sessions and logins waiting
	// for m5, oldest first (item 7 of the limits: MaxSessionsPerUser,
	// MaxPendingPerUser).
	userSess map[string][]*session
	userWait map[string][]*pendingLogin

	echo     *echo.Minter            // Echo values (package echo)
	verified *echo.Table[netip.Addr] // addresses that answered an Echo
	limits   *sourceLimits           // per-address token buckets and relay shares
	logs     *logSampler             // bounds the lines of refusals

	hmu      sync.RWMutex
	handlers map[string]TaskFunc

	cmu      sync.Mutex
	controls []Control

	metrics *agentMetrics // metrics.go
}

// New checks cfg, binds the UDP socket (so that Addr is known at once and
// a port in use is reported here) and registers the built-in handlers. Call
// Run to serve, or Close to release the socket without serving.
func New(cfg Config) (*Agent, error) {
	if cfg.Relay == nil {
		if cfg.Credential.Gateway == "" {
			return nil, errors.New("device: the credential names no gateway address")
		}
		if _, _, err := net.SplitHostPort(cfg.Credential.Gateway); err != nil {
			return nil, fmt.Errorf("device: gateway address %q must be host:port", cfg.Credential.Gateway)
		}
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Window <= 0 {
		cfg.Window = protocol.DefaultWindow
	}
	if cfg.GatewayTimeout <= 0 {
		cfg.GatewayTimeout = DefaultGatewayTimeout
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.TaskTimeout <= 0 {
		cfg.TaskTimeout = DefaultTaskTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Client == nil {
		cfg.Client = &coap.Client{}
	}
	if cfg.Relay == nil {
		cfg.Relay = transport.CoAP{Client: cfg.Client, Addr: cfg.Credential.Gateway}
	}
	if cfg.VerifiedSources <= 0 {
		cfg.VerifiedSources = DefaultVerifiedSources
	}
	if cfg.SourceRate <= 0 {
		cfg.SourceRate = DefaultSourceRate
	}
	if cfg.SourceBurst <= 0 {
		cfg.SourceBurst = DefaultSourceBurst
	}
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = DefaultMaxSessionsPerUser
	}
	if cfg.MaxPendingPerUser <= 0 {
		cfg.MaxPendingPerUser = DefaultMaxPendingPerUser
	}
	echoes, err := echo.NewMinter()
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	pcfg := protocol.Config{Now: cfg.Now, Rand: cfg.Rand, Window: cfg.Window, SessionIdle: cfg.SessionIdle, SessionLife: cfg.SessionLife}
	// The replay cache must hold every m1 accepted within 2 dT; refusing
	// when full is safe, so size it generously against the tables.
	dev, err := protocol.NewDevice(cfg.Credential.DeviceCredential, replay.New(max(4*cfg.MaxSessions, 4096)), pcfg)
	if err != nil {
		return nil, fmt.Errorf("device: credential: %w", err)
	}
	conn := cfg.Conn
	if conn == nil && !cfg.NoListen {
		laddr, err := net.ResolveUDPAddr("udp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("device: listen address %q: %w", cfg.Listen, err)
		}
		udp, err := net.ListenUDP("udp", laddr)
		if err != nil {
			return nil, fmt.Errorf("device: cannot listen on %s: %w", cfg.Listen, err)
		}
		conn = coap.UDP(udp)
	}
	a := &Agent{
		cfg:      cfg,
		gateway:  cfg.Relay.Name(),
		log:      cfg.Logger.With("device", cfg.Credential.ID),
		dev:      dev,
		relay:    cfg.Relay,
		conn:     conn,
		ctx:      context.Background(),
		started:  make(chan struct{}),
		relays:   make(chan struct{}, MaxRelays),
		tasks:    make(chan struct{}, MaxTasks),
		pending:  make(map[netip.Addr][]*pendingLogin),
		bySID:    make(map[[protocol.SIDSize]byte]*pendingLogin),
		sessions: make(map[[protocol.SIDSize]byte]*session),
		handlers: make(map[string]TaskFunc),
		userSess: make(map[string][]*session),
		userWait: make(map[string][]*pendingLogin),
		echo:     echoes,
		verified: echo.NewTable[netip.Addr](cfg.VerifiedSources, VerifiedFor),
		limits:   newSourceLimits(cfg.SourceRate, cfg.SourceBurst),
		logs:     &logSampler{limit: refusalLogLines, interval: refusalLogEvery},
	}
	mux := coap.NewMux()
	mux.Handle(coapbind.PathLogin, coap.HandlerFunc(a.serveLogin))
	mux.Handle(coapbind.PathInfo, coap.HandlerFunc(a.serveInfo))
	mux.Handle(coapbind.PathConfirm, coap.HandlerFunc(a.serveConfirm))
	mux.Handle(coapbind.PathTask, coap.HandlerFunc(a.serveTask))
	a.mux = mux
	a.srv = &coap.Server{
		Handler: mux,
		// A handler blocks its worker (internal/coap runs it on the
		// reading goroutine), and at most MaxRelays+MaxTasks handlers
		// block at once: the remaining GOMAXPROCS workers stay free for
		// confirms and for answering busy.
		Workers: MaxRelays + MaxTasks + runtime.GOMAXPROCS(0),
		Logger:  cfg.Logger,
	}
	a.metrics = newAgentMetrics(a)
	if !cfg.NoBuiltins {
		a.registerBuiltins()
	}
	return a, nil
}

// Addr returns the address the agent listens on, nil with NoListen.
func (a *Agent) Addr() net.Addr {
	if a.conn == nil {
		return nil
	}
	return coap.LocalAddr(a.conn)
}

// Handler returns the handler of the agent's endpoints, for a binding
// other than its CoAP socket (mqttbind) to feed requests to. A request
// that comes before Run has started waits for it.
func (a *Agent) Handler() coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
		select {
		case <-a.started:
		case <-ctx.Done():
			return coap.ServiceUnavailable, dst
		}
		return a.mux.ServeCoAP(ctx, req, dst)
	})
}

// ID returns the device identity DID_j.
func (a *Agent) ID() string { return a.dev.ID() }

// Profile returns the device's profile.
func (a *Agent) Profile() protocol.Profile { return a.dev.Profile() }

// Gateway returns the gateway address logins are relayed to.
func (a *Agent) Gateway() string { return a.gateway }

// Run serves until ctx is done, then closes the socket, waits for the
// requests in progress (relays and tasks see ctx end) and closes every
// session. It may be called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("device: Run called twice")
	}
	a.ctx = ctx
	close(a.started)
	listen := "none"
	served := make(chan error, 1)
	if a.conn != nil {
		listen = a.Addr().String()
		go func() { served <- a.srv.ServePacket(a.conn) }()
	}
	a.log.Info("device agent serving", "profile", a.dev.Profile().String(), "listen", listen, "gateway", a.gateway)
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			a.sweep()
			a.flushRefusalLog()
		case err := <-served:
			// The socket failed under us (Close from another goroutine).
			a.closeAll()
			return err
		case <-ctx.Done():
			var err error
			if a.conn != nil {
				a.conn.Close()
				err = <-served
			}
			a.closeAll()
			a.log.Info("device agent stopped")
			return err
		}
	}
}

// Close releases the socket of an agent whose Run was never called; to
// stop a running agent, cancel Run's context.
func (a *Agent) Close() error {
	if a.conn == nil {
		return nil
	}
	return a.conn.Close()
}

// Stats is a snapshot of the agent's tables.
type Stats struct {
	Pending  int // logins between m1 and m5 (classic: m4)
	Sessions int // established sessions, expired ones not yet swept included
}

// Stats returns the sizes of the tables.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Stats{Pending: a.nPending, Sessions: len(a.sessions)}
}

// TransportStats returns the CoAP server's counters (datagrams received,
// malformed, duplicates...).
func (a *Agent) TransportStats() *coap.Stats { return &a.srv.Stats }

// Package gateway is the tagauth gateway daemon: the verify service over
// CoAP/UDP (spec section 11), the HTTPS admin API for enrolment,
// provisioning, revocation and policy, and the audit log.
//
// # Data directory
//
// Everything the gateway keeps lives in one directory (mode 0700), created
// at first start:
//
//	keys.json       master keys K_GTW by version (internal/keyfile), 0600
//	store.db        users, devices, grants, enrolment codes, audit (internal/store/bolt)
//	admin-cert.pem  the admin API's self-signed certificate (ECDSA P-256, 10 years)
//	admin-key.pem   its private key, 0600
//	admin-token     the admin bearer token, 0600 (unless TAGAUTH_ADMIN_TOKEN is set)
//	admin.json      the admin URL and certificate fingerprint, for CLI commands on this host
//	audit-journal/  audit records written ahead of the store (internal/auditlog)
//
// The gateway refuses to start, with a message that says what to do, on a
// key file or private file that others can read, a corrupt key file or
// store, a store held by another gateway, or a profile that does not match
// the key file's.
//
// # Verify
//
// Each datagram to /tagauth/verify goes through the verify pipeline
// (pipeline.go: rate limits, the lock decision, protocol.Gateway.VerifyM2
// on m2 parsed once, the audit record kept before m3 is built, failure
// counting), against an in-memory registry (internal/registry) loaded
// from the store at start and kept in line with it by the store's change
// feed (follower.go). An admin write has reached the registry before it
// is answered (applyAdmin reads its entity back from the store as the
// feed does), so a revocation takes effect on the next verify. The key
// file is watched: a rotation or retirement made with "tagauth gateway
// keys" reaches the running gateway within a second (or at once on
// ReloadKeys).
//
// # Audit
//
// Every successful verify, enrolment, provisioning, revocation, policy
// change, key change and lockout becomes one store.AuditRecord, appended to
// the audit journal before it is answered (auditjournal.go), written as a
// JSON line to Config.AuditOut and appended to the store by one batching
// writer; refusals are counted and sampled instead. When the writer falls
// behind, callers wait (backpressure): records are never dropped to keep
// up, and a record that cannot be written fails its login (busy) or admin
// action (503). Records carry outcomes and precise reasons, never a
// secret, and identities that came off the wire are sanitized (see
// auditjson.SanitizeID).
//
// # Components
//
// Gateway is the wiring: Open builds the parts in order, Run serves them,
// Close gives them back, and the public accessors read them. Each part
// owns its fields and lives in its own files: the follower (follower.go: the
// registry's updates from the change feed, the admin lock, the waits of
// writers in waits.go), the keyring (keys.go: the key file, its
// polling, key publication on replicas), the CoAP endpoint (coapsock.go),
// the verifier (pipeline.go), the guard (limits.go, adminguard.go), the
// audit writer (audit.go, auditjournal.go) and the replicas' backends
// (backends.go). The data directory (datadir.go), the admin files
// (files.go) and the replay cache's state (replaystate.go) are functions
// Open calls.
//
// # Seams
//
// Config.Store, Config.Replay, Config.LockoutStore and Config.SharedState
// take any store.Store, protocol.ReplayCache, lockout.Store and
// SharedState: the command line opens PostgreSQL and Redis for replicas
// (cmd/tagauth/backends.go); by default the gateway uses bbolt in the data
// directory and in-memory caches.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/atomicfile"
	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// File names in the data directory.
const (
	KeyFileName     = keyfile.FileName
	StoreFileName   = bolt.FileName
	CertFileName    = "admin-cert.pem"
	CertKeyFileName = "admin-key.pem"
)

// Defaults of Config.
const (
	DefaultCoAPAddr   = ":5683"
	DefaultAdminAddr  = "127.0.0.1:8443"
	DefaultReplaySize = 1 << 20
	DefaultKeyPoll    = time.Second
)

// VerifyPath is the CoAP path of the verify service.
const VerifyPath = coapbind.PathVerify

// Config configures a gateway. Only DataDir is required.
type Config struct {
	// DataDir holds keys, store, certificate and token; created if absent.
	DataDir string
	// Profile is the protocol profile served; zero means hardened. It must
	// match the key file's.
	Profile protocol.Profile
	// CoAPAddr is the UDP address of /tagauth/verify; default ":5683".
	CoAPAddr string
	// CoAPConn, when set, carries the verify service instead of a UDP
	// socket at CoAPAddr: an in-process network (package memnet) in
	// tests. The gateway closes it when it stops.
	CoAPConn coap.PacketConn
	// AdminAddr is the TCP address of the HTTPS admin API; default
	// "127.0.0.1:8443".
	AdminAddr string
	// Advertise is the host that clients dial when an address above binds
	// every interface (":5683"): it goes into device credentials, the admin
	// URL and the self-signed certificate. Default 127.0.0.1.
	Advertise string
	// AdminToken is the admin bearer token (from TAGAUTH_ADMIN_TOKEN); if
	// empty, DATA/admin-token is used, generated at first start.
	AdminToken string
	// TLSCert and TLSKey name an operator-supplied certificate and key
	// (PEM) for the admin API, instead of the self-signed one.
	TLSCert, TLSKey string
	// Window is dT; zero means protocol.DefaultWindow.
	Window time.Duration
	// ReplaySize bounds the in-memory replay cache; default 1<<20 logins.
	ReplaySize int
	// AllowAll lets every active user log in to every active device;
	// otherwise only grants do.
	AllowAll bool
	// Logger receives operational messages; default discards.
	Logger *slog.Logger
	// AuditOut receives one JSON line per audit record; default os.Stderr.
	AuditOut io.Writer
	// Store replaces the bbolt store in DataDir; the gateway closes it.
	// A shared store (store.Store.Shared: PostgreSQL, opened by the
	// command line from --store) makes the gateway a replica
	// (backends.go).
	Store store.Store
	// SharedState is the replay cache and lockout state replicas share
	// (Redis, from --replay), which needs a shared Store; its cache goes
	// in Replay and its lockout store in LockoutStore too. The gateway
	// closes it.
	SharedState SharedState
	// Replay replaces the in-memory replay cache (shared backends).
	Replay protocol.ReplayCache
	// KeyPoll is how often the key file is checked for changes; default 1 s.
	KeyPoll time.Duration
	// CoAPWorkers is the number of CoAP worker goroutines; default
	// GOMAXPROCS.
	CoAPWorkers int
	// Now is the clock; default time.Now. Tests move it.
	Now func() time.Time

	// Operations (limits.go, metrics.go, opsapi.go): lockout, rate
	// limits, metrics. See docs/OPERATIONS.md.

	// Lockout is the lockout policy; zero fields mean the defaults (5
	// failures within 5 minutes lock for 15 minutes).
	Lockout lockout.Policy
	// LockoutOff disables lockout.
	LockoutOff bool
	// LockoutStore keeps failures and locks; nil means in this process
	// (lockout.NewMemory). Replicas share one (internal/redisstate). The
	// gateway does not close it.
	LockoutStore lockout.Store
	// SourceLimit and DeviceLimit are token buckets per source IP address
	// and per claimed device id of verify requests; a zero Rate disables
	// one. Limited requests are answered busy.
	SourceLimit, DeviceLimit RateLimit
	// MetricsToken is a read-only bearer token for GET /metrics only (the
	// admin token works there too); empty means only the admin token.
	MetricsToken string

	// Audit trail (auditjournal.go, docs/OPERATIONS.md#audit).

	// AuditKeep is how long audit records are kept (older ones are
	// pruned hourly); zero keeps them forever.
	AuditKeep time.Duration
	// AuditSync is the audit journal's fsync policy; the zero value is
	// off: records survive a crash of the process, not of the machine.
	AuditSync auditlog.Sync
	// AuditSampleEvery is the sampling interval of refusal records;
	// zero means DefaultAuditSampleEvery, negative writes a record for
	// every refusal (tests; never on a gateway others can reach).
	AuditSampleEvery time.Duration

	// KDFFloor is the least Argon2id time cost and memory a hardened card
	// may be enrolled with (admin.go); zero fields mean the spec's
	// defaults (protocol.DefaultKDF). It must lie in the spec's range.
	KDFFloor protocol.KDFParams
	// InsecureTestKDF lets enrolment go below KDFFloor (down to the
	// spec's range): for tests and load generators that need cheap
	// cards, never for a deployment.
	InsecureTestKDF bool
}

// Gateway is a running (or ready to run) gateway. Open prepares it and
// binds its sockets; Run serves until its context ends.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	profile protocol.Profile
	now     func() time.Time
	// dataFinal is the data directory while a first start fills a
	// temporary one in cfg.DataDir (datadir.go); empty otherwise.
	dataFinal string

	store  store.Store
	reg    *registry.Memory
	keys   *keyring  // the key file and the keys in use (keys.go)
	follow *follower // the registry's updates from the store (follower.go)
	proto  *protocol.Gateway
	pcfg   protocol.Config

	coap    *coapEndpoint // the verify service's sockets (coapsock.go)
	adminLn net.Listener
	httpSrv *http.Server

	fingerprint string
	tokenHash   [sha256.Size]byte
	tokens      *tokenAuth // roles.go: who calls the admin port
	tokenPath   string
	coapPublic  string
	adminURL    string

	audit *auditWriter
	bk    *backends // replicas: shared store and replay cache (backends.go)

	replayCache protocol.ReplayCache
	memReplay   *replay.Cache     // the in-memory cache, saved at a clean shutdown
	guard       *guard            // lockout and rate limits (limits.go)
	metrics     *gwMetrics        // metrics.go
	console     consoleMount      // opsapi.go
	admin       *adminsvc.Service // adminwire.go: the admin API's and console's rules

	proofs   protocol.ReplayCache // I_j values seen (pipeline.go, firstProof)
	verifier *verifier            // the verify pipeline (pipeline.go)
	events   events               // state changes, for waiters (waits.go)

	ran       atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Open prepares a gateway from cfg: it creates the data directory, key
// file, certificate and token at first start (and only then: see
// datadir.go), opens the store, loads the
// registry and binds the CoAP and admin sockets (so CoAPAddr and AdminURL
// are known before Run). Call Run to serve, or Close to give everything
// back without serving.
func Open(cfg Config) (_ *Gateway, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("gateway: no data directory (--data DIR)")
	}
	if cfg.Profile == 0 {
		cfg.Profile = protocol.Hardened
	}
	if !cfg.Profile.Valid() {
		return nil, fmt.Errorf("gateway: unknown profile %v", cfg.Profile)
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("gateway: give both --cert and --key, or neither")
	}
	setDefaults(&cfg)
	if !cfg.KDFFloor.Valid() {
		return nil, fmt.Errorf("gateway: the KDF floor t=%d m=%d KiB is outside the spec's range of Argon2id parameters (1<=t<=64, 8<=m_kib<=1048576)", cfg.KDFFloor.Time, cfg.KDFFloor.MemoryKiB)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, profile: cfg.Profile, now: cfg.Now}
	defer func() {
		if err != nil {
			g.Close()
			if g.dataFinal != "" {
				// datadir.go: a failed first start leaves nothing (Close
				// has closed the store in it).
				os.RemoveAll(g.cfg.DataDir)
			}
		}
	}()
	work, final, err := openDataDir(cfg.DataDir, cfg.Store == nil) // datadir.go: strict modes, first start
	if err != nil {
		return nil, err
	}
	g.cfg.DataDir, g.dataFinal = work, final
	if g.keys, err = openKeyring(g.cfg.DataDir, g.profile, g.now, g.log); err != nil { // keys.go
		return nil, err
	}
	g.keys.events = &g.events
	g.keys.audit = func(rec store.AuditRecord) { g.audit.submit(rec) }
	if g.bk, err = openBackends(&g.cfg, g.log); err != nil { // backends.go: --store, --replay
		return nil, err
	}
	g.keys.bk = g.bk
	if g.store, err = openStore(&g.cfg); err != nil {
		return nil, err
	}
	g.follow = &follower{store: g.store, bk: g.bk, keys: g.keys, log: g.log, now: g.now, events: &g.events}
	if g.reg, err = g.follow.load(g.profile, g.cfg.AllowAll); err != nil { // follower.go: the registry from the store
		return nil, err
	}
	g.keys.reg = g.reg
	if err := g.follow.openShared(g.cfg.Replay != nil); err != nil { // follower.go: replicas follow the shared store
		return nil, err
	}
	g.pcfg = protocol.Config{Now: g.now, Rand: rand.Reader, Window: cfg.Window}
	rc := g.cfg.Replay
	if rc == nil {
		mc := replay.New(cfg.ReplaySize)
		openReplayState(mc, &g.cfg, g.log) // replaystate.go: survive restarts
		g.memReplay = mc
		rc = mc
	}
	if g.proto, err = protocol.NewGateway(g.profile, g.follow.verifyRegistry(), rc, g.pcfg); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.replayCache = rc
	// The marks of I_j values seen (limits.go, firstProof) share a shared
	// cache; in memory they get their own, so that they never take the
	// room of the logins' entries.
	g.proofs = rc
	if g.cfg.Replay == nil {
		g.proofs = replay.New(cfg.ReplaySize)
	}
	if g.tokenHash, g.tokenPath, err = openToken(&g.cfg, g.log); err != nil { // files.go
		return nil, err
	}
	if err := g.openOps(); err != nil {
		return nil, err
	}
	cert, fingerprint, err := openCert(&g.cfg, g.now(), g.log) // files.go
	if err != nil {
		return nil, err
	}
	g.fingerprint = fingerprint
	if err := g.listen(cert); err != nil {
		return nil, err
	}
	if g.dataFinal != "" {
		// A first start's directory moves into place, now that every
		// file is made; the paths into it follow.
		if err := commitDataDir(g.cfg.DataDir, g.dataFinal); err != nil { // datadir.go
			return nil, err
		}
		g.cfg.DataDir, g.dataFinal = g.dataFinal, ""
		if g.tokenPath != "" {
			g.tokenPath = filepath.Join(g.cfg.DataDir, adminapi.TokenFileName)
		}
		g.keys.moved(g.cfg.DataDir)
	}
	if err := writeAdminInfo(g.cfg.DataDir, AdminInfo{URL: g.adminURL, Fingerprint: g.fingerprint, CoAP: g.coapPublic}); err != nil {
		return nil, err
	}
	if err := g.openAudit(); err != nil { // auditjournal.go
		return nil, err
	}
	g.verifier = &verifier{proto: g.proto, profile: g.profile, window: g.cfg.Window, now: g.now, guard: g.guard,
		proofs: g.proofs, audit: g.audit, metrics: g.metrics, log: g.log}
	g.verifier.replica = g.bk != nil
	return g, nil
}

func setDefaults(cfg *Config) {
	if cfg.CoAPAddr == "" {
		cfg.CoAPAddr = DefaultCoAPAddr
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = DefaultAdminAddr
	}
	if cfg.ReplaySize <= 0 {
		cfg.ReplaySize = DefaultReplaySize
	}
	if cfg.Window <= 0 {
		cfg.Window = protocol.DefaultWindow
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AuditOut == nil {
		cfg.AuditOut = os.Stderr
	}
	if cfg.KeyPoll <= 0 {
		cfg.KeyPoll = DefaultKeyPoll
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KDFFloor.Time == 0 {
		cfg.KDFFloor.Time = protocol.DefaultKDF.Time
	}
	if cfg.KDFFloor.MemoryKiB == 0 {
		cfg.KDFFloor.MemoryKiB = protocol.DefaultKDF.MemoryKiB
	}
	if cfg.KDFFloor.Threads == 0 {
		cfg.KDFFloor.Threads = 1
	}
}

// openStore opens the store: Config.Store, or bbolt in the data
// directory.
func openStore(cfg *Config) (store.Store, error) {
	if cfg.Store != nil {
		return cfg.Store, nil
	}
	st, err := bolt.Open(filepath.Join(cfg.DataDir, StoreFileName))
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return st, nil
}

// listen binds the CoAP and admin sockets and works out the addresses
// clients dial.
func (g *Gateway) listen(cert tls.Certificate) error {
	_, err := net.ResolveUDPAddr("udp", g.cfg.CoAPAddr)
	if err != nil {
		return fmt.Errorf("gateway: CoAP address %q: %w", g.cfg.CoAPAddr, err)
	}
	if g.coap, err = listenCoAP(&g.cfg, nonBlockingVerify(&g.cfg, g.bk)); err != nil { // coapsock.go
		return err
	}
	g.adminLn, err = net.Listen("tcp", g.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("gateway: cannot listen for the admin API on %s: %w (choose another with --admin)", g.cfg.AdminAddr, err)
	}
	g.adminLn = g.guard.limitAdmin(g.adminLn) // adminguard.go: connection limits
	g.coapPublic = publicAddr(coap.LocalAddr(g.coap.conn), g.cfg.Advertise)
	g.adminURL = "https://" + publicAddr(g.adminLn.Addr(), g.cfg.Advertise)

	mux := coap.NewMux()
	// The pipeline is complete once Open has opened the audit writer,
	// before Run serves anything.
	mux.Handle(VerifyPath, coap.HandlerFunc(func(ctx context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
		return serveVerify(g.verifier, ctx, req, dst) // verify.go
	}))
	srv := &coap.Server{Handler: mux, Workers: g.cfg.CoAPWorkers, Logger: g.log.With("part", "coap")}
	g.coap.setServer(srv, g.cfg.CoAPWorkers) // coapsock.go: workers per socket, batching

	g.httpSrv = &http.Server{
		Handler:           g.adminHandler(),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: adminReadHeaderTimeout, // adminguard.go
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       adminIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.With("part", "admin").Handler(), slog.LevelDebug),
	}
	return nil
}

// publicAddr is addr as a client should dial it: an unspecified host
// becomes the advertised one (Config.Advertise, default 127.0.0.1).
func publicAddr(addr net.Addr, advertise string) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = advertise
		if host == "" {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

// AdminInfo is the content of DATA/admin.json: what a CLI command on the
// gateway's host needs to reach the admin API (with the token file).
type AdminInfo = adminapi.AdminInfo

// writeAdminInfo writes DATA/admin.json.
func writeAdminInfo(dir string, info AdminInfo) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WritePerm(filepath.Join(dir, adminapi.AdminInfoName), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}

// CoAPAddr is the bound address of the CoAP verify service.
func (g *Gateway) CoAPAddr() net.Addr { return coap.LocalAddr(g.coap.conn) }

// CoAPPublic is the CoAP address clients dial (in device credentials).
func (g *Gateway) CoAPPublic() string { return g.coapPublic }

// AdminURL is the admin API's base URL, such as https://127.0.0.1:8443.
func (g *Gateway) AdminURL() string { return g.adminURL }

// Fingerprint is the hex SHA-256 of the admin certificate (DER), which
// clients pin.
func (g *Gateway) Fingerprint() string { return g.fingerprint }

// TokenPath is the file holding the admin token, or "" when the token came
// from the configuration (TAGAUTH_ADMIN_TOKEN).
func (g *Gateway) TokenPath() string { return g.tokenPath }

// Profile is the profile the gateway serves.
func (g *Gateway) Profile() protocol.Profile { return g.profile }

// VerifyHandler returns the handler of /tagauth/verify that the CoAP
// server runs, for another binding (MQTT, package mqttbind) to feed
// verify requests to.
func (g *Gateway) VerifyHandler() coap.Handler { return g.coap.srv.Handler }

// CoAPStats exposes the CoAP server's counters (received, malformed...).
func (g *Gateway) CoAPStats() *coap.Stats { return &g.coap.srv.Stats }

// Run serves CoAP verify and the HTTPS admin API until ctx is done or a
// server fails, then shuts down: it stops both servers (letting admin
// requests in progress finish for up to 5 seconds), flushes the audit log
// and closes the store. It returns nil after a clean shutdown. Run may be
// called once.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.ran.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice")
	}
	errc := make(chan error, 2)
	go func() {
		err := g.coap.serve() // coapsock.go
		if err == nil && ctx.Err() == nil {
			err = errors.New("CoAP socket closed")
		}
		errc <- err
	}()
	go func() {
		err := g.httpSrv.ServeTLS(g.adminLn, "", "")
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	pollCtx, stopPoll := context.WithCancel(context.Background())
	var pollDone sync.WaitGroup
	pollDone.Go(func() { g.keys.poll(pollCtx, g.cfg.KeyPoll) }) // keys.go
	pollDone.Go(func() { g.follow.run(pollCtx) })               // follower.go
	g.log.Info("gateway serving", "profile", g.profile.String(), "coap", g.CoAPAddr().String(), "admin", g.adminURL, "fingerprint", g.fingerprint)

	var runErr error
	pending := 2
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		pending--
		if runErr != nil {
			runErr = fmt.Errorf("gateway: %w", runErr)
		}
		g.log.Error("gateway server stopped", "err", runErr)
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := g.httpSrv.Shutdown(shut); err != nil {
		g.httpSrv.Close()
	}
	cancel()
	g.coap.close()
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && runErr == nil && ctx.Err() == nil {
			runErr = fmt.Errorf("gateway: %w", err)
		}
	}
	stopPoll()
	pollDone.Wait()
	if err := g.Close(); err != nil && runErr == nil {
		runErr = err
	}
	g.log.Info("gateway stopped")
	return runErr
}

// Close releases everything Open acquired: sockets, the audit writer
// (after flushing it) and the store. Run calls it on its way out; call it
// directly only for a gateway that never ran. Closing twice is harmless.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		// The sockets first (no new work), the audit writer (flushed
		// into the store) before the store.
		var errs []error
		if g.adminLn != nil {
			g.adminLn.Close()
		}
		g.coap.close()
		if g.memReplay != nil {
			saveReplayState(g.memReplay, &g.cfg, g.log) // replaystate.go
			g.memReplay = nil
		}
		if g.audit != nil {
			if err := g.audit.close(); err != nil {
				errs = append(errs, err)
			}
		}
		g.bk.close() // backends.go
		if g.store != nil {
			if err := g.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("gateway: closing store: %w", err))
			}
		}
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}

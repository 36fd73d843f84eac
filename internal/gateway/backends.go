package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/redisstate"
	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/protocol"
)

// Replicas: shared backends.
//
// A gateway started with a PostgreSQL store (Config.StoreURL, or a
// *postgres.Store in Config.Store) is a replica: several gateways share the
// database, and with a Redis replay cache (Config.ReplayURL) also the
// replay cache and the lockout counters. Then:
//
//   - The registry in memory follows the database: notify.go LISTENs for
//     the changes every replica (or an operator) commits and re-reads the
//     entities they name, so a revocation, grant or new identity reaches
//     every replica within milliseconds. The verify hot path still reads
//     only memory.
//   - Fail closed: while the change feed is down the registry may be
//     stale, so Standing fails and every verify answers busy, until the
//     feed is back and the registry has been reloaded in full. A Redis
//     failure fails Insert, which answers busy too. Both recover by
//     themselves; BackendHealth and the log say what is happening.
//   - Master keys stay in each replica's key file: every replica needs the
//     same one (copy keys.json). The database records each version's
//     fingerprint and retirement (never the key): a replica whose key file
//     disagrees refuses to start, and a version retired on one replica is
//     refused by all of them within a second.
//   - A successful verify is answered only once its audit record is
//     committed, in a group commit shared by the verifies in flight, so
//     that a replica killed at any moment has not let a login through
//     without its record. Refusals are recorded in the background, as on
//     a single gateway.

// DefaultReplicaWorkers is the CoAP worker count of a replica when
// Config.CoAPWorkers is zero: a successful verify waits for its audit
// commit (a few ms), so more workers keep the socket read meanwhile.
const DefaultReplicaWorkers = 64

// Commit limits of the verify audit records.
const (
	commitBatch   = 512
	commitTimeout = 2 * time.Second
)

// backends is what a replica holds beside the single-gateway state.
type backends struct {
	pg     *postgres.Store   // the shared store
	redis  *redisstate.State // the shared replay cache and lockout; nil: in memory
	shared *sharedRegistry   // the registry verifies read
	feed   *postgres.Feed    // the change feed opened at Open, handed to Run
	commit *auditCommitter   // durable audit of successful verifies
	keys   keySync           // notify.go
	health struct {
		mu      sync.Mutex
		ok      bool
		since   time.Time
		lastErr string
	}
	quarantine atomic.Int64 // replay-cache quarantine end, ms; 0 none
	reloads    atomic.Uint64
	changes    atomic.Uint64
}

// openBackends opens the stores named by Config.StoreURL and ReplayURL, if
// any, into Config.Store, Replay and LockoutStore. It runs before the
// store is read.
func (g *Gateway) openBackends() error {
	cfg := &g.cfg
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cfg.StoreURL != "" && cfg.StoreURL != "bolt" {
		if cfg.Store != nil {
			return errors.New("gateway: give a store URL or a store, not both")
		}
		if !strings.HasPrefix(cfg.StoreURL, "postgres://") && !strings.HasPrefix(cfg.StoreURL, "postgresql://") {
			return fmt.Errorf("gateway: --store %q: want postgres://... (or leave it out for the embedded store in the data directory)", cfg.StoreURL)
		}
		st, err := postgres.Open(ctx, cfg.StoreURL, postgres.Options{Logger: g.log.With("part", "postgres")})
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		cfg.Store = st
	}
	pg, _ := cfg.Store.(*postgres.Store)
	if cfg.ReplayURL != "" && cfg.ReplayURL != "memory" {
		if cfg.Replay != nil {
			return errors.New("gateway: give a replay URL or a replay cache, not both")
		}
		if pg == nil {
			// A shared replay cache with a private registry would let
			// replicas disagree on revocations: refuse the mix.
			return errors.New("gateway: --replay redis://... needs --store postgres://... (replicas share both)")
		}
		rs, err := redisstate.Open(ctx, cfg.ReplayURL, redisstate.Options{Window: cfg.Window, Logger: g.log.With("part", "redis")})
		if err != nil {
			if cfg.StoreURL != "" {
				pg.Close() // opened above; release never saw it
			}
			return fmt.Errorf("gateway: %w", err)
		}
		cfg.Replay = rs.Replay()
		if cfg.LockoutStore == nil {
			cfg.LockoutStore = rs.Lockout()
		}
		g.bk = &backends{redis: rs}
	}
	if pg == nil {
		return nil
	}
	if g.bk == nil {
		g.bk = &backends{}
		if cfg.Replay == nil {
			g.log.Warn("replica without a shared replay cache: a login replayed to another replica is not caught; give --replay redis://...")
		}
	}
	g.bk.pg = pg
	if cfg.CoAPWorkers == 0 {
		cfg.CoAPWorkers = DefaultReplicaWorkers
	}
	return nil
}

// openShared makes the registry follow the shared store: it checks the
// key file against the other replicas', starts listening for changes and
// reloads the registry, so the gateway is fresh when Open returns. It runs
// after the store was read.
func (g *Gateway) openShared() error {
	if g.bk == nil {
		return nil
	}
	b := g.bk
	b.shared = &sharedRegistry{mem: g.reg}
	b.commit = newAuditCommitter(b.pg, g.cfg.AuditOut, g.log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.syncKeys(ctx, true); err != nil {
		return err
	}
	feed, err := b.pg.Listen(ctx)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	b.feed = feed
	if err := g.reloadShared(ctx); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.setFeedHealth(nil)
	if b.redis != nil {
		g.checkQuarantine(ctx)
	}
	g.log.Info("replica: registry follows the shared store", "schema", b.pg.Schema(), "replay", g.replayKind())
	return nil
}

// verifyRegistry is the registry protocol.Gateway reads: the in-memory
// one, behind the freshness guard on a replica.
func (g *Gateway) verifyRegistry() protocol.Registry {
	if g.bk != nil {
		return g.bk.shared
	}
	return g.reg
}

// closeBackends stops the audit committer and closes Redis; the store is
// closed with the others by release.
func (g *Gateway) closeBackends() {
	if g.bk == nil {
		return
	}
	if g.bk.commit != nil {
		g.bk.commit.close()
	}
	if g.bk.redis != nil {
		g.bk.redis.Close()
	}
}

func (g *Gateway) replayKind() string {
	switch {
	case g.bk != nil && g.bk.redis != nil:
		return "redis " + g.bk.redis.Addr()
	case g.cfg.Replay != nil:
		return "custom"
	}
	return "memory"
}

// sharedRegistry guards the in-memory registry of a replica: while the
// change feed is down nobody can tell whether it is fresh, so Standing
// fails (busy), and key versions retired (or disagreeing) across replicas
// are unknown whatever the local key file says. Both checks are one atomic
// load: the hot path stays allocation-free.
type sharedRegistry struct {
	mem   *registry.Memory
	fresh atomic.Bool
	// banned[v] refuses key version v; replaced whole on every change.
	banned atomic.Pointer[[256]bool]
	reason atomic.Pointer[string]
}

// errStale is a verify refused because the registry may be stale.
type errStale struct{ why string }

func (e errStale) Error() string {
	return "registry may be stale (" + e.why + "): refusing until the change feed is back"
}

// Standing implements protocol.Registry.
func (r *sharedRegistry) Standing(ctx context.Context, user, device []byte) (protocol.Standing, error) {
	if !r.fresh.Load() {
		why := "PostgreSQL change feed down"
		if p := r.reason.Load(); p != nil {
			why = *p
		}
		return protocol.Standing{}, errStale{why}
	}
	return r.mem.Standing(ctx, user, device)
}

// MasterKey implements protocol.Registry.
func (r *sharedRegistry) MasterKey(kv uint8) (*protocol.GatewayKey, bool) {
	if b := r.banned.Load(); b != nil && b[kv] {
		return nil, false
	}
	return r.mem.MasterKey(kv)
}

// ServiceHealth is the state of one backend.
type ServiceHealth struct {
	// Kind names the backend: "bbolt", "postgres", "memory", "redis".
	Kind string `json:"kind"`
	// OK: the backend answers, and (for postgres) the change feed is up
	// and the registry was reloaded since it came back.
	OK bool `json:"ok"`
	// Since is when OK last changed (the gateway's start if never).
	Since time.Time `json:"since"`
	// Error is the last failure while not OK.
	Error string `json:"error,omitempty"`
	// QuarantineUntil (redis): logins are refused until then because the
	// cache is new or forgot (see internal/redisstate).
	QuarantineUntil *time.Time `json:"quarantine_until,omitempty"`
}

// BackendHealth is what BackendHealth reports.
type BackendHealth struct {
	// Replica is true when the store is shared (postgres).
	Replica bool          `json:"replica"`
	Store   ServiceHealth `json:"store"`
	Replay  ServiceHealth `json:"replay"`
	// Reloads counts full reloads of the registry from the shared store,
	// Changes the change notifications applied.
	Reloads uint64 `json:"reloads"`
	Changes uint64 `json:"changes"`
}

// BackendHealth reports the state of the store and the replay cache, for
// metrics and health pages. A single gateway's embedded store and
// in-memory cache are always OK.
func (g *Gateway) BackendHealth() BackendHealth {
	if g.bk == nil || g.bk.pg == nil {
		h := BackendHealth{Store: ServiceHealth{Kind: "bbolt", OK: true}, Replay: ServiceHealth{Kind: "memory", OK: true}}
		if g.cfg.Store != nil {
			h.Store.Kind = "custom"
		}
		if g.cfg.Replay != nil {
			h.Replay.Kind = "custom"
		}
		return h
	}
	b := g.bk
	h := BackendHealth{Replica: true, Reloads: b.reloads.Load(), Changes: b.changes.Load()}
	b.health.mu.Lock()
	h.Store = ServiceHealth{Kind: "postgres", OK: b.health.ok, Since: b.health.since, Error: b.health.lastErr}
	b.health.mu.Unlock()
	h.Replay = ServiceHealth{Kind: "memory", OK: true}
	if b.redis != nil {
		rh := b.redis.Health()
		h.Replay = ServiceHealth{Kind: "redis", OK: rh.OK, Since: rh.Since, Error: rh.LastError}
		if q := b.quarantine.Load(); q != 0 && time.UnixMilli(q).After(g.now()) {
			t := time.UnixMilli(q).UTC()
			h.Replay.QuarantineUntil = &t
			h.Replay.OK = false
			if h.Replay.Error == "" {
				h.Replay.Error = "replay cache new or lost its data: refusing logins until the quarantine ends"
			}
		}
	} else if g.cfg.Replay != nil {
		h.Replay.Kind = "custom"
	}
	return h
}

// setFeedHealth records the change feed's state: err nil means up and the
// registry reloaded. It logs each change of state once.
func (g *Gateway) setFeedHealth(err error) {
	b := g.bk
	b.health.mu.Lock()
	defer b.health.mu.Unlock()
	switch {
	case err == nil && !b.health.ok:
		b.health.ok, b.health.since, b.health.lastErr = true, g.now(), ""
		b.shared.fresh.Store(true)
		if b.reloads.Load() > 1 {
			g.log.Info("PostgreSQL change feed back and registry reloaded: verifies are served again")
		}
	case err != nil:
		why := "PostgreSQL change feed down: " + err.Error()
		b.shared.reason.Store(&why)
		b.shared.fresh.Store(false)
		if b.health.ok || b.health.since.IsZero() {
			b.health.ok, b.health.since = false, g.now()
			g.log.Error("PostgreSQL change feed lost: every verify answers busy until it is back and the registry is reloaded", "err", err)
		}
		b.health.lastErr = err.Error()
	}
}

// auditCommitter appends the audit records of successful verifies to the
// store before they are answered. Records that arrive while a commit runs
// wait for the next one, so one commit serves every verify in flight.
type auditCommitter struct {
	st   store.Store
	out  *slog.Logger
	log  *slog.Logger
	ch   chan commitReq
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

type commitReq struct {
	rec  store.AuditRecord
	done chan error
}

var errCommitterClosed = errors.New("gateway is shutting down")

func newAuditCommitter(st store.Store, out interface{ Write([]byte) (int, error) }, log *slog.Logger) *auditCommitter {
	c := &auditCommitter{
		st:   st,
		out:  slog.New(slog.NewJSONHandler(out, nil)),
		log:  log,
		ch:   make(chan commitReq, commitBatch),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go c.loop()
	return c
}

// commit stores rec (and writes its JSON line) before it returns nil.
func (c *auditCommitter) commit(rec store.AuditRecord) error {
	req := commitReq{rec: rec, done: make(chan error, 1)}
	select {
	case c.ch <- req:
	case <-c.done:
		return errCommitterClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-c.done:
		// The loop answers everything it took before it ends.
		select {
		case err := <-req.done:
			return err
		default:
			return errCommitterClosed
		}
	}
}

func (c *auditCommitter) close() {
	c.once.Do(func() { close(c.quit) })
	<-c.done
}

func (c *auditCommitter) loop() {
	defer close(c.done)
	batch := make([]commitReq, 0, commitBatch)
	recs := make([]store.AuditRecord, 0, commitBatch)
	for {
		select {
		case r := <-c.ch:
			batch = append(batch[:0], r)
		case <-c.quit:
			// Answer what is queued, then stop.
			for {
				select {
				case r := <-c.ch:
					r.done <- errCommitterClosed
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < commitBatch {
			select {
			case r := <-c.ch:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		recs = recs[:0]
		for i := range batch {
			recs = append(recs, batch[i].rec)
		}
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		err := c.st.AppendAudit(ctx, recs...)
		cancel()
		if err == nil {
			for i := range recs {
				logRecord(c.out, &recs[i])
			}
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// ReasonAuditDown is the audit reason of a login refused (busy) because
// its audit record could not be committed.
const ReasonAuditDown = "audit store unavailable"

// commitVerify commits the audit record of a successful verify and then
// answers it; when the commit fails the login is answered busy instead,
// and the refusal is recorded in the background.
func (g *Gateway) commitVerify(rec *store.AuditRecord, code coap.Code, out, dst []byte, p protocol.Profile) (coap.Code, []byte) {
	err := g.bk.commit.commit(*rec)
	if err == nil {
		return code, out
	}
	g.log.Warn("successful verify answered busy: its audit record could not be committed", "user", rec.User, "device", rec.Device, "err", err)
	rec.Outcome, rec.Reason, rec.Detail = OutcomeRefused, ReasonAuditDown, err.Error()
	g.audit.submit(*rec)
	return coapbind.Code(protocol.ErrBusy), protocol.AppendError(dst[:0], p, protocol.ErrBusy)
}

package gateway

import (
	"context"
	"errors"
	"github.com/tagauth/tagauth/internal/adminapi"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagauth/tagauth/internal/redisstate"
	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Replicas: shared backends.
//
// A gateway whose store is shared (Config.Store.Shared(): PostgreSQL,
// opened by the command line from --store) is a replica: several gateways
// share the database, and with Config.SharedState (Redis, from --replay)
// also the replay cache and the lockout counters. The command line opens
// the backends (cmd/tagauth/backends.go); this package only sees their
// interfaces. Then:
//
//   - The registry in memory follows the store: follower.go reads the
//     store's change feed (store.Feed) for the changes every replica (or
//     an operator) commits and re-reads the entities they name, so a
//     revocation, grant or new identity reaches every replica within
//     milliseconds. The verify hot path still reads only memory.
//   - Fail closed: while the change feed is down the registry may be
//     stale, so Standing fails and every verify answers busy, until the
//     feed is back and the registry has been reloaded in full. A Redis
//     failure fails Insert, which answers busy too. Both recover by
//     themselves; BackendHealth and the log say what is happening.
//   - Master keys stay in each replica's key file: every replica needs the
//     same one (copy keys.json). The store records each version's
//     fingerprint and retirement (never the key; store.KeyVersion): a
//     replica whose key file disagrees refuses to start, and a version
//     retired on one replica is refused by all of them within a second.
//   - A successful verify is admitted only once its audit record is
//     committed (pipeline.go), in a group commit shared by the verifies in
//     flight, so that a replica killed at any moment has not let a login
//     through without its record. Refusals are recorded in the background,
//     as on a single gateway.

// SharedState is the state replicas share beside the store: a replay
// cache and lockout store (*redisstate.State, opened from --replay). The
// caller puts its replay cache in Config.Replay and its lockout store in
// Config.LockoutStore; the gateway watches its health and quarantine, and
// closes it.
type SharedState interface {
	// Quarantine reports whether logins must be refused until until,
	// because the cache is new or lost its data (internal/redisstate).
	Quarantine(ctx context.Context, now time.Time) (until time.Time, in bool, err error)
	// Health is the connection's state as the last operation saw it.
	Health() redisstate.Health
	// Addr names the backend in messages.
	Addr() string
	// Close closes the connections.
	Close() error
}

// DefaultReplicaWorkers is the CoAP worker count of a replica when
// Config.CoAPWorkers is zero: a successful verify waits for its audit
// commit (a few ms), so more workers keep the socket read meanwhile.
const DefaultReplicaWorkers = 64

// backends is what a replica holds beside the single-gateway state.
type backends struct {
	st     store.Store     // the shared store
	redis  SharedState     // the shared replay cache and lockout; nil: in memory
	shared *sharedRegistry // the registry verifies read
	feed   store.Feed      // the change feed opened at Open, handed to Run
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

// openBackends makes the gateway a replica when its store is shared (nil
// backends otherwise). It runs before the store is read, and may set
// cfg's defaults for replicas.
func openBackends(cfg *Config, log *slog.Logger) (*backends, error) {
	shared := cfg.Store != nil && cfg.Store.Shared()
	if cfg.SharedState != nil && !shared {
		// A shared replay cache with a private registry would let
		// replicas disagree on revocations: refuse the mix.
		return nil, errors.New("gateway: --replay redis://... needs --store postgres://... (replicas share both)")
	}
	if !shared {
		return nil, nil
	}
	b := &backends{st: cfg.Store, redis: cfg.SharedState}
	if cfg.Replay == nil {
		log.Warn("replica without a shared replay cache: a login replayed to another replica is not caught; give --replay redis://...")
	}
	if cfg.CoAPWorkers == 0 {
		cfg.CoAPWorkers = DefaultReplicaWorkers
	}
	return b, nil
}

// close closes Redis; the store is closed with the others by release,
// the audit commits with the audit writer. A nil b (a single gateway)
// has nothing to close.
func (b *backends) close() {
	if b != nil && b.redis != nil {
		b.redis.Close()
	}
}

// replayKind names the replay cache in messages.
func replayKind(b *backends, custom bool) string {
	switch {
	case b != nil && b.redis != nil:
		return "redis " + b.redis.Addr()
	case custom:
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
	if g.bk == nil {
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

// ReasonAuditDown is the audit reason of a login refused (busy) because
// its audit record could not be committed.
const ReasonAuditDown = "audit store unavailable"

// health is BackendHealth and the audit trail's health as the admin API's
// GET /v1/status reports them.
func (g *Gateway) health() adminapi.Status {
	bh := g.BackendHealth()
	part := func(h ServiceHealth) adminapi.PartHealth {
		return adminapi.PartHealth{Kind: h.Kind, OK: h.OK, Since: h.Since, Error: h.Error, QuarantineUntil: h.QuarantineUntil}
	}
	return adminapi.Status{Replica: bh.Replica, Store: part(bh.Store), Replay: part(bh.Replay), Audit: g.audit.health.status()}
}

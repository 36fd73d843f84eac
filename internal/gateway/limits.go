package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Lockout and rate limits on the verify path.
//
// # Lockout
//
// A verify refused because E_i does not verify is the only failure that
// counts against the claimed user: at the gateway it is what a wrong
// password (or a forged card) looks like. Unknown and revoked users,
// policy denials, unknown key versions (a card from before a retirement,
// not a guess), replays and stale timestamps do not count: a replayed or
// delayed m2 of a genuine login must not lock its user out, and an unknown
// id has nothing to lock. A bad I_j is the device's failure, not the
// user's; an m2 whose I_j an earlier verify carried is a copy, which
// does not count either (firstProof).
//
// A failure is charged to (user, source), where the source is the
// client address the relaying device verified by return routability and
// passed in the Source option (coap.OptionSource), and, unless that source
// is familiar to the user (a recent successful login came from it), to the
// user's unfamiliar budget too (internal/lockout has the policy). A
// request without the option comes from the unverified source, never
// familiar: then the user's budget is all there is, as before sources
// were counted. So an outsider who knows ids, relaying forged m1s through
// genuine devices from its own addresses, spends only its own counters and
// the unfamiliar budget, and cannot lock the user out of the sources the
// user logs in from.
//
// The lock is looked at before the verify (after section 7's first checks
// and the freshness of T1 and T2, whose answers must not depend on a
// lock), from the user id that m2
// carries in clear: a refused login builds no m3, inserts nothing into the
// replay cache and is answered like a wrong password, rejected (4.01).
// Only the audit log ("user locked (source)", "user locked (unfamiliar
// sources)"), the metrics and the console tell them apart. Failures of a
// locked login are not counted, so the attempts a lock refuses never
// extend it. A successful login makes its source familiar and clears that
// source's failures.
//
// # Rate limits
//
// Token buckets per source IP address and per claimed device id, held in
// memory by each replica, run before the verify: a limited request costs
// no HMAC and no store access, and is answered busy (5.03). The device id
// is read from m2 before anything checks it, so anyone can spend a
// device's bucket; the source bucket limits what one address can spend.
// One audit record is written per limited key and per auditEvery, with
// the number of requests refused since the previous one, so that a flood
// cannot flood the audit log too.

// RateLimit is a token bucket: Rate requests per second on average, Burst
// at once. A zero Rate disables the limit.
type RateLimit struct {
	Rate  float64
	Burst int
}

// Reasons the lockout and rate limits give in audit records and metrics,
// beside the protocol's.
const (
	ReasonLocked           = "user locked (source)"
	ReasonLockedUnfamiliar = "user locked (unfamiliar sources)"
	ReasonLimitedSource    = "rate limited (source)"
	ReasonLimitedDevice    = "rate limited (device)"
	ReasonLockoutDown      = "lockout store unavailable"
	KindLockout            = "lockout"
	OutcomeLocked          = "locked"
)

// DefaultMaxLimitKeys bounds each rate limiter's table.
const DefaultMaxLimitKeys = 1 << 16

// auditEvery spaces the audit records of one limited key.
const auditEvery = 10 * time.Second

// guard holds the lockout policy and the rate limiters of one gateway.
type guard struct {
	off    bool
	policy lockout.Policy
	store  lockout.Store
	mem    *lockout.Memory // store, when it is the in-memory one
	fam    lockout.Familiarity
	tokens *tokenGuard  // admin token backoff (adminguard.go)
	conns  *connLimiter // admin connection limits, once listening
	source *limiter[netip.Addr]
	device *limiter[deviceKey]
	// stripes serialise the verifies of one user (verifyLocked); users
	// share a stripe by hash.
	stripes [4096]sync.Mutex
	seed    maphash.Seed
}

// userStripe is the mutex of user's stripe.
func (gd *guard) userStripe(user []byte) *sync.Mutex {
	return &gd.stripes[maphash.Bytes(gd.seed, user)%uint64(len(gd.stripes))]
}

func newGuard(cfg *Config) *guard {
	gd := &guard{off: cfg.LockoutOff, policy: cfg.Lockout.WithDefaults(), store: cfg.LockoutStore, seed: maphash.MakeSeed()}
	gd.fam = gd.policy.Familiarity()
	if gd.store == nil {
		gd.mem = lockout.NewMemory(0)
		gd.store = gd.mem
	} else if m, ok := gd.store.(*lockout.Memory); ok {
		gd.mem = m
	}
	if cfg.SourceLimit.Rate > 0 {
		gd.source = newLimiter(cfg.SourceLimit, DefaultMaxLimitKeys, hashAddr)
	}
	if cfg.DeviceLimit.Rate > 0 {
		gd.device = newLimiter(cfg.DeviceLimit, DefaultMaxLimitKeys, func(s maphash.Seed, k deviceKey) uint64 {
			return maphash.Bytes(s, k[:1+k[0]])
		})
	}
	return gd
}

// maphashSeed names the seed type in the limiter's hash functions.
type maphashSeed = maphash.Seed

func hashAddr(s maphash.Seed, a netip.Addr) uint64 {
	b := a.As16()
	return maphash.Bytes(s, b[:])
}

// deviceKey is a device id as a comparable value: length byte, then the
// id, so that a lookup allocates nothing.
type deviceKey [1 + protocol.MaxIDLen]byte

func deviceKeyOf(id []byte) deviceKey {
	var k deviceKey
	n := copy(k[1:], id)
	k[0] = byte(n)
	return k
}

// rateLimit applies the rate limits to a verify request before anything
// else runs. When it refuses, it returns the busy answer and true.
func (g *Gateway) rateLimit(req *coap.Request, dst []byte) (coap.Code, []byte, bool) {
	gd := g.guard
	if gd.source == nil && gd.device == nil {
		return 0, nil, false
	}
	now := g.now()
	if gd.source != nil {
		if ok, n := gd.source.allow(req.From.Addr().Unmap(), now); !ok {
			return g.limited(req, dst, ReasonLimitedSource, nil, n, now)
		}
	}
	if gd.device != nil {
		// A message that does not parse goes on to Verify, which refuses
		// it as malformed.
		if m, err := protocol.ParseM2(req.Payload); err == nil {
			if ok, n := gd.device.allow(deviceKeyOf(m.DID), now); !ok {
				return g.limited(req, dst, ReasonLimitedDevice, m.DID, n, now)
			}
		}
	}
	return 0, nil, false
}

// limited answers a rate-limited request busy, counts it and, when n > 0,
// audits the n refusals of this key since its previous record.
func (g *Gateway) limited(req *coap.Request, dst []byte, reason string, device []byte, n int, now time.Time) (coap.Code, []byte, bool) {
	g.metrics.limitedOne(reason, now)
	if n > 0 {
		what := "this source address"
		if device != nil {
			what = "this device id"
		}
		g.audit.submit(store.AuditRecord{Time: now, Kind: KindVerify, Outcome: OutcomeRefused, Reason: reason,
			Device: SanitizeID(device), Source: req.From.String(),
			Detail: fmt.Sprintf("%d requests for %s answered busy in the last %s or less", n, what, auditEvery)})
	}
	p := protocol.Profile(0)
	if len(req.Payload) > 0 && protocol.Profile(req.Payload[0]).Valid() {
		p = protocol.Profile(req.Payload[0])
	}
	return coap.ServiceUnavailable, protocol.AppendError(dst, p, protocol.ErrBusy), true
}

// lockedError is the refusal of a login that a lock refuses. On the wire
// it is rejected, like a wrong password.
type lockedError struct {
	d   lockout.Decision
	src lockout.Source
}

func (e *lockedError) Error() string {
	what := "logins from source " + e.src.String()
	if e.d.Scope == lockout.ScopeUnfamiliar {
		what = "logins from sources it has not logged in from lately (this one: " + e.src.String() + ")"
	}
	return fmt.Sprintf("user locked for %s until %s; the login was not verified", what, e.d.Until.UTC().Format(time.RFC3339))
}

func (e *lockedError) Unwrap() error { return protocol.ErrRejected }

// reason is the audit reason of the refusal.
func (e *lockedError) reason() string {
	if e.d.Scope == lockout.ScopeUnfamiliar {
		return ReasonLockedUnfamiliar
	}
	return ReasonLocked
}

// errLockoutDown is answered (busy) when the lockout store cannot say
// whether a login is locked: the gateway fails closed.
var errLockoutDown = fmt.Errorf("%w: lockout store unavailable", protocol.ErrBusy)

// verifyLocked is the verify of m2 with the lockout around it. It returns
// the answer, the verification, a reason that overrides the error's in
// the audit record (or "") and the error to report.
func (g *Gateway) verifyLocked(ctx context.Context, req *coap.Request, dst []byte) ([]byte, protocol.Verification, string, error) {
	gd := g.guard
	if gd.off {
		out, v, err := g.proto.Verify(ctx, dst, req.Payload)
		return out, v, "", err
	}
	src := lockout.SourceOf(req.Source)
	now := g.now()
	var d lockout.Decision
	// A message that does not parse goes on to Verify, which refuses it
	// as malformed. An id with a NUL cannot be registered: Verify refuses
	// it as unknown, and it could not be told apart in the store's keys.
	// So do a message of the other profile and a stale one: section 7's
	// first checks and freshness come before any registry or policy
	// check, and their answers must not tell anyone who is locked.
	m, perr := protocol.ParseM2(req.Payload)
	if perr == nil && bytes.IndexByte(m.ID, 0) < 0 && m.Profile == g.profile && g.inWindow(&m, now) {
		// From the lock decision to the count of the failure, one
		// verify of a user at a time (per stripe of users): else every
		// guess in flight when the limit is reached would pass the
		// decision and count past the limit. Not for replicas: there
		// this span holds network round trips, and a flood of one
		// user's logins would keep every worker waiting on its stripe;
		// the bound grows by the user's verifies in flight instead
		// (docs/THREAT-MODEL.md).
		if g.bk == nil {
			mu := gd.userStripe(m.ID)
			mu.Lock()
			defer mu.Unlock()
		}
		v := protocol.Verification{Profile: m.Profile, User: m.ID, Device: m.DID, KVUser: m.KV, KVDevice: m.KVDev}
		var err error
		d, err = gd.decide(ctx, m.ID, &src, now)
		if err != nil {
			// No log line per request: the shared store logs when it
			// becomes unreachable and again when it is back.
			g.metrics.storeError("lockout")
			return protocol.AppendError(dst, m.Profile, protocol.ErrBusy), v, ReasonLockoutDown, fmt.Errorf("%w (%v)", errLockoutDown, err)
		}
		if d.Locked() {
			le := &lockedError{d: d, src: src}
			return protocol.AppendError(dst, m.Profile, protocol.ErrRejected), v, le.reason(), le
		}
	}
	out, v, err := g.proto.Verify(ctx, dst, req.Payload)
	switch {
	case err == nil:
		// Copies of this m2 must never count (firstProof); a cache
		// that cannot say only costs that protection, not the login.
		g.firstProof(ctx, &m)
		if serr := gd.succeed(ctx, v.User, &src, now); serr != nil {
			// Availability only: the login stands, the source is not
			// remembered this time.
			g.metrics.storeError("lockout")
			g.log.Error("lockout store failed to remember a source", "err", serr)
		}
	case errors.Is(err, protocol.ReasonBadE):
		if g.firstProof(ctx, &m) {
			g.countFailure(ctx, v, src, d, now)
		}
	}
	return out, v, "", err
}

// inWindow reports whether m2's T1 and T2 are within dT of now, the
// freshness that Verify checks first (spec section 6).
func (g *Gateway) inWindow(m *protocol.M2, now time.Time) bool {
	ms, w := uint64(max(now.UnixMilli(), 0)), uint64(g.cfg.Window.Milliseconds())
	in := func(t uint64) bool {
		if t >= ms {
			return t-ms <= w
		}
		return ms-t <= w
	}
	return in(m.T1) && in(m.T2)
}

// proofDomain is the first byte of the replay-cache keys of firstProof,
// beside the protocol's own domains (0x01 to 0x03).
const proofDomain = 0x80

// firstProof reports whether m2 is the first verify request to carry its
// I_j, and remembers it for dT past T2 (in the replay cache when replicas
// share one, else in a cache of its own). I_j covers E_i, DID_j and T2
// only (spec section 6), not ID_i, n_i, T1 or the Source option: whoever
// sees one m2 on its way from a device could send copies with any user's
// ID_i, a new n_i or T1 and any Source, each of them a failed proof with a
// valid I_j, and lock any user's familiar sources. So only the first m2
// with a given I_j may count as a failure, and a successful verify marks
// its I_j too, so that copies of a genuine login never count. A cache that
// cannot answer lets the failure count: guesses stay bounded. Under the
// classic profile I_j does not cover T2 either, so a copy counts again
// once the mark expires.
func (g *Gateway) firstProof(ctx context.Context, m *protocol.M2) bool {
	var k protocol.ReplayKey
	k[0] = proofDomain
	k[1] = byte(copy(k[2:2+protocol.MaxIDLen], m.DID))
	copy(k[2+protocol.MaxIDLen:], m.I[:])
	now := uint64(g.now().UnixMilli())
	fresh, err := g.proofs.Insert(ctx, k, max(m.T2, now)+uint64(g.cfg.Window.Milliseconds()), now)
	return fresh || err != nil
}

// countFailure charges a wrong password to the user's counters and locks
// what reached its limit.
func (g *Gateway) countFailure(ctx context.Context, v protocol.Verification, src lockout.Source, d lockout.Decision, now time.Time) {
	gd := g.guard
	user := SanitizeID(v.User)
	f, err := lockout.RecordFailure(ctx, gd.store, gd.policy, string(v.User), src, d, now)
	if err != nil {
		g.metrics.storeError("lockout")
		g.log.Error("lockout store failed to count a failure", "user", user, "source", src.String(), "err", err)
	}
	lock := func(scope lockout.Scope, o lockout.Outcome, limit int) {
		if !o.Locked {
			return
		}
		g.metrics.lockouts.Inc()
		what := "source " + src.String()
		if scope == lockout.ScopeUnfamiliar {
			what = "unfamiliar sources (the last: " + src.String() + ")"
		}
		g.log.Warn("user locked out", "user", user, "scope", scope.String(), "source", src.String(), "failures", o.Failures,
			"until", o.Until.UTC().Format(time.RFC3339))
		g.audit.submit(store.AuditRecord{Time: now, Kind: KindLockout, Outcome: OutcomeLocked, Reason: "too many failed logins (" + scope.String() + ")",
			User: user, Device: SanitizeID(v.Device),
			Detail: fmt.Sprintf("%d failures within %s (limit %d) from %s; locked until %s", o.Failures, gd.policy.Window, limit, what, o.Until.UTC().Format(time.RFC3339))})
	}
	lock(lockout.ScopeSource, f.Source, gd.policy.MaxFailures)
	lock(lockout.ScopeUnfamiliar, f.Unfamiliar, gd.policy.UnfamiliarFailures)
}

// decide asks the store whether a login of user from src is locked. For
// the in-memory store it allocates nothing.
func (gd *guard) decide(ctx context.Context, user []byte, src *lockout.Source, now time.Time) (lockout.Decision, error) {
	var buf [2 + lockout.MaxSourceName]byte
	key := src.AppendKey(buf[:0])
	if gd.mem != nil {
		return lockout.Decide(gd.mem.StatusBytes(user, key, now), *src), nil
	}
	st, err := gd.store.Status(ctx, string(user), string(key), now)
	return lockout.Decide(st, *src), err
}

// succeed records a successful login. For the in-memory store and a
// source already familiar it allocates nothing.
func (gd *guard) succeed(ctx context.Context, user []byte, src *lockout.Source, now time.Time) error {
	var buf [2 + lockout.MaxSourceName]byte
	key := src.AppendKey(buf[:0])
	if gd.mem != nil {
		gd.mem.SucceedBytes(user, key, now, gd.fam)
		return nil
	}
	return gd.store.Succeed(ctx, string(user), string(key), now, gd.fam)
}

// unlock removes every lock and failure of a user.
func (gd *guard) unlock(ctx context.Context, user string, now time.Time) (wasLocked bool, err error) {
	return gd.store.UnlockUser(ctx, user, now)
}

// limiter is a table of token buckets, one per key, split in shards so
// that CoAP workers rarely wait for each other. Each shard holds at most
// max/len(shards) keys (see allow for what happens when one is full).
type limiter[K comparable] struct {
	rate   float64
	burst  float64
	seed   maphash.Seed
	hash   func(maphash.Seed, K) uint64
	shards [16]limShard[K]
	max    int // per shard
}

type limShard[K comparable] struct {
	mu    sync.Mutex
	m     map[K]bucket
	swept time.Time
}

type bucket struct {
	tokens    float64
	last      time.Time
	refused   int       // refusals not yet audited
	lastAudit time.Time // of this key's last audit record
}

func newLimiter[K comparable](rl RateLimit, maxKeys int, hash func(maphash.Seed, K) uint64) *limiter[K] {
	l := &limiter[K]{rate: rl.Rate, burst: float64(max(rl.Burst, 1)), seed: maphash.MakeSeed(), hash: hash}
	l.max = max(maxKeys/len(l.shards), 1)
	for i := range l.shards {
		l.shards[i].m = make(map[K]bucket)
	}
	return l
}

// allow takes a token from k's bucket. When there is none it returns
// false and, at most once per auditEvery for k, the number of refusals to
// audit (0 otherwise).
func (l *limiter[K]) allow(k K, now time.Time) (bool, int) {
	s := &l.shards[l.hash(l.seed, k)%uint64(len(l.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[k]
	if !ok {
		if len(s.m) >= l.max {
			l.makeRoom(s, now)
		}
		b = bucket{tokens: l.burst, last: now}
	}
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		s.m[k] = b
		return true, 0
	}
	b.refused++
	n := 0
	if now.Sub(b.lastAudit) >= auditEvery {
		n, b.refused, b.lastAudit = b.refused, 0, now
	}
	s.m[k] = b
	return false, n
}

// makeRoom drops buckets that have refilled (forgetting them changes
// nothing), at most once a second; if the shard is still full it drops one
// arbitrary bucket, which gives that key a fresh burst: under a flood from
// more addresses than the table holds, availability wins over exactness.
func (l *limiter[K]) makeRoom(s *limShard[K], now time.Time) {
	if now.Sub(s.swept) >= time.Second {
		s.swept = now
		for k, b := range s.m {
			if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst && b.refused == 0 {
				delete(s.m, k)
			}
		}
	}
	if len(s.m) >= l.max {
		for k := range s.m {
			delete(s.m, k)
			break
		}
	}
}

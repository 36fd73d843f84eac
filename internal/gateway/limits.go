package gateway

import (
	"context"
	"fmt"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/tagauth/tagauth/internal/lockout"
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
		gd.store = lockout.NewMemory(0)
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

// decide asks the store whether a login of user from src is locked. For
// the in-memory store it allocates nothing.
func (gd *guard) decide(ctx context.Context, user []byte, src lockout.Source, now time.Time) (lockout.Decision, error) {
	st, err := gd.store.Status(ctx, user, src, now)
	return lockout.Decide(st, src), err
}

// succeed records a successful login. For the in-memory store and a
// source already familiar it allocates nothing.
func (gd *guard) succeed(ctx context.Context, user []byte, src lockout.Source, now time.Time) error {
	return gd.store.Succeed(ctx, user, src, now, gd.fam)
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

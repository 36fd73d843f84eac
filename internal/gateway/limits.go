package gateway

import (
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
// user's.
//
// The lock is looked at after the full verify, so that a locked user's
// refusal costs what a wrong password's does, and is answered like one:
// rejected, 4.01. Only the audit log ("user locked"), the metrics and the
// console tell them apart. Failures of a locked user are not counted, so
// the attempts a lock refuses never extend it.
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
	ReasonLocked        = "user locked"
	ReasonLimitedSource = "rate limited (source)"
	ReasonLimitedDevice = "rate limited (device)"
	ReasonLockoutDown   = "lockout store unavailable"
	KindLockout         = "lockout"
	OutcomeLocked       = "locked"
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
	source *limiter[netip.Addr]
	device *limiter[deviceKey]
}

func newGuard(cfg *Config) *guard {
	gd := &guard{off: cfg.LockoutOff, policy: cfg.Lockout.WithDefaults(), store: cfg.LockoutStore}
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

// lockedError is the refusal of a locked user's verify. On the wire it is
// rejected, like a wrong password.
type lockedError struct {
	until time.Time
	inner error // what the verify itself said (nil: it verified)
}

func (e *lockedError) Error() string {
	v := "verified"
	if e.inner != nil {
		v = "failed: " + reasonOf(e.inner)
	}
	return fmt.Sprintf("locked until %s (the login itself %s)", e.until.UTC().Format(time.RFC3339), v)
}

func (e *lockedError) Unwrap() error { return protocol.ErrRejected }

// errLockoutDown is answered (busy) when the lockout store cannot say
// whether a user is locked: the gateway fails closed.
var errLockoutDown = fmt.Errorf("%w: lockout store unavailable", protocol.ErrBusy)

// lockout applies the lockout policy to a verify's outcome. It returns the
// answer to send, a reason that overrides the error's in the audit record
// (or ""), and the error to report.
func (g *Gateway) lockout(ctx context.Context, dst, out []byte, v protocol.Verification, err error, now time.Time) ([]byte, string, error) {
	gd := g.guard
	if gd.off || (err != nil && !errors.Is(err, protocol.ErrBadE)) {
		return out, "", err
	}
	until, locked, lerr := gd.lockedUntil(ctx, v.User, now)
	if lerr != nil {
		g.metrics.storeError("lockout")
		g.log.Error("lockout store failed; answering busy", "err", lerr)
		clear(out[len(dst):])
		return protocol.AppendError(dst, v.Profile, protocol.ErrBusy), ReasonLockoutDown, fmt.Errorf("%w (%v)", errLockoutDown, lerr)
	}
	if locked {
		clear(out[len(dst):]) // an m3 must not stay in a buffer that is reused
		return protocol.AppendError(dst, v.Profile, protocol.ErrRejected), ReasonLocked, &lockedError{until: until, inner: err}
	}
	if err == nil {
		return out, "", nil
	}
	user := SanitizeID(v.User)
	o, rerr := lockout.Record(ctx, gd.store, gd.policy, user, now)
	if rerr != nil {
		g.metrics.storeError("lockout")
		g.log.Error("lockout store failed to count a failure", "user", user, "err", rerr)
		return out, "", err
	}
	if o.Locked {
		g.metrics.lockouts.Inc()
		g.log.Warn("user locked out", "user", user, "failures", o.Failures, "until", o.Until.UTC().Format(time.RFC3339))
		g.audit.submit(store.AuditRecord{Time: now, Kind: KindLockout, Outcome: OutcomeLocked, Reason: "too many failed logins",
			User: user, Device: SanitizeID(v.Device),
			Detail: fmt.Sprintf("%d failures within %s; locked until %s", o.Failures, gd.policy.Window, o.Until.UTC().Format(time.RFC3339))})
	}
	return out, "", err
}

// lockedUntil asks the store whether user is locked. For the in-memory
// store of a printable id (every registered id is) it allocates nothing.
func (gd *guard) lockedUntil(ctx context.Context, user []byte, now time.Time) (time.Time, bool, error) {
	if gd.mem != nil && printable(user) {
		return gd.mem.LockedUntilBytes(user, now)
	}
	return gd.store.LockedUntil(ctx, SanitizeID(user), now)
}

// unlock removes a user's lock and failures.
func (gd *guard) unlock(ctx context.Context, user string, now time.Time) (wasLocked bool, err error) {
	_, wasLocked, err = gd.store.LockedUntil(ctx, user, now)
	if err != nil {
		return false, err
	}
	return wasLocked, gd.store.Unlock(ctx, user)
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

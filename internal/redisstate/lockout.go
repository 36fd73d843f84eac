package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tagauth/tagauth/internal/lockout"
)

// Lockout is a lockout.Store in Redis, shared by replicas. Get it from
// State.Lockout.
//
// Layout: the failures of a key are a sorted set PREFIX "lock:fail:" KEY
// (score: time in µs, member: a random tag, so that two failures in one
// microsecond both count), expiring one window after its last failure; the
// locks of every key are one sorted set PREFIX "lock:held" (member: key,
// score: lock end in µs). A user's familiar sources are a sorted set
// PREFIX "lock:known:" USER (member: source key, score: end in µs),
// expiring with its last source. An operator's unlock of a user writes
// PREFIX "lock:reset:" USER (the unlock time in µs), before which Fail no
// longer counts the user's failures; it lives as long as resetKeep. Times
// in µs since 1970 are exact in the float64 scores until the year 2255.
type Lockout struct {
	s     *State
	locks string
	fails string
}

var _ lockout.Store = (*Lockout)(nil)

// lockPrune is how long an expired lock stays in the set before Fail
// sweeps it: longer than any clock skew between replicas.
const lockPrune = time.Minute

func micros(t time.Time) int64 { return t.UnixMicro() }

// resetKeep is how long the mark of a user's unlock stays: longer than
// any sensible Policy.Window, after which the failures it discounts have
// left the window anyway.
const resetKeep = 7 * 24 * time.Hour

// failScript: KEYS[1] the key's failure set, KEYS[2] the lock set, KEYS[3]
// the user's unlock mark; ARGV: now µs, cut µs (failures at or before it
// fall out of the window), member, TTL ms, most failures kept, lock sweep
// horizon µs. Answers the count.
var failScript = redis.NewScript(`
local cut = ARGV[2]
local reset = redis.call('GET', KEYS[3])
if reset and tonumber(reset) > tonumber(cut) then
	cut = reset
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cut)
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[5])
if n > max then
	redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1)
	n = max
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
return n
`)

func (l *Lockout) failKey(key string) string   { return l.fails + key }
func (l *Lockout) knownKey(user string) string { return l.s.prefix + "lock:known:" + user }
func (l *Lockout) resetKey(user string) string { return l.s.prefix + "lock:reset:" + user }

// Fail implements lockout.Store. Counts saturate at lockout.MaxTracked, as
// in the memory store.
func (l *Lockout) Fail(ctx context.Context, key string, now time.Time, window time.Duration) (int, error) {
	var tag [8]byte
	rand.Read(tag[:])
	ttl := window.Milliseconds() + l.s.skew.Milliseconds() + 1
	n, err := failScript.Run(ctx, l.s.rdb, []string{l.failKey(key), l.locks, l.resetKey(lockout.UserOf(key))},
		micros(now), micros(now.Add(-window)), hex.EncodeToString(tag[:]), ttl, lockout.MaxTracked,
		micros(now.Add(-lockPrune))).Int()
	if err := l.s.note(err); err != nil {
		return 0, keyError("lockout", err)
	}
	return n, nil
}

// Lock implements lockout.Store.
func (l *Lockout) Lock(ctx context.Context, key string, until time.Time) error {
	err := l.s.rdb.ZAdd(ctx, l.locks, redis.Z{Score: float64(micros(until)), Member: key}).Err()
	if err := l.s.note(err); err != nil {
		return keyError("lockout", err)
	}
	return nil
}

// LockedUntil implements lockout.Store.
func (l *Lockout) LockedUntil(ctx context.Context, key string, now time.Time) (time.Time, bool, error) {
	score, err := l.s.rdb.ZScore(ctx, l.locks, key).Result()
	if err == redis.Nil {
		l.s.note(nil)
		return time.Time{}, false, nil
	}
	if err := l.s.note(err); err != nil {
		return time.Time{}, false, keyError("lockout", err)
	}
	until := time.UnixMicro(int64(score))
	if !now.Before(until) {
		return time.Time{}, false, nil
	}
	return until, true, nil
}

// Unlock implements lockout.Store: the lock and the failures go in one
// MULTI.
func (l *Lockout) Unlock(ctx context.Context, key string) error {
	_, err := l.s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, l.locks, key)
		p.Del(ctx, l.failKey(key))
		return nil
	})
	if err := l.s.note(err); err != nil {
		return keyError("lockout", err)
	}
	return nil
}

// Locked implements lockout.Store. The list is sorted by key.
func (l *Lockout) Locked(ctx context.Context, now time.Time) ([]lockout.Lock, error) {
	zs, err := l.s.rdb.ZRangeByScoreWithScores(ctx, l.locks, &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(micros(now), 10), Max: "+inf"}).Result()
	if err := l.s.note(err); err != nil {
		return nil, keyError("lockout", err)
	}
	out := make([]lockout.Lock, 0, len(zs))
	for _, z := range zs {
		k, _ := z.Member.(string)
		out = append(out, lockout.Lock{Key: k, Until: time.UnixMicro(int64(z.Score))})
	}
	slices.SortFunc(out, func(a, b lockout.Lock) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// statusScript: KEYS[1] the lock set, KEYS[2] the user's familiar set;
// ARGV: the (user, source) key, the unfamiliar key, the source key.
// Answers the three scores, false where there is none.
var statusScript = redis.NewScript(`
return {redis.call('ZSCORE', KEYS[1], ARGV[1]), redis.call('ZSCORE', KEYS[1], ARGV[2]), redis.call('ZSCORE', KEYS[2], ARGV[3])}
`)

// Status implements lockout.Store in one round trip.
func (l *Lockout) Status(ctx context.Context, userB []byte, src lockout.Source, now time.Time) (lockout.Status, error) {
	user, source := string(userB), src.Key()
	v, err := statusScript.Run(ctx, l.s.rdb, []string{l.locks, l.knownKey(user)},
		lockout.SourceKey(user, source), lockout.UnfamiliarKey(user), source).Slice()
	if err := l.s.note(err); err != nil {
		return lockout.Status{}, keyError("lockout", err)
	}
	var st lockout.Status
	after := func(i int) (time.Time, bool) {
		if i >= len(v) {
			return time.Time{}, false
		}
		s, ok := v[i].(string)
		if !ok {
			return time.Time{}, false
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return time.Time{}, false
		}
		t := time.UnixMicro(int64(f))
		return t, now.Before(t)
	}
	if t, ok := after(0); ok {
		st.SourceUntil = t
	}
	if t, ok := after(1); ok {
		st.UnfamiliarUntil = t
	}
	_, st.Familiar = after(2)
	return st, nil
}

// succeedScript: KEYS[1] the (user, source) failure set, KEYS[2] the
// user's familiar set; ARGV: source key, until µs, now µs, most kept, TTL
// ms, 1 to remember the source (0: unverified).
var succeedScript = redis.NewScript(`
redis.call('DEL', KEYS[1])
if ARGV[6] == '1' then
	redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
	redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
	local n = redis.call('ZCARD', KEYS[2])
	local max = tonumber(ARGV[4])
	if n > max then
		redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - max - 1)
	end
	redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return 0
`)

// Succeed implements lockout.Store.
func (l *Lockout) Succeed(ctx context.Context, userB []byte, src lockout.Source, now time.Time, f lockout.Familiarity) error {
	user, source := string(userB), src.Key()
	remember := "1"
	if !src.Verified() || f.Max <= 0 {
		remember = "0"
	}
	until := now.Add(f.For)
	err := succeedScript.Run(ctx, l.s.rdb, []string{l.failKey(lockout.SourceKey(user, source)), l.knownKey(user)},
		source, micros(until), micros(now), f.Max, f.For.Milliseconds()+l.s.skew.Milliseconds()+1, remember).Err()
	if err := l.s.note(err); err != nil {
		return keyError("lockout", err)
	}
	return nil
}

// unlockUserScript: KEYS[1] the lock set, KEYS[2] the user's unlock mark;
// ARGV: user, now µs, mark TTL ms. Removes the locks of the user's keys
// (the user itself, or the user and a NUL) and marks the failures before
// now as discounted. Answers 1 when a lock was in force.
var unlockUserScript = redis.NewScript(`
local user, now = ARGV[1], tonumber(ARGV[2])
local pre = user .. '\0'
local was = 0
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
	local m = all[i]
	if m == user or string.sub(m, 1, #pre) == pre then
		if tonumber(all[i + 1]) > now then
			was = 1
		end
		redis.call('ZREM', KEYS[1], m)
	end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return was
`)

// UnlockUser implements lockout.Store: one script, so that no failure
// counted meanwhile escapes it. It reads every lock in force (a short list
// outside attacks, and an operator's occasional call during one).
func (l *Lockout) UnlockUser(ctx context.Context, user string, now time.Time) (bool, error) {
	was, err := unlockUserScript.Run(ctx, l.s.rdb, []string{l.locks, l.resetKey(user)},
		user, micros(now), resetKeep.Milliseconds()).Int()
	if err := l.s.note(err); err != nil {
		return false, keyError("lockout", err)
	}
	return was == 1, nil
}

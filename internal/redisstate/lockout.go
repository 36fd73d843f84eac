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
// score: lock end in µs). Times in µs since 1970 are exact in the float64
// scores until the year 2255.
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

// failScript: KEYS[1] the key's failure set, KEYS[2] the lock set; ARGV:
// now µs, cut µs (failures at or before it fall out of the window), member,
// TTL ms, most failures kept, lock sweep horizon µs. Answers the count.
var failScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
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

func (l *Lockout) failKey(key string) string { return l.fails + key }

// Fail implements lockout.Store. Counts saturate at lockout.MaxTracked, as
// in the memory store.
func (l *Lockout) Fail(ctx context.Context, key string, now time.Time, window time.Duration) (int, error) {
	var tag [8]byte
	rand.Read(tag[:])
	ttl := window.Milliseconds() + l.s.skew.Milliseconds() + 1
	n, err := failScript.Run(ctx, l.s.rdb, []string{l.failKey(key), l.locks},
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

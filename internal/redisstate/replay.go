package redisstate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tagauth/tagauth/protocol"
)

// ReplayCache is a protocol.ReplayCache in Redis, shared by replicas. Get
// it from State.Replay.
type ReplayCache struct {
	s     *State
	epoch string
}

var _ protocol.ReplayCache = (*ReplayCache)(nil)

// ErrQuarantine: the cache is new or has forgotten entries (Redis
// restarted without persistence, or was flushed); logins are refused until
// every forgotten entry would have expired. It wraps protocol.ReasonCacheFull,
// so the gateway answers busy.
var ErrQuarantine = errors.New("replay cache in Redis is new or lost its data")

// insertScript: KEYS[1] the login's key, KEYS[2] the epoch key; ARGV[1]
// the TTL in ms, ARGV[2] the caller's now in ms, ARGV[3] the quarantine to
// start (ms) if the epoch is missing. It answers {status, quarantine end}
// with status 1 fresh, 0 seen, -1 epoch missing (quarantine started), -2
// in quarantine.
var insertScript = redis.NewScript(`
local q = redis.call('GET', KEYS[2])
if not q then
	local untilMs = tonumber(ARGV[2]) + tonumber(ARGV[3])
	redis.call('SET', KEYS[2], tostring(untilMs))
	return {-1, tostring(untilMs)}
end
if tonumber(q) > tonumber(ARGV[2]) then
	return {-2, q}
end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
	return {1, q}
end
return {0, q}
`)

// redisKey is the Redis key of a replay key: the prefix, "r:", then the
// key's bytes without the identity's zero padding (domain, id8(ID_i),
// discriminator).
func (c *ReplayCache) redisKey(k *protocol.ReplayKey) string {
	const idAt, discAt = 1, 1 + 1 + protocol.MaxIDLen
	n := int(k[idAt])
	b := make([]byte, 0, len(c.s.prefix)+2+2+n+protocol.Size)
	b = append(b, c.s.prefix...)
	b = append(b, "r:"...)
	if n > protocol.MaxIDLen {
		b = append(b, k[:]...)
	} else {
		b = append(b, k[:idAt+1+n]...)
		b = append(b, k[discAt:]...)
	}
	return string(b)
}

// quarantine is how long logins are refused after the cache forgot: the
// longest an entry lives (T1 may be dT ahead of now, and lives to T1 + dT)
// plus the clock skew.
func (c *ReplayCache) quarantine() time.Duration { return 2*c.s.window + c.s.skew }

// Insert implements protocol.ReplayCache: one atomic script on Redis.
// Errors (Redis unreachable, quarantine) wrap protocol.ReasonCacheFull.
func (c *ReplayCache) Insert(ctx context.Context, key protocol.ReplayKey, expires, now uint64) (bool, error) {
	ttl := uint64(c.s.skew/time.Millisecond) + 1
	if expires > now {
		ttl += expires - now
	}
	res, err := insertScript.Run(ctx, c.s.rdb, []string{c.redisKey(&key), c.epoch},
		ttl, now, uint64(c.quarantine()/time.Millisecond)).Slice()
	if err != nil {
		c.s.note(err)
		return false, fmt.Errorf("%w: %w", protocol.ReasonCacheFull, keyError("replay cache", err))
	}
	c.s.note(nil)
	status, until, err := parseReply(res)
	if err != nil {
		return false, fmt.Errorf("%w: replay cache: %w", protocol.ReasonCacheFull, err)
	}
	switch status {
	case 1:
		return true, nil
	case 0:
		return false, nil
	case -1:
		c.s.log.Warn("replay cache in Redis is new or lost its data: logins answer busy until every login it may have seen has expired",
			"redis", c.s.addr, "prefix", c.s.prefix, "until", until.Format(time.RFC3339Nano))
	}
	return false, fmt.Errorf("%w: %w: refusing logins until %s", protocol.ReasonCacheFull, ErrQuarantine, until.UTC().Format(time.RFC3339))
}

func parseReply(res []any) (int64, time.Time, error) {
	if len(res) != 2 {
		return 0, time.Time{}, fmt.Errorf("unexpected script reply %v", res)
	}
	status, ok := res[0].(int64)
	q, ok2 := res[1].(string)
	ms, err := strconv.ParseInt(q, 10, 64)
	if !ok || !ok2 || err != nil {
		return 0, time.Time{}, fmt.Errorf("unexpected script reply %v", res)
	}
	return status, time.UnixMilli(ms), nil
}

// probeScript is the epoch half of insertScript: KEYS[1] the epoch key,
// ARGV[1] now in ms, ARGV[2] the quarantine to start if the epoch is
// missing. Status 1: no quarantine.
var probeScript = redis.NewScript(`
local q = redis.call('GET', KEYS[1])
if not q then
	local untilMs = tonumber(ARGV[1]) + tonumber(ARGV[2])
	redis.call('SET', KEYS[1], tostring(untilMs))
	return {-1, tostring(untilMs)}
end
if tonumber(q) > tonumber(ARGV[1]) then
	return {-2, q}
end
return {1, q}
`)

// Quarantine reports the end of the quarantine in force at now, if any.
// Like Insert, it starts one when it finds the epoch missing (a gateway
// calls it at start, to say so in its log at once).
func (c *ReplayCache) Quarantine(ctx context.Context, now time.Time) (time.Time, bool, error) {
	res, err := probeScript.Run(ctx, c.s.rdb, []string{c.epoch}, now.UnixMilli(), int64(c.quarantine()/time.Millisecond)).Slice()
	if err != nil {
		c.s.note(err)
		return time.Time{}, false, keyError("replay cache", err)
	}
	c.s.note(nil)
	status, until, err := parseReply(res)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("replay cache: %w", err)
	}
	if status == -1 {
		c.s.log.Warn("replay cache in Redis is new or lost its data: logins answer busy until every login it may have seen has expired",
			"redis", c.s.addr, "prefix", c.s.prefix, "until", until.Format(time.RFC3339Nano))
	}
	return until, status < 0, nil
}

// Package redisstate keeps the state that gateway replicas must share from
// one login to the next in Redis: the replay cache (protocol.ReplayCache)
// and the failed-login counters and locks (lockout.Store).
//
// # Replay cache
//
// Insert is one Lua script, so it is atomic across every replica: it
// checks the cache's epoch key (below) and then runs SET key 1 NX PX ttl.
// Of any number of concurrent Inserts of one key, on any replicas, exactly
// one reports fresh. The TTL is what is left of the login's window by the
// caller's clock (expires - now, expires being T1 + dT) plus Options.Skew,
// the most that replicas' clocks may disagree: a replica whose clock is
// behind accepts T1 that much longer, so the entry must live that much
// longer. Only time differences travel to Redis: its own clock matters
// only for counting the TTL down.
//
// # Forgetting is detected
//
// A Redis that restarts without persistence, or is flushed, forgets the
// logins of the last 2 dT, which could then be replayed. The epoch key
// (PREFIX "epoch") guards against it: it has no TTL and holds the end of a
// quarantine (ms since the epoch). When the script finds it missing, the
// cache is new or has forgotten: it sets the quarantine to now + 2 dT +
// Skew, the longest any forgotten entry could have lived, and every Insert
// until then fails with ErrQuarantine (the gateway answers busy). A new
// Redis therefore refuses logins for 2 dT + Skew (21 s by default) once.
//
// # Failures
//
// Every error (Redis down, timeout, out of memory) is returned, never
// taken as "fresh": the gateway answers busy and the client retries,
// perhaps on another replica. Timeouts are short (Options), so a dead
// Redis costs a verify at most about a second. Health reports the state
// for logs and metrics, and the first failure and the recovery are logged.
//
// Redis must not evict keys (maxmemory-policy noeviction, the default):
// an evicted entry is a replay let through, so Open refuses an evicting
// policy. Use one Redis (or a primary with replicas and failover that
// keeps writes); Redis Cluster is not supported.
package redisstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options configures Open. The zero value uses the defaults.
type Options struct {
	// Prefix starts every key; default DefaultPrefix. The URL's "prefix"
	// parameter sets it too. Replicas of one deployment use the same.
	Prefix string
	// Window is dT; default 10 s (protocol.DefaultWindow).
	Window time.Duration
	// Skew is the most the replicas' clocks disagree; default 1 s (or
	// the URL's "skew" parameter).
	Skew time.Duration
	// Logger receives health changes; default discards.
	Logger *slog.Logger
}

// Defaults of Options and of the connection.
const (
	DefaultPrefix  = "tagauth:"
	DefaultWindow  = 10 * time.Second
	DefaultSkew    = time.Second
	dialTimeout    = time.Second
	ioTimeout      = 500 * time.Millisecond
	poolTimeout    = time.Second
	healthInterval = time.Second
)

// State is a connection to the Redis that replicas share, with the
// replay cache and lockout store built on it. Close it when done.
type State struct {
	rdb    *redis.Client
	prefix string
	window time.Duration
	skew   time.Duration
	log    *slog.Logger
	addr   string

	mu     sync.Mutex
	ok     bool
	since  time.Time
	lastEr string

	replay  *ReplayCache
	lockout *Lockout
}

// Open connects to the Redis at rawURL (redis://[user:pass@]host:port/db,
// rediss:// for TLS), checks that it answers and does not evict keys, and
// returns the shared state. The URL may carry "prefix=..." and
// "skew=DURATION" (Options.Prefix and Skew); other parameters are go-redis
// options (dial_timeout, read_timeout...).
func Open(ctx context.Context, rawURL string, opt Options) (*State, error) {
	u, prefix, skew, err := splitParams(rawURL)
	if err != nil {
		return nil, err
	}
	if opt.Skew <= 0 {
		opt.Skew = skew
	}
	if opt.Prefix != "" {
		prefix = opt.Prefix
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	ro, err := redis.ParseURL(u)
	if err != nil {
		return nil, fmt.Errorf("redis: %s: %w", redact(u), err)
	}
	// Short timeouts and no retries: a verify waits on this, and a
	// retried SET NX whose first reply was lost would read as a replay.
	if ro.DialTimeout == 0 {
		ro.DialTimeout = dialTimeout
	}
	if ro.ReadTimeout == 0 {
		ro.ReadTimeout = ioTimeout
	}
	if ro.WriteTimeout == 0 {
		ro.WriteTimeout = ioTimeout
	}
	if ro.PoolTimeout == 0 {
		ro.PoolTimeout = poolTimeout
	}
	if ro.MaxRetries == 0 {
		ro.MaxRetries = -1
	}
	ro.DialerRetries = 1
	ro.ContextTimeoutEnabled = true
	ro.DisableIdentity = true
	if opt.Window <= 0 {
		opt.Window = DefaultWindow
	}
	if opt.Skew <= 0 {
		opt.Skew = DefaultSkew
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	quietOnce.Do(func() { redis.SetLogger(quiet{}) })
	s := &State{rdb: redis.NewClient(ro), prefix: prefix, window: opt.Window, skew: opt.Skew,
		log: opt.Logger, addr: ro.Addr, ok: true, since: time.Now()}
	if err := s.check(ctx); err != nil {
		s.rdb.Close()
		return nil, fmt.Errorf("redis: %s: %w", redact(u), err)
	}
	s.replay = &ReplayCache{s: s, epoch: prefix + "epoch"}
	s.lockout = &Lockout{s: s, locks: prefix + "lock:held", fails: prefix + "lock:fail:"}
	return s, nil
}

// check pings and refuses an evicting maxmemory-policy. A server that
// refuses CONFIG GET (managed Redis) is trusted, with a warning.
func (s *State) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("no answer: %w (is redis-server running? start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379)", err)
	}
	cfg, err := s.rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		s.log.Warn("cannot read Redis maxmemory-policy; make sure it is noeviction", "err", err)
		return nil
	}
	if p := cfg["maxmemory-policy"]; p != "" && p != "noeviction" {
		return fmt.Errorf("maxmemory-policy is %q: Redis would evict replay-cache entries and let replays through; set it to noeviction (CONFIG SET maxmemory-policy noeviction)", p)
	}
	return nil
}

// splitParams takes this package's parameters (prefix, skew) out of a
// URL, which go-redis would refuse.
func splitParams(raw string) (string, string, time.Duration, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
		return "", "", 0, fmt.Errorf("redis: %s is not a redis:// URL", redact(raw))
	}
	q := u.Query()
	prefix := q.Get("prefix")
	var skew time.Duration
	if s := q.Get("skew"); s != "" {
		if skew, err = time.ParseDuration(s); err != nil || skew <= 0 {
			return "", "", 0, fmt.Errorf("redis: skew=%q: want a positive duration such as 1s", s)
		}
	}
	q.Del("prefix")
	q.Del("skew")
	u.RawQuery = q.Encode()
	return u.String(), prefix, skew, nil
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the Redis URL"
	}
	return u.Redacted()
}

// Replay is the shared replay cache.
func (s *State) Replay() *ReplayCache { return s.replay }

// Quarantine is Replay().Quarantine: whether logins must be refused
// until the returned time because the cache is new or forgot.
func (s *State) Quarantine(ctx context.Context, now time.Time) (time.Time, bool, error) {
	return s.replay.Quarantine(ctx, now)
}

// Lockout is the shared lockout store.
func (s *State) Lockout() *Lockout { return s.lockout }

// Prefix is the key prefix in use.
func (s *State) Prefix() string { return s.prefix }

// Addr is the Redis address, for messages.
func (s *State) Addr() string { return s.addr }

// Client is the underlying go-redis client (tests, tools).
func (s *State) Client() *redis.Client { return s.rdb }

// Close closes the connections.
func (s *State) Close() error { return s.rdb.Close() }

// Health is the state of the Redis connection as the last operation saw
// it.
type Health struct {
	OK        bool
	Since     time.Time // when OK last changed
	LastError string    // of the last failure, while not OK
}

// Health reports whether the last operation (or Ping) reached Redis.
func (s *State) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := Health{OK: s.ok, Since: s.since}
	if !s.ok {
		h.LastError = s.lastEr
	}
	return h
}

// Ping checks Redis and updates Health; the gateway calls it every second
// so that the state recovers without traffic.
func (s *State) Ping(ctx context.Context) error {
	return s.note(s.rdb.Ping(ctx).Err())
}

// note records the outcome of an operation: a failure that is only the
// caller's canceled context says nothing about Redis.
func (s *State) note(err error) error {
	if err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, ErrQuarantine)) {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil && !s.ok:
		s.ok, s.since, s.lastEr = true, time.Now(), ""
		s.log.Info("Redis reachable again: logins are checked for replay again", "redis", s.addr)
	case err != nil && s.ok:
		s.ok, s.since, s.lastEr = false, time.Now(), err.Error()
		s.log.Error("Redis unreachable: logins answer busy until it is back", "redis", s.addr, "err", err)
	case err != nil:
		s.lastEr = err.Error()
	}
	return err
}

// quiet drops go-redis's own log lines (a dial failure per command while
// Redis is down): State.note logs the first failure and the recovery once,
// in the gateway's structured log.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

var quietOnce sync.Once

// HealthInterval is how often a caller should Ping.
const HealthInterval = healthInterval

// keyError wraps a Redis failure with what was being done, without the
// key (which holds a user id).
func keyError(what string, err error) error {
	if strings.HasPrefix(err.Error(), "redis") {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: redis: %w", what, err)
}

package mqttbind

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Claim is what an answer cache says about a request's key.
type Claim int

// The states of a key.
const (
	// ClaimNew: the key was free and is now this caller's to handle.
	ClaimNew Claim = iota
	// ClaimDone: the key was handled; the answer comes with it (nil
	// when the first copy was dropped unanswered).
	ClaimDone
	// ClaimBusy: another copy is being handled and its answer did not
	// come in time: drop this one.
	ClaimBusy
	// ClaimMismatch: the key came before with another payload: drop.
	ClaimMismatch
)

// sumSize is the size of a payload's digest.
const sumSize = sha256.Size

// ErrCacheFull says the answer cache holds as many keys as it may: the
// request is dropped rather than handled without a way to answer its
// duplicates.
var ErrCacheFull = errors.New("answer cache full")

// AnswerCache keeps the answers of recent requests by (response topic,
// correlation data) (spec section 12). Gateway replicas share one (Redis);
// a single responder keeps it in memory.
type AnswerCache interface {
	// Claim looks key up and, when it is free, marks it as being handled
	// for keep. A copy that finds its key being handled may wait for the
	// answer until ctx is done.
	Claim(ctx context.Context, key []byte, sum [sumSize]byte, keep time.Duration) (Claim, []byte, error)
	// Store records the answer of a claimed key (nil: none was sent).
	Store(ctx context.Context, key []byte, sum [sumSize]byte, answer []byte, keep time.Duration) error
}

// cacheKey is the digest of (response topic, correlation data): fixed
// size whatever the requester sends.
func cacheKey(topic string, corr []byte) []byte {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(corr)
	return h.Sum(nil)
}

// MemoryCache is an AnswerCache in memory, for one responder. Duplicates
// that come while their first copy is handled wait for its answer.
type MemoryCache struct {
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*memEntry
	order   []memExpiry // by insertion; keep is the same for most keys
}

type memEntry struct {
	sum    [sumSize]byte
	answer []byte
	done   chan struct{}
	until  time.Time
}

type memExpiry struct {
	key   string
	until time.Time
}

// NewMemoryCache returns a MemoryCache of at most max keys (100000 when
// <= 0); now is the clock (time.Now when nil).
func NewMemoryCache(max int, now func() time.Time) *MemoryCache {
	if max <= 0 {
		max = 100000
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryCache{max: max, now: now, entries: make(map[string]*memEntry)}
}

// Len returns the number of keys kept.
func (c *MemoryCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *MemoryCache) sweep(now time.Time) {
	i := 0
	for ; i < len(c.order); i++ {
		x := c.order[i]
		e := c.entries[x.key]
		if e != nil && e.until.Equal(x.until) {
			if now.Before(x.until) {
				break
			}
			delete(c.entries, x.key)
		}
	}
	c.order = c.order[i:]
}

// Claim implements AnswerCache.
func (c *MemoryCache) Claim(ctx context.Context, key []byte, sum [sumSize]byte, keep time.Duration) (Claim, []byte, error) {
	now := c.now()
	c.mu.Lock()
	c.sweep(now)
	e := c.entries[string(key)]
	if e == nil {
		if len(c.entries) >= c.max {
			c.mu.Unlock()
			return 0, nil, ErrCacheFull
		}
		e = &memEntry{sum: sum, done: make(chan struct{}), until: now.Add(keep)}
		c.entries[string(key)] = e
		c.order = append(c.order, memExpiry{string(key), e.until})
		c.mu.Unlock()
		return ClaimNew, nil, nil
	}
	c.mu.Unlock()
	if e.sum != sum {
		return ClaimMismatch, nil, nil
	}
	select {
	case <-e.done:
		return ClaimDone, e.answer, nil
	case <-ctx.Done():
		return ClaimBusy, nil, nil
	}
}

// Store implements AnswerCache.
func (c *MemoryCache) Store(_ context.Context, key []byte, sum [sumSize]byte, answer []byte, _ time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[string(key)]
	if e == nil || e.sum != sum {
		return nil // expired meanwhile: nobody can ask again
	}
	select {
	case <-e.done:
	default:
		e.answer = answer
		close(e.done)
	}
	return nil
}

// RedisCache is an AnswerCache in Redis, shared by gateway replicas: a
// duplicate delivered to another replica finds the answer there. A key is
// claimed with SET NX; a duplicate that finds it being handled polls for
// the answer until its context is done, then is dropped.
type RedisCache struct {
	rdb    redis.UniversalClient
	prefix string
	poll   time.Duration
}

// NewRedisCache returns a RedisCache whose keys start with prefix (such
// as "tagauth:mqtt:answer:").
func NewRedisCache(rdb redis.UniversalClient, prefix string) *RedisCache {
	return &RedisCache{rdb: rdb, prefix: prefix, poll: 5 * time.Millisecond}
}

// Values: 'P' || sum while handled, 'A' || sum || answer once answered,
// 'N' || sum when the first copy was dropped unanswered.
func (c *RedisCache) rkey(key []byte) string { return c.prefix + fmt.Sprintf("%x", key) }

// Claim implements AnswerCache.
func (c *RedisCache) Claim(ctx context.Context, key []byte, sum [sumSize]byte, keep time.Duration) (Claim, []byte, error) {
	k := c.rkey(key)
	ok, err := c.rdb.SetNX(ctx, k, append([]byte{'P'}, sum[:]...), keep).Result()
	if err != nil {
		return 0, nil, fmt.Errorf("answer cache: %w", err)
	}
	if ok {
		return ClaimNew, nil, nil
	}
	t := time.NewTicker(c.poll)
	defer t.Stop()
	for {
		v, err := c.rdb.Get(ctx, k).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
			return ClaimBusy, nil, nil // expired between the two calls
		case err != nil:
			if ctx.Err() != nil {
				return ClaimBusy, nil, nil
			}
			return 0, nil, fmt.Errorf("answer cache: %w", err)
		case len(v) < 1+sumSize || !bytes.Equal(v[1:1+sumSize], sum[:]):
			return ClaimMismatch, nil, nil
		case v[0] == 'A':
			return ClaimDone, v[1+sumSize:], nil // not nil, even when empty
		case v[0] == 'N':
			return ClaimDone, nil, nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ClaimBusy, nil, nil
		}
	}
}

// Store implements AnswerCache.
func (c *RedisCache) Store(ctx context.Context, key []byte, sum [sumSize]byte, answer []byte, keep time.Duration) error {
	state := byte('A')
	if answer == nil {
		state = 'N'
	}
	v := make([]byte, 0, 1+sumSize+len(answer))
	v = append(append(append(v, state), sum[:]...), answer...)
	if err := c.rdb.Set(ctx, c.rkey(key), v, keep).Err(); err != nil {
		return fmt.Errorf("answer cache: %w", err)
	}
	return nil
}

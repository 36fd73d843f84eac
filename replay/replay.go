// Package replay is an in-memory replay cache for tagauth logins, for a
// single device or a single gateway. Gateway replicas that must share one
// cache use a shared store instead (see docs/OPERATIONS.md).
//
// Concurrency: a Cache is safe for use by many goroutines. Insert is atomic:
// of two concurrent Inserts of one key, exactly one reports fresh.
//
// Memory: a Cache holds at most its capacity. Every entry expires at the
// time given to Insert (T1 + dT, so at most 2 dT after it was inserted) and
// is dropped by later Inserts once expired; at a steady login rate R the
// cache holds at most R * 2 dT entries. When full of unexpired entries it
// refuses new keys with protocol.ErrCacheFull rather than forget early.
package replay

import (
	"context"
	"hash/maphash"
	"sync/atomic"

	"github.com/tagauth/tagauth/protocol"
)

const shards = 16

// Cache is an in-memory protocol.ReplayCache.
type Cache struct {
	seed   maphash.Seed
	shards [shards]shard
	fence  atomic.Uint64 // keys expiring at or before it are refused
}

// New returns a cache that holds at most capacity unexpired entries
// (rounded up to a multiple of 16).
func New(capacity int) *Cache {
	c := &Cache{seed: maphash.MakeSeed()}
	per := (capacity + shards - 1) / shards
	if per < 1 {
		per = 1
	}
	for i := range c.shards {
		c.shards[i].max = per
		c.shards[i].m = make(map[protocol.ReplayKey]uint64)
		c.shards[i].buckets = make(map[uint64][]protocol.ReplayKey)
	}
	return c
}

// Insert implements protocol.ReplayCache. It never blocks on I/O; ctx is
// unused.
func (c *Cache) Insert(_ context.Context, key protocol.ReplayKey, expires, now uint64) (bool, error) {
	if expires <= c.fence.Load() {
		return false, ErrFenced
	}
	s := c.shard(&key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	if exp, ok := s.m[key]; ok && exp >= now {
		return false, nil
	}
	if len(s.m) >= s.max {
		s.sweep(now)
	}
	if len(s.m) >= s.max {
		return false, protocol.ErrCacheFull
	}
	s.add(key, expires)
	return true, nil
}

func (c *Cache) shard(key *protocol.ReplayKey) *shard {
	return &c.shards[maphash.Bytes(c.seed, key[:])%shards]
}

// Len returns the number of entries held, expired ones not yet dropped
// included.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Package replay is an in-memory replay cache for tagauth logins, for a
// single device or a single gateway. Gateway replicas that must share one
// cache use a shared store instead (see docs/OPERATIONS.md).
//
// Concurrency: a Cache is safe for use by many goroutines. Insert is atomic:
// of two concurrent Inserts of one key, exactly one reports fresh.
//
// Keys: the cache keeps a 128-bit keyed digest of each key, not the key
// (98 bytes). The digest key is a secret drawn by New, so an outsider can
// neither predict digests nor aim collisions. Two keys with one digest
// would make the second login look like a replay and be refused: a
// collision can refuse a fresh login (with odds of about n/2^128 per
// insert among n entries), never accept a replayed one, since identical
// keys always have identical digests.
//
// Memory: a Cache holds at most its capacity. Every entry expires at the
// time given to Insert (T1 + dT, so at most 2 dT after it was inserted) and
// is dropped by later Inserts once expired; at a steady login rate R the
// cache holds at most R * 2 dT entries. An entry costs 45 to 80 bytes of
// heap, depending on where its shard's table is between two doublings
// (BenchmarkMemory: 64 bytes at 500 000 entries). When full of unexpired
// entries the cache refuses new keys with protocol.ErrCacheFull rather
// than forget early.
package replay

import (
	"context"
	"crypto/rand"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/tagauth/tagauth/protocol"
)

// shards is the number of locks; the top bits of a digest pick one.
const (
	shards     = 16
	shardShift = 64 - 4
)

// secretSize is the size of the digest key: two 32-byte halves, one per
// 64-bit half of the digest.
const secretSize = 64

// Cache is an in-memory protocol.ReplayCache.
type Cache struct {
	secret [secretSize]byte
	// h holds two xxhash states, each fed one half of the secret (one
	// whole 32-byte block, so the key's bytes start on a block boundary).
	// Insert copies them: xxhash.Digest is plain data.
	h      [2]xxhash.Digest
	used   atomic.Bool   // set by the first Insert or Restore
	fence  atomic.Uint64 // keys expiring at or before it are refused
	shards [shards]shard
}

// New returns a cache that holds at most capacity unexpired entries
// (rounded up to a multiple of 16).
func New(capacity int) *Cache {
	c := new(Cache)
	rand.Read(c.secret[:]) // never fails (crypto/rand)
	c.setSecret(&c.secret)
	per := (capacity + shards - 1) / shards
	if per < 1 {
		per = 1
	}
	for i := range c.shards {
		c.shards[i].init(per)
	}
	return c
}

func (c *Cache) setSecret(secret *[secretSize]byte) {
	c.secret = *secret
	for i := range c.h {
		c.h[i].Reset()
		c.h[i].Write(c.secret[i*32 : (i+1)*32])
	}
}

// digest returns the keyed 128-bit digest of key, as two halves.
func (c *Cache) digest(key *protocol.ReplayKey) (lo, hi uint64) {
	d := c.h[0]
	d.Write(key[:])
	lo = d.Sum64()
	d = c.h[1]
	d.Write(key[:])
	hi = d.Sum64()
	return lo, hi
}

// Insert implements protocol.ReplayCache. It never blocks on I/O; ctx is
// unused.
func (c *Cache) Insert(_ context.Context, key protocol.ReplayKey, expires, now uint64) (bool, error) {
	if expires <= c.fence.Load() {
		return false, ErrFenced
	}
	if !c.used.Load() {
		c.used.Store(true)
	}
	lo, hi := c.digest(&key)
	s := &c.shards[hi>>shardShift]
	s.mu.Lock()
	fresh, err := s.insert(lo, hi, expires, now)
	s.mu.Unlock()
	return fresh, err
}

// Len returns the number of entries held, expired ones not yet dropped
// included.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

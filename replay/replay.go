// Package replay is an in-memory replay cache for tagauth logins, for a
// single device or a single gateway. Gateway replicas that must share one
// cache use a shared store instead (see docs/OPERATIONS.md).
//
// Concurrency: a Cache is safe for use by many goroutines. Insert is atomic:
// of two concurrent Inserts of one key, exactly one reports fresh.
//
// Keys: the cache keeps a 128-bit keyed digest of each key, not the key
// (98 bytes): AES-128 in CBC-MAC mode under a secret drawn by New, a
// pseudo-random function on inputs of one fixed length, which every key
// has. An outsider who does not know the secret can neither predict
// digests nor make keys whose digests collide or crowd one part of a
// table (the gateway inserts keys before it authenticates the message).
// Two keys with one digest would make the second login look like a replay
// and be refused: a collision can refuse a fresh login (with odds of about
// n/2^128 per insert among n entries), never accept a replayed one, since
// identical keys always have identical digests.
//
// Memory: a Cache holds at most its capacity. Every entry expires at the
// time given to Insert (T1 + dT, so at most 2 dT after it was inserted) and
// is dropped by later Inserts once expired; at a steady login rate R the
// cache holds at most R * 2 dT entries. At a steady rate an entry costs
// 45 to 80 bytes of heap, depending on where its shard's table is between
// two doublings (BenchmarkMemory: 64 bytes at 500 000 entries); after the
// rate falls, a table shrinks only once it is under an eighth full, so an
// entry may cost up to about 190 bytes until then. Either way the tables
// never outgrow what the capacity needs (about 80 bytes per entry of
// capacity). When full of unexpired entries the cache refuses new keys
// with protocol.ReasonCacheFull rather than forget early.
package replay

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/tagauth/tagauth/protocol"
)

// shards is the number of locks; the top bits of a digest pick one.
const (
	shards     = 16
	shardShift = 64 - 4
)

// secretSize is the size of the digest key, an AES-128 key.
const secretSize = 16

// Cache is an in-memory protocol.ReplayCache.
type Cache struct {
	secret [secretSize]byte
	mac    cipher.Block  // AES under secret
	used   atomic.Bool   // set by the first Insert or Restore
	fence  atomic.Uint64 // keys expiring at or before it are refused
	shards [shards]shard
}

// New returns a cache that holds at most capacity unexpired entries
// (rounded up to a multiple of 16).
func New(capacity int) *Cache {
	c := new(Cache)
	var secret [secretSize]byte
	rand.Read(secret[:]) // never fails (crypto/rand)
	c.setSecret(&secret)
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
	b, err := aes.NewCipher(c.secret[:])
	if err != nil {
		panic("replay: " + err.Error()) // a 16-byte key is always valid
	}
	c.mac = b
}

// blocks is scratch for digest: a block passed to cipher.Block escapes,
// and a pooled one costs less than an allocation per Insert.
var blocks = sync.Pool{New: func() any { return new([aes.BlockSize]byte) }}

// digest returns the CBC-MAC of key under the cache's secret, the key
// zero-padded to whole blocks, as two halves.
func (c *Cache) digest(key *protocol.ReplayKey) (lo, hi uint64) {
	x := blocks.Get().(*[aes.BlockSize]byte)
	clear(x[:])
	for k := key[:]; len(k) > 0; {
		n := min(len(k), aes.BlockSize)
		for i := range n {
			x[i] ^= k[i]
		}
		c.mac.Encrypt(x[:], x[:])
		k = k[n:]
	}
	lo, hi = binary.LittleEndian.Uint64(x[:8]), binary.LittleEndian.Uint64(x[8:])
	blocks.Put(x)
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

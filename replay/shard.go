package replay

import (
	"math/bits"
	"sync"

	"github.com/tagauth/tagauth/protocol"
)

// granularity is the width, in ms, of one expiry bucket.
const granularity = 64

// minSlots is the smallest table a shard keeps, so that a quiet cache
// does not resize back and forth.
const minSlots = 64

// maxFree bounds the emptied buckets a shard keeps for reuse: at a steady
// rate one bucket empties as one fills, and after the clock jumps the rest
// are better given back.
const maxFree = 4

// prefetch is how many entries drop warms up at a time.
const prefetch = 16

// slot is one entry of a shard's table: the digest of a key and when the
// entry expires. expires 0 marks a free slot: Insert never stores it, as
// every expiry at or below the fence (0 at least) is refused.
type slot struct {
	lo, hi  uint64 // the key's digest; lo picks the home slot
	expires uint64
}

// shard is one lock's worth of the cache: an open-addressing table of
// digests (linear probing, at most 3/4 full, entries shifted back on
// delete so that no tombstones build up), and the entries grouped in
// buckets by expiry so that purging drops whole buckets once their last
// moment has passed instead of keeping a sorted structure. A bucket holds
// only the lo half of each digest: enough to find the entry again, since
// a lookup by lo deletes only an expired entry of that bucket, so a stale
// or ambiguous bucket entry can never drop a live one. An entry may
// outlive its expiry by less than one bucket; lookups compare the exact
// expiry, so that never lets a replay through.
type shard struct {
	mu      sync.Mutex
	max     int
	n       int    // occupied slots, expired ones not yet dropped included
	slots   []slot // len is a power of two
	buckets map[uint64]*bucket
	low     uint64 // no bucket below this index holds entries
	last    *bucket
	lastIdx uint64 // the index of last, the bucket most recently added to
	free    []*bucket
	// sweptAt is the time of the last sweep, valid while swept: the
	// current bucket then held no entry expired at that time, so a full
	// shard can refuse again at the same time without sweeping again.
	sweptAt uint64
	swept   bool
	sink    uint64   // keeps drop's warming loads from being optimised away
	_       [64]byte // keeps neighbouring shards' locks off one cache line
}

type bucket struct {
	lo []uint64
}

func (s *shard) init(capacity int) {
	s.max = capacity
	s.slots = make([]slot, minSlots)
	s.buckets = make(map[uint64]*bucket)
}

// insert is Insert for one shard; the caller holds mu.
func (s *shard) insert(lo, hi, expires, now uint64) (bool, error) {
	s.purge(now)
	i, found := s.find(lo, hi)
	if found {
		e := &s.slots[i]
		if e.expires >= now {
			return false, nil
		}
		// Expired but not dropped yet: a fresh login that takes the slot
		// over. Its old bucket entry will find it unexpired and leave it.
		e.expires = expires
		s.note(lo, expires)
		return true, nil
	}
	if s.n >= s.max {
		s.sweep(now)
		if s.n >= s.max {
			return false, protocol.ReasonCacheFull
		}
		i, _ = s.find(lo, hi) // the sweep may have shifted entries
	}
	s.put(i, lo, hi, expires)
	return true, nil
}

// put adds an entry at free slot i (from find), first growing the table
// if the entry would fill it past three quarters.
func (s *shard) put(i int, lo, hi, expires uint64) {
	if (s.n+1)*4 > len(s.slots)*3 {
		s.resize(len(s.slots) * 2)
		i, _ = s.find(lo, hi)
	}
	s.slots[i] = slot{lo: lo, hi: hi, expires: expires}
	s.n++
	s.note(lo, expires)
}

// restore adds an entry read from a snapshot, keeping the later expiry
// if the digest is already there. It reports false if the shard is full.
func (s *shard) restore(lo, hi, expires uint64) bool {
	i, found := s.find(lo, hi)
	if found {
		if e := &s.slots[i]; e.expires < expires {
			e.expires = expires
			s.note(lo, expires)
		}
		return true
	}
	if s.n >= s.max {
		return false
	}
	s.put(i, lo, hi, expires)
	return true
}

// find returns the slot holding the digest, or the free slot that ends
// its probe sequence. The table is never full, so the probe ends.
func (s *shard) find(lo, hi uint64) (int, bool) {
	mask := uint64(len(s.slots) - 1)
	for i := lo & mask; ; i = (i + 1) & mask {
		e := &s.slots[i]
		if e.expires == 0 {
			return int(i), false
		}
		if e.lo == lo && e.hi == hi {
			return int(i), true
		}
	}
}

// remove frees slot i, shifting later entries of its probe run back so
// that every entry stays reachable from its home slot.
func (s *shard) remove(i int) {
	mask := len(s.slots) - 1
	j := i
	for {
		j = (j + 1) & mask
		e := s.slots[j]
		if e.expires == 0 {
			break
		}
		// e may fill the hole at i only if i lies on its probe path, from
		// its home slot to j.
		home := int(e.lo) & mask
		if (j-home)&mask >= (j-i)&mask {
			s.slots[i] = e
			i = j
		}
	}
	s.slots[i] = slot{}
	s.n--
}

// dropExpired removes one entry of bucket b whose digest starts with lo
// if it expired before now, and reports whether it did. Only an entry of
// b: another entry with this lo (re-inserted since, or a lo shared by two
// digests) is left for its own bucket, which keeps every entry listed in
// the bucket of its expiry.
func (s *shard) dropExpired(lo, b, now uint64) bool {
	mask := uint64(len(s.slots) - 1)
	for i := lo & mask; ; i = (i + 1) & mask {
		e := &s.slots[i]
		if e.expires == 0 {
			return false
		}
		if e.lo == lo && e.expires < now && e.expires/granularity == b {
			s.remove(int(i))
			return true
		}
	}
}

func (s *shard) resize(size int) {
	old := s.slots
	s.slots = make([]slot, size)
	mask := uint64(size - 1)
	for _, e := range old {
		if e.expires == 0 {
			continue
		}
		i := e.lo & mask
		for s.slots[i].expires != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = e
	}
}

// note files a new entry's lo in the bucket of its expiry.
func (s *shard) note(lo, expires uint64) {
	i := expires / granularity
	b := s.last
	if b == nil || s.lastIdx != i {
		b = s.buckets[i]
		if b == nil {
			if n := len(s.free); n > 0 {
				b, s.free = s.free[n-1], s.free[:n-1]
			} else {
				b = new(bucket)
			}
			s.buckets[i] = b
		}
		s.last, s.lastIdx = b, i
	}
	b.lo = append(b.lo, lo)
	if i < s.low {
		s.low = i
	}
	if s.swept && expires < s.sweptAt {
		s.swept = false
	}
}

// purge drops every bucket whose entries all expired before now (an entry
// lives while now <= expires).
func (s *shard) purge(now uint64) {
	limit := now / granularity
	if limit <= s.low {
		return
	}
	dropped := false
	if limit-s.low > uint64(len(s.buckets)) {
		// The clock jumped: visit the buckets, not every index between.
		for i := range s.buckets {
			if i < limit {
				s.drop(i, now)
				dropped = true
			}
		}
	} else {
		for i := s.low; i < limit; i++ {
			if s.buckets[i] != nil {
				s.drop(i, now)
				dropped = true
			}
		}
	}
	s.low = limit
	if dropped && len(s.slots) > minSlots && s.n*8 < len(s.slots) {
		// Give memory back after a burst: down to at most half full.
		s.resize(max(minSlots, 1<<bits.Len(uint(2*s.n))))
	}
}

func (s *shard) drop(i, now uint64) {
	b := s.buckets[i]
	mask := uint64(len(s.slots) - 1)
	for rest := b.lo; len(rest) > 0; {
		batch := rest[:min(len(rest), prefetch)]
		rest = rest[len(batch):]
		// The entries lie scattered over a table much larger than the
		// CPU caches. Loading their slots in a loop of independent loads
		// lets the CPU wait for all the misses at once instead of one
		// after the other in dropExpired.
		var sink uint64
		for _, lo := range batch {
			sink += s.slots[lo&mask].expires
		}
		s.sink = sink
		for _, lo := range batch {
			s.dropExpired(lo, i, now)
		}
	}
	delete(s.buckets, i)
	if s.last == b {
		s.last = nil
	}
	if len(s.free) < maxFree {
		b.lo = b.lo[:0]
		s.free = append(s.free, b)
	}
}

// sweep drops the expired entries of the bucket that now falls in, which
// purge leaves whole until its last moment has passed. It runs only when
// the shard is full, so that a full cache refuses a login only when every
// entry is still live.
func (s *shard) sweep(now uint64) {
	if s.swept && s.sweptAt == now {
		return
	}
	s.swept, s.sweptAt = true, now
	i := now / granularity
	b := s.buckets[i]
	if b == nil {
		return
	}
	keep := b.lo[:0]
	for _, lo := range b.lo {
		if !s.dropExpired(lo, i, now) {
			keep = append(keep, lo)
		}
	}
	b.lo = keep
}

package replay

import (
	"sync"

	"github.com/tagauth/tagauth/protocol"
)

// granularity is the width, in ms, of one expiry bucket.
const granularity = 64

// shard is one lock's worth of the cache: a map for lookups and the keys
// grouped in buckets by expiry, so that purging drops whole buckets once
// their last moment has passed instead of keeping a sorted structure. An
// entry may outlive its expiry by less than one bucket; lookups compare
// the exact expiry, so that never lets a replay through.
type shard struct {
	mu      sync.Mutex
	max     int
	m       map[protocol.ReplayKey]uint64
	buckets map[uint64][]protocol.ReplayKey
	low     uint64 // no bucket below this index holds keys
	free    [][]protocol.ReplayKey
}

func (s *shard) add(key protocol.ReplayKey, expires uint64) {
	s.m[key] = expires
	i := expires / granularity
	b, ok := s.buckets[i]
	if !ok && len(s.free) > 0 {
		b, s.free = s.free[len(s.free)-1], s.free[:len(s.free)-1]
	}
	s.buckets[i] = append(b, key)
	if i < s.low {
		s.low = i
	}
}

// purge drops every bucket whose entries all expired before now (an entry
// lives while now <= expires).
func (s *shard) purge(now uint64) {
	limit := now / granularity
	if limit <= s.low {
		return
	}
	if limit-s.low > uint64(len(s.buckets)) {
		// The clock jumped: visit the buckets, not every index between.
		for i := range s.buckets {
			if i < limit {
				s.drop(i, now)
			}
		}
	} else {
		for i := s.low; i < limit; i++ {
			s.drop(i, now)
		}
	}
	s.low = limit
}

func (s *shard) drop(i, now uint64) {
	b, ok := s.buckets[i]
	if !ok {
		return
	}
	for _, k := range b {
		// A key re-inserted later with a later expiry belongs to a later
		// bucket: leave it.
		if exp, ok := s.m[k]; ok && exp < now {
			delete(s.m, k)
		}
	}
	delete(s.buckets, i)
	clear(b)
	s.free = append(s.free, b[:0])
}

// sweep drops the expired entries of the bucket that now falls in, which
// purge leaves whole until its last moment has passed. It runs only when
// the shard is full, so that a full cache refuses a login only when every
// entry is still live.
func (s *shard) sweep(now uint64) {
	i := now / granularity
	b, ok := s.buckets[i]
	if !ok {
		return
	}
	keep := b[:0]
	for _, k := range b {
		if exp, ok := s.m[k]; ok && exp < now {
			delete(s.m, k)
		} else {
			keep = append(keep, k)
		}
	}
	clear(b[len(keep):])
	s.buckets[i] = keep
}

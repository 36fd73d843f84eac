package coap

import (
	"encoding/binary"
	"net/netip"
	"sync"
)

// The response cache remembers, per (endpoint, message ID), the encoded
// response to a CON so that a retransmission is answered without running the
// handler again (RFC 7252 section 4.5). It sits on the hot path, so it is
// split into shards with a lock each, and each shard is a fixed ring of
// entries: the oldest entry is overwritten when the ring is full, which
// bounds memory, and an entry's response buffer is reused by the next
// occupant of its slot, which keeps the steady state free of allocations.
// Entries are found through a fixed open-addressing table (linear probing,
// at most half full, backward-shift deletion) indexed by the hash that also
// picks the shard: it never grows, never leaves tombstones and hashes each
// key once, which a Go map under constant insert and delete churn does not
// promise.

const maxShards = 32

type cacheKey struct {
	from netip.AddrPort
	mid  uint16
}

type entryState uint8

const (
	entryFree    entryState = iota
	entryPending            // the first copy is being handled
	entryDone               // resp holds the encoded response
)

type cacheEntry struct {
	key   cacheKey
	hash  uint64
	at    int64 // nanoseconds on the server clock when the request arrived
	gen   uint32
	state entryState
	resp  []byte
}

type cacheShard struct {
	mu sync.Mutex
	// tab maps keys to ring slots: each word is the low 32 bits of the
	// key's hash (the tag) above slot+1, 0 when empty. The tag lets a probe
	// skip other keys and find a key's home position without touching the
	// ring, which keeps a lookup to about one cache miss.
	tab  []uint64
	mask uint64
	ents []cacheEntry
	next int32
	_    [64]byte // keep neighbouring shards' locks off one cache line
}

func tabWord(h uint64, slot int32) uint64 { return h<<32 | uint64(slot+1) }

func wordSlot(v uint64) int32 { return int32(uint32(v)) - 1 }

// find returns the table position holding k, or the empty position where
// it would go, and whether it was found.
func (s *cacheShard) find(k cacheKey, h uint64) (uint64, bool) {
	for p := h & s.mask; ; p = (p + 1) & s.mask {
		v := s.tab[p]
		if v == 0 {
			return p, false
		}
		if uint32(v>>32) == uint32(h) && s.ents[wordSlot(v)].key == k {
			return p, true
		}
	}
}

// remove empties table position p, shifting later members of its probe run
// back so that every key stays reachable from its home position.
func (s *cacheShard) remove(p uint64) {
	for q := (p + 1) & s.mask; ; q = (q + 1) & s.mask {
		v := s.tab[q]
		if v == 0 {
			break
		}
		// The word at q may move to p if p lies cyclically between its
		// home position and q.
		if home := (v >> 32) & s.mask; (q-home)&s.mask >= (q-p)&s.mask {
			s.tab[p] = v
			p = q
		}
	}
	s.tab[p] = 0
}

// unlink removes slot i from the table, if the table holds it.
func (s *cacheShard) unlink(i int32) {
	w := tabWord(s.ents[i].hash, i)
	for p := s.ents[i].hash & s.mask; ; p = (p + 1) & s.mask {
		switch s.tab[p] {
		case 0:
			return
		case w:
			s.remove(p)
			return
		}
	}
}

type respCache struct {
	shards []cacheShard
	ttl    int64
}

// ticket identifies a reserved entry; gen detects that the slot was reused
// (evicted) while the handler ran.
type ticket struct {
	shard *cacheShard
	slot  int32
	gen   uint32
}

type lookup uint8

const (
	cacheMiss     lookup = iota // reserved: handle the request, then finish
	cacheHit                    // a retransmission with a cached answer
	cacheInFlight               // a retransmission of a request still being handled
)

// newRespCache holds at most size entries (rounded up to a multiple of the
// shard count), each for ttl nanoseconds.
func newRespCache(size int, ttl int64) *respCache {
	n := min(maxShards, size)
	per := (size + n - 1) / n
	c := &respCache{shards: make([]cacheShard, n), ttl: ttl}
	tab := 2
	for tab < 2*per {
		tab *= 2
	}
	for i := range c.shards {
		c.shards[i].tab = make([]uint64, tab)
		c.shards[i].mask = uint64(tab - 1)
		c.shards[i].ents = make([]cacheEntry, per)
	}
	return c
}

// hash mixes the key into 64 bits: the high half picks the shard, the low
// half is the table tag and position. A peer who aims many requests at one shard only
// slows its own requests' lock; the table stays at most half full whatever
// the keys.
func hash(k cacheKey) uint64 {
	a := k.from.Addr().As16()
	h := binary.LittleEndian.Uint64(a[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(a[8:])
	h ^= uint64(k.from.Port())<<16 | uint64(k.mid)
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 29
	return h
}

// begin looks k up at time now. On a hit it appends the cached response to
// dst and returns it; on a miss it reserves an entry for the caller, who
// must call finish or forget with the ticket.
func (c *respCache) begin(k cacheKey, now int64, dst []byte) (lookup, []byte, ticket) {
	h := hash(k)
	s := &c.shards[(h>>32)%uint64(len(c.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	p, found := s.find(k, h)
	if found {
		e := &s.ents[wordSlot(s.tab[p])]
		if now-e.at <= c.ttl {
			if e.state == entryDone {
				return cacheHit, append(dst, e.resp...), ticket{}
			}
			return cacheInFlight, dst, ticket{}
		}
		// Past the exchange lifetime the client may reuse the message ID
		// for a new request.
		s.remove(p)
		e.state = entryFree
		e.gen++
	}
	i := s.next
	s.next++
	if int(s.next) == len(s.ents) {
		s.next = 0
	}
	e := &s.ents[i]
	if e.state != entryFree {
		s.unlink(i)
	}
	e.key = k
	e.hash = h
	e.at = now
	e.gen++
	e.state = entryPending
	e.resp = e.resp[:0]
	// Unlinking may have shifted k's future position: look it up again.
	p, _ = s.find(k, h)
	s.tab[p] = tabWord(h, i)
	return cacheMiss, dst, ticket{shard: s, slot: i, gen: e.gen}
}

// finish stores the encoded response for the reserved entry, unless the
// entry was evicted meanwhile.
func (c *respCache) finish(t ticket, resp []byte) {
	s := t.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &s.ents[t.slot]
	if e.gen != t.gen {
		return
	}
	e.resp = append(e.resp[:0], resp...)
	e.state = entryDone
}

// forget releases a reservation that will get no response, so that the
// client's retransmission is handled afresh rather than dropped.
func (c *respCache) forget(t ticket) {
	s := t.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &s.ents[t.slot]
	if e.gen != t.gen {
		return
	}
	s.unlink(t.slot)
	e.state = entryFree
	e.gen++
}

// len counts the entries the cache indexes, for tests.
func (c *respCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for _, v := range s.tab {
			if v != 0 {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

package protocol

import (
	"hash/maphash"
	"sync"
)

// tagCache keeps, per identity and key version, the HMAC states of its tag,
// so that a gateway verifying the same users and devices again skips two
// HMACs and two key schedules per login. It holds secrets of the same
// standing as K_GTW, in the gateway's memory only. It is bounded: a shard
// that fills up is emptied and refilled on demand.
type tagCache struct {
	seed   maphash.Seed
	perMax int
	shards [tagShards]tagShard
}

const tagShards = 16

// defaultTagCache is how many identities the cache holds.
const defaultTagCache = 1 << 16

type tagShard struct {
	mu sync.RWMutex
	m  map[tagKey]*tagEntry
}

// tagKey is domain (0 master, 1 user, 2 device) || kv || id8(id) padded.
type tagKey [2 + 1 + MaxIDLen]byte

const (
	domainMaster = 0
	domainUser   = 1
	domainDevice = 2
)

type tagEntry struct {
	master *GatewayKey // the K_GTW it was derived from
	ks     keyState
}

func newTagCache(size int) *tagCache {
	c := &tagCache{seed: maphash.MakeSeed(), perMax: max(1, size/tagShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[tagKey]*tagEntry)
	}
	return c
}

// state returns the HMAC states for the tag of id (user or device domain)
// under master key k of version kv, or of k itself (master domain, id nil).
// An entry derived from another key object of the same version (the
// registry replaced it) is recomputed.
func (c *tagCache) state(x *hasher, domain byte, kv uint8, k *GatewayKey, id []byte) *keyState {
	var key tagKey
	key[0], key[1] = domain, kv
	id8(key[2:2], id)
	s := &c.shards[maphash.Bytes(c.seed, key[:])%tagShards]
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	if e != nil && e.master == k {
		return &e.ks
	}
	e = &tagEntry{master: k}
	switch domain {
	case domainMaster:
		x.setKey(&e.ks, k[:])
	default:
		mk := c.state(x, domainMaster, kv, k, nil)
		var buf [1 + MaxIDLen]byte
		label := labelUserTag
		if domain == domainDevice {
			label = labelDeviceTag
		}
		tag := x.mac(mk, label, id8(buf[:0], id))
		x.setKey(&e.ks, tag[:])
		clear(tag[:])
	}
	s.mu.Lock()
	if len(s.m) >= c.perMax {
		clear(s.m)
	}
	s.m[key] = e
	s.mu.Unlock()
	return &e.ks
}

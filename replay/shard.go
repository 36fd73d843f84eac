package replay

import (
	"sync"

	"github.com/tagauth/tagauth/protocol"
)

type entry struct {
	expires uint64
	key     protocol.ReplayKey
}

// shard is one lock's worth of the cache: a map for lookups and a min-heap
// on expiry so that purging touches only expired entries. The heap is typed
// rather than container/heap so that a push does not box the 98-byte key
// into an interface (one allocation per login).
type shard struct {
	mu   sync.Mutex
	max  int
	m    map[protocol.ReplayKey]uint64
	heap []entry
}

// purge drops every entry that expired before now (an entry lives while
// now <= expires).
func (s *shard) purge(now uint64) {
	for len(s.heap) > 0 && s.heap[0].expires < now {
		top := s.heap[0]
		if exp, ok := s.m[top.key]; ok && exp == top.expires {
			delete(s.m, top.key)
		}
		s.pop()
	}
}

func (s *shard) push(e entry) {
	s.heap = append(s.heap, e)
	i := len(s.heap) - 1
	for i > 0 {
		p := (i - 1) / 2
		if s.heap[p].expires <= s.heap[i].expires {
			break
		}
		s.heap[p], s.heap[i] = s.heap[i], s.heap[p]
		i = p
	}
}

func (s *shard) pop() {
	n := len(s.heap) - 1
	s.heap[0] = s.heap[n]
	s.heap = s.heap[:n]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && s.heap[l].expires < s.heap[m].expires {
			m = l
		}
		if r < n && s.heap[r].expires < s.heap[m].expires {
			m = r
		}
		if m == i {
			return
		}
		s.heap[m], s.heap[i] = s.heap[i], s.heap[m]
		i = m
	}
}

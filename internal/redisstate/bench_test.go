package redisstate_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/tagauth/tagauth/internal/redisstate"
	"github.com/tagauth/tagauth/internal/redisstate/redistest"
)

// BenchmarkInsert is one fresh Insert from 8 goroutines per CPU: one
// script round trip to Redis each.
func BenchmarkInsert(b *testing.B) {
	u, prefix := redistest.Prefix(b)
	redistest.MarkFresh(b, prefix)
	s, err := redisstate.Open(context.Background(), u, redisstate.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := s.Replay()
	var n atomic.Uint64
	b.ReportAllocs()
	b.SetParallelism(8) // a gateway has many verifies in flight
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := key("bench", n.Add(1))
			if _, err := c.Insert(context.Background(), k, t0+10_000, t0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

package replay_test

import (
	"context"
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// BenchmarkInsert measures a fresh insert at a steady state: the clock
// advances one millisecond every 10 inserts and entries live 20 s, so the
// cache holds about 200 000 entries and each insert also purges one.
func BenchmarkInsert(b *testing.B) {
	benchmarkInsert(b, 20_000)
}

// BenchmarkInsert600k is BenchmarkInsert with entries living 60 s, so that
// the cache holds about 600 000: the gateway's size at ~72k logins/s with
// the default window (entries live up to 2 dT).
func BenchmarkInsert600k(b *testing.B) {
	benchmarkInsert(b, 60_000)
}

func benchmarkInsert(b *testing.B, life uint64) {
	c := replay.New(1 << 21)
	ctx := context.Background()
	var k protocol.ReplayKey
	var i uint64
	insert := func() {
		i++
		binary.BigEndian.PutUint64(k[len(k)-8:], i)
		now := 1_000_000 + i/10
		ok, err := c.Insert(ctx, k, now+life, now)
		if err != nil || !ok {
			b.Fatal("insert refused", err)
		}
	}
	// Reach the steady state before timing.
	for range life * 10 {
		insert()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		insert()
	}
}

// BenchmarkMemory reports the heap a cache of 500 000 live entries holds
// (bytes per entry), as seen by the garbage collector.
func BenchmarkMemory(b *testing.B) {
	for b.Loop() {
		b.ReportMetric(bytesPerEntry(b, 500_000), "B/entry")
	}
}

// bytesPerEntry fills a fresh cache with n live entries and returns the
// heap it holds per entry.
func bytesPerEntry(tb testing.TB, n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := replay.New(2 * n)
	ctx := context.Background()
	for i := range uint64(n) {
		now := 1_000_000 + i/10
		if ok, err := c.Insert(ctx, key(i), now+uint64(n), now); !ok || err != nil {
			tb.Fatal("insert refused", err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if c.Len() != n {
		tb.Fatalf("Len %d, want %d", c.Len(), n)
	}
	runtime.KeepAlive(c)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

package replay_test

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// BenchmarkInsert measures a fresh insert at a steady state: the clock
// advances one millisecond every 10 inserts and entries live 20 s, so the
// cache holds about 200 000 entries and each insert also purges one.
func BenchmarkInsert(b *testing.B) {
	c := replay.New(1 << 20)
	ctx := context.Background()
	var k protocol.ReplayKey
	var i uint64
	b.ReportAllocs()
	for b.Loop() {
		i++
		binary.BigEndian.PutUint64(k[len(k)-8:], i)
		now := 1_000_000 + i/10
		ok, err := c.Insert(ctx, k, now+20_000, now)
		if err != nil || !ok {
			b.Fatal("insert refused", err)
		}
	}
}

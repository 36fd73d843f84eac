package postgres

import (
	"fmt"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/postgres/pgtest"
)

// BenchmarkAppendAudit is one committed AppendAudit of n records: what a
// replica's group commit of n successful verifies costs.
func BenchmarkAppendAudit(b *testing.B) {
	u, _ := pgtest.Schema(b)
	s, err := Open(ctx, u, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, n := range []int{1, 16, 256} {
		recs := make([]store.AuditRecord, n)
		for i := range recs {
			recs[i] = store.AuditRecord{Time: time.Now(), Kind: "verify", Outcome: "ok", User: "alice", Device: "sensor-7",
				Source: "127.0.0.1:5683", KVUser: 1, KVDevice: 1, LatencyUS: 300}
		}
		b.Run(fmt.Sprint("records=", n), func(b *testing.B) {
			for b.Loop() {
				if err := s.AppendAudit(ctx, recs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
		})
	}
}

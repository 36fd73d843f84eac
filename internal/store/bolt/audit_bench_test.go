package bolt

import (
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tagauth/tagauth/internal/store"
)

// benchBatch is about the gateway's audit batch (auditMaxBatch is 1024;
// under load a batch holds what 20 ms brought).
const benchBatch = 512

// benchRecords is a batch as the gateway writes it under load: verifies
// that succeed.
func benchRecords() []store.AuditRecord {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	recs := make([]store.AuditRecord, benchBatch)
	for i := range recs {
		recs[i] = store.AuditRecord{
			Time: t0.Add(time.Duration(i) * 13 * time.Microsecond), Kind: "verify", Outcome: "ok",
			User: "user-0042", Device: "dev-0003", Source: "127.0.0.1:40123",
			KVUser: 1, KVDevice: 1, LatencyUS: 12,
		}
	}
	return recs
}

// cpuTime is the CPU this process has used, user and system: the
// benchmark's wall time includes waiting for fdatasync, which is not the
// gateway's CPU.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendAudit measures one AppendAudit of a gateway-sized batch,
// committed to disk, and reports the cost per record: wall time, CPU time
// of the whole process (GC included) and allocations.
func BenchmarkAppendAudit(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), FileName))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	recs := benchRecords()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime(b)
	for b.Loop() {
		if err := s.AppendAudit(ctx, recs...); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime(b) - cpu0
	runtime.ReadMemStats(&m1)
	n := float64(b.N) * float64(len(recs))
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/rec")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/rec")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/n, "allocs/rec")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/n, "B/rec")
	// Pages the audit bucket takes in the file, per record.
	err = s.db.View(func(tx *bbolt.Tx) error {
		st := tx.Bucket(bucketAudit).Stats()
		b.ReportMetric(float64(st.LeafAlloc+st.BranchAlloc)/n, "disk-B/rec")
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

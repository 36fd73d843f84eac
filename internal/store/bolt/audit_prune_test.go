package bolt

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
)

// fillAudit appends n records of distinct users (so that runs do not
// shrink them to a few bytes each) from t0 on, one second apart.
func fillAudit(t *testing.T, s *Store, t0 time.Time, n int) {
	t.Helper()
	batch := make([]store.AuditRecord, 0, 500)
	for i := range n {
		batch = append(batch, store.AuditRecord{Time: t0.Add(time.Duration(i) * time.Second), Kind: "verify", Outcome: "refused",
			Reason: "bad E_i", User: fmt.Sprintf("user-%08d", i), Device: fmt.Sprintf("dev-%08d", i), Source: "192.0.2.7:40000"})
		if len(batch) == cap(batch) || i == n-1 {
			if err := s.AppendAudit(ctx, batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// Pruning frees pages that later appends reuse: a store that keeps
// pruning what it appends stops growing. Compact then gives the free
// pages back to the file system.
func TestAuditPruneReusesSpace(t *testing.T) {
	s := openTemp(t)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 20000
	fillAudit(t, s, t0, n)
	prune := func(before time.Time) int {
		total := 0
		for {
			k, err := s.PruneAudit(ctx, before, 5000)
			if err != nil {
				t.Fatal(err)
			}
			if k == 0 {
				return total
			}
			total += k
		}
	}
	if got := prune(t0.Add(n * time.Second)); got != n {
		t.Fatalf("pruned %d records, want %d", got, n)
	}
	grown := fileSize(t, s.Path())
	// Four more rounds of the same volume, each pruned: without reuse
	// the file would grow by about grown each round.
	for r := 1; r <= 4; r++ {
		from := t0.Add(time.Duration(r*n) * time.Second)
		fillAudit(t, s, from, n)
		if got := prune(from.Add(n * time.Second)); got != n {
			t.Fatalf("round %d: pruned %d records, want %d", r, got, n)
		}
	}
	if after := fileSize(t, s.Path()); after > grown+grown/2 {
		t.Fatalf("store grew from %d to %d bytes over four pruned rounds: freed pages are not reused", grown, after)
	}

	path := s.Path()
	s.Close()
	dst := filepath.Join(t.TempDir(), "compact.db")
	if err := Compact(dst, path); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	if small := fileSize(t, dst); small >= grown/4 {
		t.Fatalf("compacted store is %d bytes, the pruned one %d: compaction gave nothing back", small, grown)
	}
	c, err := Open(dst)
	if err != nil {
		t.Fatalf("compacted store does not open: %v", err)
	}
	defer c.Close()
	if err := c.AppendAudit(ctx, store.AuditRecord{Time: t0, Kind: "key", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	recs, seqs, err := c.QueryAudit(ctx, store.AuditFilter{})
	if err != nil || len(recs) != 1 || seqs[0] != 5*n+1 {
		t.Fatalf("compacted store: %v %v %v, want one record numbered %d", recs, seqs, err, 5*n+1)
	}
	if err := Compact(dst, path); err == nil {
		t.Fatal("Compact onto an existing file succeeded")
	}
}

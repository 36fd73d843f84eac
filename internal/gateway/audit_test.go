package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
)

// slowStore holds AppendAudit until released and counts what it got.
type slowStore struct {
	store.Store
	release chan struct{}
	entered chan int // when not nil, gets each batch's size as it arrives
	mu      sync.Mutex
	got     []store.AuditRecord
	batches int
}

func (s *slowStore) AppendAudit(_ context.Context, recs ...store.AuditRecord) error {
	if s.entered != nil {
		s.entered <- len(recs)
	}
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, recs...)
	s.batches++
	return nil
}

// TestAuditBackpressure: with the store stalled, more records than the
// queue holds are submitted; none is dropped, they arrive in order and in
// batches, and close flushes the rest.
func TestAuditBackpressure(t *testing.T) {
	st := &slowStore{release: make(chan struct{}), entered: make(chan int)}
	var out testenv.LockedBuffer
	w := newAuditWriter(st, &out, slog.New(slog.DiscardHandler))
	const n = auditQueue + 2*auditMaxBatch
	rec := func(i int) store.AuditRecord {
		return store.AuditRecord{Kind: KindVerify, Outcome: OutcomeOK, LatencyUS: int64(i + 1)}
	}
	// The store is stalled with the first record in flight; then the
	// queue fills up without waiting...
	w.submit(rec(0))
	if k := <-st.entered; k != 1 {
		t.Fatalf("first batch of %d records, want the one submitted", k)
	}
	for i := 1; i <= auditQueue; i++ {
		w.submit(rec(i))
	}
	if len(w.ch) != auditQueue {
		t.Fatalf("queue holds %d records, want %d", len(w.ch), auditQueue)
	}
	// ...and the submitter of the rest must wait rather than drop.
	submitted := make(chan struct{})
	go func() {
		for i := auditQueue + 1; i < n; i++ {
			w.submit(rec(i))
		}
		close(submitted)
	}()
	go func() { // later batches pass straight through
		for range st.entered {
		}
	}()
	select {
	case <-submitted:
		t.Fatal("all records submitted while the store was stalled: some were dropped")
	default:
	}
	close(st.release)
	<-submitted
	if err := w.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	close(st.entered)
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.got) != n {
		t.Fatalf("stored %d records, submitted %d", len(st.got), n)
	}
	for i, r := range st.got {
		if r.LatencyUS != int64(i+1) {
			t.Fatalf("record %d out of order: %d", i, r.LatencyUS)
		}
	}
	if st.batches >= n {
		t.Errorf("%d records in %d appends: no batching", n, st.batches)
	}
	lines := strings.Count(out.String(), "\n")
	if lines != n {
		t.Errorf("%d JSON audit lines, want %d", lines, n)
	}
	// After close, submit does not block and sync says it stopped.
	w.submit(store.AuditRecord{Kind: KindVerify})
	if err := w.sync(context.Background()); err == nil {
		t.Error("sync after close succeeded")
	}
}

// failingStore fails every append.
type failingStore struct{ store.Store }

func (failingStore) AppendAudit(context.Context, ...store.AuditRecord) error {
	return store.ErrFull
}

// TestAuditStoreDown: when the store refuses, the record is still in the
// JSON output and the failure is logged; the writer keeps going.
func TestAuditStoreDown(t *testing.T) {
	var out, logs bytes.Buffer
	w := newAuditWriter(failingStore{}, &out, slog.New(slog.NewTextHandler(&logs, nil)))
	w.submit(store.AuditRecord{Kind: KindRevoke, Outcome: OutcomeOK, User: "alice"})
	if err := w.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.close()
	var line map[string]any
	if err := json.Unmarshal(out.Bytes(), &line); err != nil || line["user"] != "alice" || line["kind"] != "revoke" {
		t.Fatalf("audit line %q (%v)", out.String(), err)
	}
	if !strings.Contains(logs.String(), "audit records not stored") {
		t.Fatalf("store failure not logged: %s", logs.String())
	}
}

func TestReasonOf(t *testing.T) {
	for err, want := range map[error]string{
		protocol.ReasonRevokedUser: "revoked user",
		protocol.ErrMalformed:      "malformed",
		errors.New("boom"):         "internal error",
		errors.Join(protocol.ReasonBadE, errors.ErrUnsupported): "E_i does not verify",
	} {
		if got := reasonOf(err); got != want {
			t.Errorf("reasonOf(%v) = %q, want %q", err, got, want)
		}
	}
}

// TestRefusalSamplerBounded: refusals under many keys (reasons an attacker
// might one day choose) fill a bounded table; the rest share one overflow
// key. Per key and interval one record is written at once and the rest
// later with their count, so the counts add up to the refusals.
func TestRefusalSamplerBounded(t *testing.T) {
	m := newAuditMetrics()
	var s refusalSampler
	s.init(time.Minute, &m)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	written, events := 0, uint64(0)
	count := func(r *store.AuditRecord) {
		written++
		events += r.Events()
	}
	const keys, per = 3 * maxSampleKeys, 5
	for i := range keys * per {
		it := auditItem{rec: store.AuditRecord{Kind: KindVerify, Outcome: OutcomeRefused, Reason: fmt.Sprint("reason-", i%keys)}}
		if s.take(&it, t0.Add(time.Duration(i)*time.Millisecond)) {
			count(&it.rec)
		}
	}
	if len(s.slots) != maxSampleKeys+1 {
		t.Fatalf("%d keys in the table, want %d and the overflow key", len(s.slots), maxSampleKeys)
	}
	if written != maxSampleKeys+1 {
		t.Fatalf("%d records written at once for %d keys, want one per table key", written, keys)
	}
	overflow := 0
	s.due(t0.Add(2*time.Minute), func(it auditItem) {
		count(&it.rec)
		if it.rec.Reason == overflowReason {
			overflow++
		}
	})
	if events != keys*per || overflow != 1 {
		t.Fatalf("records stand for %d refusals (want %d), %d overflow records (want 1)", events, keys*per, overflow)
	}
	// Keys quiet for ten intervals are forgotten.
	s.due(t0.Add(30*time.Minute), func(auditItem) { t.Fatal("nothing was pending") })
	if len(s.slots) != 0 {
		t.Fatalf("%d keys left after ten quiet intervals", len(s.slots))
	}
}

// TestAuditJournalReplay: records a crashed gateway left in the journal
// but not in the store are stored at the next start, each once: those the
// store already has (its journal mark) are skipped, and a second start
// stores nothing again.
func TestAuditJournalReplay(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	st, err := bolt.Open(filepath.Join(data, bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dir := journalDir(data)
	j, _, _, err := auditlog.Open(dir, auditlog.Sync{})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Resume(0); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var b auditlog.Batch
	for i := range 3 {
		r := store.AuditRecord{Time: at, Kind: KindVerify, Outcome: OutcomeOK, User: fmt.Sprint("u", i)}
		b.Add(&r)
	}
	if _, _, err := j.Append(&b); err != nil {
		t.Fatal(err)
	}
	// The crashed gateway had stored the first record (and its mark).
	if err := st.AppendAuditJournaled(ctx, j.ID(), 1, store.AuditRecord{Time: at, Kind: KindVerify, Outcome: OutcomeOK, User: "u0"}); err != nil {
		t.Fatal(err)
	}
	j.Close() // what kill -9 leaves: the file, unflushed by us

	for start := range 2 {
		var out bytes.Buffer
		w := newAuditWriter(st, &out, slog.New(slog.DiscardHandler))
		if err := w.openJournal(dir, auditlog.Sync{}); err != nil {
			t.Fatal(err)
		}
		if err := w.close(); err != nil {
			t.Fatal(err)
		}
		recs, _, err := st.QueryAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var users []string
		for _, r := range recs {
			users = append(users, r.User)
		}
		if strings.Join(users, ",") != "u0,u1,u2" {
			t.Fatalf("start %d: stored %v, want each record once: u0,u1,u2", start, users)
		}
	}
}

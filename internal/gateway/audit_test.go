package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// slowStore holds AppendAudit until released and counts what it got.
type slowStore struct {
	store.Store
	release chan struct{}
	mu      sync.Mutex
	got     []store.AuditRecord
	batches int
}

func (s *slowStore) AppendAudit(_ context.Context, recs ...store.AuditRecord) error {
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
	st := &slowStore{release: make(chan struct{})}
	var out bytes.Buffer
	var outMu sync.Mutex
	w := newAuditWriter(st, writerFunc(func(p []byte) (int, error) {
		outMu.Lock()
		defer outMu.Unlock()
		return out.Write(p)
	}), slog.New(slog.DiscardHandler))
	const n = auditQueue + 2*auditMaxBatch
	submitted := make(chan struct{})
	go func() {
		for i := range n {
			w.submit(store.AuditRecord{Kind: KindVerify, Outcome: OutcomeOK, LatencyUS: int64(i + 1)})
		}
		close(submitted)
	}()
	// The store is stalled: one batch is in flight, the queue fills up,
	// and the submitter must wait rather than drop.
	for len(w.ch) < auditQueue {
		time.Sleep(time.Millisecond)
	}
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
	outMu.Lock()
	lines := strings.Count(out.String(), "\n")
	outMu.Unlock()
	if lines != n {
		t.Errorf("%d JSON audit lines, want %d", lines, n)
	}
	// After close, submit does not block and sync says it stopped.
	w.submit(store.AuditRecord{Kind: KindVerify})
	if err := w.sync(context.Background()); err == nil {
		t.Error("sync after close succeeded")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

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
		protocol.ErrRevokedUser: "revoked user",
		protocol.ErrMalformed:   "malformed",
		errors.New("boom"):      "internal error",
		errors.Join(protocol.ErrBadE, errors.ErrUnsupported): "E_i does not verify",
	} {
		if got := reasonOf(err); got != want {
			t.Errorf("reasonOf(%v) = %q, want %q", err, got, want)
		}
	}
}

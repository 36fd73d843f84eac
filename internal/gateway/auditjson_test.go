package gateway

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
)

// recordingStore keeps what AppendAudit got, per call.
type recordingStore struct {
	store.Store
	mu      sync.Mutex
	batches [][]store.AuditRecord
}

func (s *recordingStore) AppendAudit(_ context.Context, recs ...store.AuditRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, append([]store.AuditRecord(nil), recs...))
	return nil
}

// TestSubmitVerifyFillsNames: a verify record queued with raw identities
// and a source address reaches the store and the log with the same
// sanitized strings that SanitizeID and AddrPort.String give, including
// for an identity that is not printable, and the caller's buffers may be
// reused as soon as submitVerify returns.
func TestSubmitVerifyFillsNames(t *testing.T) {
	for _, journal := range []bool{false, true} {
		t.Run(fmt.Sprint("journal=", journal), func(t *testing.T) { testSubmitVerifyFillsNames(t, journal) })
	}
}

func testSubmitVerifyFillsNames(t *testing.T, journal bool) {
	st := &recordingStore{}
	var out testenv.LockedBuffer
	w := newAuditWriter(st, &out, slog.New(slog.DiscardHandler))
	if journal {
		if err := w.openJournal(t.TempDir(), auditlog.Sync{}); err != nil {
			t.Fatal(err)
		}
	}
	user := []byte("alice")
	odd := []byte("dev\x00\xffice")
	long := bytes.Repeat([]byte("x"), maxSanitized+10)
	from := netip.MustParseAddrPort("[2001:db8::7]:61616")
	ctx := context.Background()
	w.submitVerify(ctx, store.AuditRecord{Kind: KindVerify, Outcome: OutcomeOK}, user, odd, from, 0, protocol.Hardened)
	copy(user, "XXXXX") // the writer must have copied it
	w.submitVerify(ctx, store.AuditRecord{Kind: KindVerify, Outcome: OutcomeOK}, []byte("alice"), long, netip.MustParseAddrPort("127.0.0.1:9"), 0, protocol.Hardened)
	if err := w.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.close()
	var recs []store.AuditRecord
	for _, b := range st.batches {
		recs = append(recs, b...)
	}
	if len(recs) != 2 {
		t.Fatalf("%d records stored, want 2", len(recs))
	}
	if r := recs[0]; r.User != "alice" || r.Device != auditjson.SanitizeID([]byte("dev\x00\xffice")) || r.Source != from.String() {
		t.Errorf("first record %q %q %q", r.User, r.Device, r.Source)
	}
	if r := recs[1]; r.User != "alice" || r.Device != auditjson.SanitizeID(long) || r.Source != "127.0.0.1:9" {
		t.Errorf("second record %q %q %q", r.User, r.Device, r.Source)
	}
	if !strings.Contains(out.String(), `"device":"hex:646576`) || strings.Count(out.String(), "\n") != 2 {
		t.Errorf("log lines:\n%s", out.String())
	}
}

// TestAuditLingerBatches: records that come in while the writer lingers
// (auditLinger) are stored in one append, not one each; sync still
// returns at once with everything stored.
func TestAuditLingerBatches(t *testing.T) {
	st := &recordingStore{}
	w := newAuditWriter(st, &testenv.LockedBuffer{}, slog.New(slog.DiscardHandler))
	defer w.close()
	for i := range 5 {
		w.submit(store.AuditRecord{Kind: KindVerify, LatencyUS: int64(i)})
	}
	if err := w.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, b := range st.batches {
		n += len(b)
	}
	if n != 5 {
		t.Fatalf("%d records stored after sync, want 5", n)
	}
	if len(st.batches) >= 5 {
		t.Errorf("5 records in %d appends: the writer did not linger", len(st.batches))
	}
}

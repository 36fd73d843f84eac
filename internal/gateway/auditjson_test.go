package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
)

// TestRecordJSONMatchesSlog: the audit writer's hand-made JSON lines say
// what slog's JSONHandler says for the same record (same keys in the same
// order, same escaping), with the record's own time.
func TestRecordJSONMatchesSlog(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 30, 0, 123456789, time.UTC)
	for _, r := range []store.AuditRecord{
		{Time: at, Kind: KindVerify, Outcome: OutcomeOK, User: "alice", Device: "sensor-7", Source: "127.0.0.1:5683", KVUser: 1, KVDevice: 2, LatencyUS: 17},
		{Time: at, Kind: KindVerify, Outcome: OutcomeRefused, Reason: "stale T1", User: `quote" back\ slash`, Detail: "off by 12000 ms\n\t\x01 \u2028\u2029 é \xff end"},
		{Time: at, Kind: KindPolicy, Outcome: OutcomeOK, Reason: "grant <b>&</b>"},
		{Time: at, Kind: KindVerify, Outcome: OutcomeRefused, Reason: "E_i does not verify", Count: 4711},
	} {
		got := appendRecordJSON(nil, &r)
		var want bytes.Buffer
		logRecord(slog.New(slog.NewJSONHandler(&want, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					a.Value = slog.TimeValue(at)
				}
				return a
			},
		})), &r)
		if string(got) != want.String() {
			t.Errorf("record %+v\n got: %s\nwant: %s", r, got, want.String())
		}
		var m map[string]any
		if err := json.Unmarshal(got, &m); err != nil {
			t.Errorf("not JSON: %v: %s", err, got)
		}
	}
}

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
	if r := recs[0]; r.User != "alice" || r.Device != SanitizeID([]byte("dev\x00\xffice")) || r.Source != from.String() {
		t.Errorf("first record %q %q %q", r.User, r.Device, r.Source)
	}
	if r := recs[1]; r.User != "alice" || r.Device != SanitizeID(long) || r.Source != "127.0.0.1:9" {
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

// logRecord writes one audit record as a JSON line through slog: the
// reference that appendRecordJSON, the one encoder of audit lines, must
// match.
// Every field is either fixed text or sanitized: JSON escaping does the rest.
func logRecord(l *slog.Logger, r *store.AuditRecord) {
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs, slog.String("kind", r.Kind), slog.String("outcome", r.Outcome))
	if r.Reason != "" {
		attrs = append(attrs, slog.String("reason", r.Reason))
	}
	if r.User != "" {
		attrs = append(attrs, slog.String("user", r.User))
	}
	if r.Device != "" {
		attrs = append(attrs, slog.String("device", r.Device))
	}
	if r.Source != "" {
		attrs = append(attrs, slog.String("source", r.Source))
	}
	if r.KVUser != 0 {
		attrs = append(attrs, slog.Int("kv_user", int(r.KVUser)))
	}
	if r.KVDevice != 0 {
		attrs = append(attrs, slog.Int("kv_device", int(r.KVDevice)))
	}
	if r.LatencyUS != 0 {
		attrs = append(attrs, slog.Int64("latency_us", r.LatencyUS))
	}
	if r.Detail != "" {
		attrs = append(attrs, slog.String("detail", r.Detail))
	}
	if r.Count > 1 {
		attrs = append(attrs, slog.Int64("count", int64(r.Count)))
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, "audit", attrs...)
}

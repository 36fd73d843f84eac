package auditjson_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/store"
)

// TestRecordJSONMatchesSlog: the hand-made JSON lines say
// what slog's JSONHandler says for the same record (same keys in the same
// order, same escaping), with the record's own time.
func TestRecordJSONMatchesSlog(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 30, 0, 123456789, time.UTC)
	for _, r := range []store.AuditRecord{
		{Time: at, Kind: "verify", Outcome: "ok", User: "alice", Device: "sensor-7", Source: "127.0.0.1:5683", KVUser: 1, KVDevice: 2, LatencyUS: 17},
		{Time: at, Kind: "verify", Outcome: "refused", Reason: "stale T1", User: `quote" back\ slash`, Detail: "off by 12000 ms\n\t\x01 \u2028\u2029 é \xff end"},
		{Time: at, Kind: "policy", Outcome: "ok", Reason: "grant <b>&</b>"},
		{Time: at, Kind: "verify", Outcome: "refused", Reason: "E_i does not verify", Count: 4711},
	} {
		got := auditjson.AppendLine(nil, &r)
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

// TestSanitize: identities from the wire are printed as text only when
// they are printable UTF-8.
func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"alice":                 "alice",
		"Grüße-7":               "Grüße-7",
		"a\x1b[31mred":          "hex:611b5b33316d726564",
		"a\u202egnp.exe":        "hex:61e280ae676e702e657865",
		"\xff\xfe":              "hex:fffe",
		"tab\there":             "hex:7461620968657265",
		"":                      "",
		strings.Repeat("x", 70): strings.Repeat("x", 64) + "...",
	} {
		if got := auditjson.SanitizeID([]byte(in)); got != want {
			t.Errorf("SanitizeID(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSafe: Safe says when SanitizeID gives its input back unchanged.
func TestSafe(t *testing.T) {
	for _, in := range []string{"alice", "Grüße-7", "a\x1b[31mred", "\xff", "tab\there", "", strings.Repeat("x", 64), strings.Repeat("x", 65)} {
		if got, want := auditjson.Safe([]byte(in)), auditjson.SanitizeID([]byte(in)) == in; got != want {
			t.Errorf("Safe(%q) = %v, want %v", in, got, want)
		}
	}
}

// logRecord writes one audit record as a JSON line through slog: the
// reference that AppendLine, the one encoder of audit lines, must
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

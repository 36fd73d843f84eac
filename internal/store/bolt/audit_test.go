package bolt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	bbolt "go.etcd.io/bbolt"

	"github.com/tagauth/tagauth/internal/store"
)

// jsonForm is what a record read back as when records were stored as
// JSON: the reference the binary form must match.
func jsonForm(t testing.TB, r store.AuditRecord) store.AuditRecord {
	t.Helper()
	data, err := json.Marshal(auditRec{
		Time: norm(r.Time), Kind: r.Kind, Outcome: r.Outcome, Reason: r.Reason,
		User: r.User, Device: r.Device, Source: r.Source, KVUser: r.KVUser, KVDevice: r.KVDevice,
		LatencyUS: r.LatencyUS, Detail: r.Detail,
	})
	if err != nil {
		t.Fatal(err)
	}
	rr, err := readRun(data)
	if err != nil {
		t.Fatal(err)
	}
	out, err := rr.next()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// decodeAll reads every record of value v.
func decodeAll(v []byte) ([]store.AuditRecord, error) {
	rr, err := readRun(v)
	if err != nil {
		return nil, err
	}
	var out []store.AuditRecord
	for rr.count > 0 {
		r, err := rr.next()
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// encodeAll encodes recs and decodes them back, run by run.
func encodeAll(t testing.TB, recs []store.AuditRecord) (runs [][]byte, back []store.AuditRecord) {
	t.Helper()
	var e auditEncoder
	if err := e.encode(recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.runs {
		v := e.buf[r.start:r.end]
		got, err := decodeAll(v)
		if err != nil {
			t.Fatalf("decoding run %x: %v", v, err)
		}
		if len(got) != r.count {
			t.Fatalf("run of %d records decodes to %d", r.count, len(got))
		}
		runs = append(runs, v)
		back = append(back, got...)
	}
	return runs, back
}

// oddRecords are records at the edges of what a record holds.
func oddRecords() []store.AuditRecord {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return []store.AuditRecord{
		{},
		{Time: t0, Kind: "verify", Outcome: "ok", User: "alice", Device: "d", Source: "127.0.0.1:1", KVUser: 1, KVDevice: 2, LatencyUS: 12},
		// The same again: every string refers to the previous record.
		{Time: t0, Kind: "verify", Outcome: "ok", User: "alice", Device: "d", Source: "127.0.0.1:1", KVUser: 1, KVDevice: 2, LatencyUS: 12},
		// Back in time, in another zone, with nanoseconds to drop.
		{Time: t0.Add(-time.Hour - 999).In(time.FixedZone("x", 3600)), Kind: "verify", Outcome: "refused", Reason: "bad tag", User: "alice"},
		{Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), KVUser: 255, KVDevice: 255, LatencyUS: -1},
		{Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), LatencyUS: 1<<63 - 1},
		{Time: time.Date(1969, 12, 31, 23, 59, 59, 999999500, time.UTC), LatencyUS: -1 << 63},
		{Time: t0, Detail: strings.Repeat("long detail ", 100), Source: "[::1]:53"},
		// Invalid UTF-8, repeated, and then the same text made valid.
		{Time: t0, User: "a\xffb\xe2\x82c\xed\xa0\x80", Detail: "\x00\u2028<&>\uFFFD"},
		{Time: t0, User: "a\xffb\xe2\x82c\xed\xa0\x80", Detail: "\x00\u2028<&>\uFFFD"},
		{Time: t0, User: "a\uFFFDb\uFFFD\uFFFDc\uFFFD\uFFFD\uFFFD"},
		{Time: t0, Kind: "kind", Outcome: "outcome", Reason: "reason", User: "user", Device: "device", Source: "source", Detail: "detail"},
		{Time: t0},
	}
}

// The binary form reads back what the JSON form did.
func TestAuditBinaryMatchesJSON(t *testing.T) {
	recs := oddRecords()
	_, back := encodeAll(t, recs)
	for i, r := range recs {
		want := jsonForm(t, r)
		if !reflect.DeepEqual(back[i], want) {
			t.Errorf("record %d:\nbinary %#v\nJSON   %#v", i, back[i], want)
		}
		if !back[i].Time.Equal(norm(r.Time)) || back[i].Time.Location() != time.UTC {
			t.Errorf("record %d: time %v, want %v in UTC", i, back[i].Time, norm(r.Time))
		}
	}
}

// A run holds records up to maxRunBytes, and a long batch makes several.
func TestAuditRuns(t *testing.T) {
	recs := benchRecords()
	recs = append(recs, recs...)
	recs = append(recs, recs...)
	for i := range recs {
		recs[i].User = fmt.Sprint("user-", i%7)
	}
	const huge = 1500
	recs[huge].Detail = strings.Repeat("x", 3*maxRunBytes)
	var e auditEncoder
	if err := e.encode(recs); err != nil {
		t.Fatal(err)
	}
	if len(e.runs) < 3 {
		t.Fatalf("%d records in %d runs", len(recs), len(e.runs))
	}
	first := 0
	for i, r := range e.runs {
		// A run ends with the record that takes it to maxRunBytes.
		limit := maxRunBytes + 64
		if first <= huge && huge < first+r.count {
			limit += len(recs[huge].Detail)
		}
		if n := r.end - r.start; n > limit {
			t.Errorf("run %d is %d bytes", i, n)
		}
		first += r.count
	}
	_, back := encodeAll(t, recs)
	for i := range recs {
		if want := jsonForm(t, recs[i]); !reflect.DeepEqual(back[i], want) {
			t.Fatalf("record %d: %#v, want %#v", i, back[i], want)
		}
	}
	// The gateway's records take a dozen bytes or so each.
	if err := e.encode(benchRecords()); err != nil {
		t.Fatal(err)
	}
	if per := len(e.buf) / benchBatch; per > 16 {
		t.Errorf("a verify record takes %d bytes", per)
	}
}

func TestAppendAuditRefusesFarTimes(t *testing.T) {
	s := openTemp(t)
	for _, tm := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("behind", -3600)),
		time.Unix(1<<62, 0),
	} {
		good := store.AuditRecord{Time: time.Unix(1, 0), Kind: "key"}
		err := s.AppendAudit(ctx, good, store.AuditRecord{Time: tm, Kind: "verify"})
		if err == nil || !strings.Contains(err.Error(), "year outside of range") {
			t.Errorf("AppendAudit at %v: %v, want a year range error", tm, err)
		}
	}
	recs, _, err := s.QueryAudit(ctx, store.AuditFilter{})
	if err != nil || len(recs) != 0 {
		t.Fatalf("after refused appends: %d records, %v", len(recs), err)
	}
}

// putLegacy stores records as tagauth did before runs: one JSON value per
// sequence number.
func putLegacy(t *testing.T, s *Store, recs []store.AuditRecord) {
	t.Helper()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		for _, r := range recs {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			err = put(b, seqKey(seq), auditRec{
				Time: norm(r.Time), Kind: r.Kind, Outcome: r.Outcome, Reason: r.Reason,
				User: r.User, Device: r.Device, Source: r.Source, KVUser: r.KVUser, KVDevice: r.KVDevice,
				LatencyUS: r.LatencyUS, Detail: r.Detail,
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A store written before runs reads as it did, and new records follow its
// sequence numbers; a cursor anywhere, in a JSON record or inside a run,
// pages on correctly.
func TestAuditLegacyAndPaging(t *testing.T) {
	s := openTemp(t)
	var all []store.AuditRecord
	legacy := oddRecords()
	putLegacy(t, s, legacy)
	all = append(all, legacy...)
	batch := benchRecords()
	for i := range batch {
		batch[i].LatencyUS = int64(i)
		if i%100 == 0 {
			batch[i].Outcome = "refused"
		}
	}
	for _, n := range []int{1, 512, 3, 512} {
		if err := s.AppendAudit(ctx, batch[:n]...); err != nil {
			t.Fatal(err)
		}
		all = append(all, batch[:n]...)
	}
	more := oddRecords()
	if err := s.AppendAudit(ctx, more...); err != nil {
		t.Fatal(err)
	}
	all = append(all, more...)
	// Legacy records again after runs (a downgrade and upgrade).
	putLegacy(t, s, legacy[:3])
	all = append(all, legacy[:3]...)

	want := make([]store.AuditRecord, len(all))
	for i, r := range all {
		want[i] = jsonForm(t, r)
	}
	var got []store.AuditRecord
	var after uint64
	for {
		recs, seqs, err := s.QueryAudit(ctx, store.AuditFilter{After: after, Limit: store.MaxAuditLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for i, seq := range seqs {
			if seq != after+1 {
				t.Fatalf("sequence number %d after %d", seq, after)
			}
			after = seq
			got = append(got, recs[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("record %d: %#v, want %#v", i+1, got[i], want[i])
		}
	}

	// From every cursor, a small page with a filter.
	f := store.AuditFilter{Outcome: "refused", Limit: 3}
	for after := uint64(0); after <= uint64(len(want))+1; after++ {
		f.After = after
		recs, seqs, err := s.QueryAudit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var wantSeqs []uint64
		for i := after; i < uint64(len(want)) && len(wantSeqs) < f.Limit; i++ {
			if f.Match(&want[i]) {
				wantSeqs = append(wantSeqs, i+1)
			}
		}
		if !reflect.DeepEqual(seqs, wantSeqs) {
			t.Fatalf("after %d: sequence numbers %v, want %v", after, seqs, wantSeqs)
		}
		for i, seq := range seqs {
			if !reflect.DeepEqual(recs[i], want[seq-1]) {
				t.Fatalf("after %d: record %d differs", after, seq)
			}
		}
	}
}

// Damage to a stored value is an error, wherever it is: the reader
// never panics and never reads past the end.
func TestAuditCorruptRun(t *testing.T) {
	var e auditEncoder
	recs := oddRecords()
	if err := e.encode(recs); err != nil {
		t.Fatal(err)
	}
	if len(e.runs) != 1 || len(recs) > 127 {
		t.Fatal("oddRecords no longer make one run with a 1-byte count")
	}
	good := e.buf[e.runs[0].start:e.runs[0].end]
	records := good[2:] // after the format byte and the count
	format := good[0]
	bad := map[string][]byte{
		"empty":          {},
		"unknown format": append([]byte{0x03}, good[1:]...),
		"no records":     append([]byte{format, 0}, records...),
		"huge count":     {auditRun, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"count too high": append([]byte{format, byte(len(recs) + 1)}, records...),
		"trailing bytes": append(append([]byte(nil), good...), 0),
		// time 0, key versions, latency 0, a string of 2^64-2 bytes
		"string too long": append([]byte{auditRun, 1, 0, 0, 0, 0,
			0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "abc"...),
		// seven strings of 2 bytes each in 3 bytes
		"strings too long":  {auditRun, 1, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 'a', 'b', 'c'},
		"time out of range": binary.AppendVarint([]byte{auditRun, 1}, endAuditMicro),
		// a count past 32 bits
		"count out of range": {auditRunCount, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0},
		"bad JSON":           []byte(`{"t":`),
	}
	for n := range len(good) {
		if _, err := decodeAll(good[:n]); err == nil {
			t.Errorf("run truncated to %d bytes of %d decodes", n, len(good))
		}
	}
	for name, v := range bad {
		if _, err := decodeAll(v); err == nil {
			t.Errorf("%s: decodes", name)
		}
	}

	// In a store: ErrCorrupt, unless the damaged value holds one record,
	// before the cursor.
	oneRecord := map[string]bool{"string too long": true, "strings too long": true, "time out of range": true, "bad JSON": true, "count out of range": true}
	s := openTemp(t)
	if err := s.AppendAudit(ctx, recs[:2]...); err != nil {
		t.Fatal(err)
	}
	for name, v := range bad {
		err := s.db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bucketAudit)
			if err := b.SetSequence(1000); err != nil {
				return err
			}
			return b.Put(seqKey(100), v)
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, after := range []uint64{0, 99, 100, 101} {
			_, _, err = s.QueryAudit(ctx, store.AuditFilter{After: after})
			if oneRecord[name] && after >= 100 {
				if err != nil {
					t.Errorf("%s, after %d: %v", name, after, err)
				}
				continue
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "audit record 1") {
				t.Errorf("%s, after %d: %v, want ErrCorrupt naming the record", name, after, err)
			}
		}
	}
}

// A run's last sequence number must fit.
func TestAuditRunSeqOverflow(t *testing.T) {
	s := openTemp(t)
	var e auditEncoder
	if err := e.encode(oddRecords()[:3]); err != nil {
		t.Fatal(err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketAudit).Put(seqKey(1<<64-2), e.buf[e.runs[0].start:e.runs[0].end])
	})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.QueryAudit(ctx, store.AuditFilter{})
	checkCorrupt(t, s.Path(), err)
}

// Runs whose sequence numbers overlap (a damaged count or key) are
// corruption, not records returned twice.
func TestAuditOverlappingRuns(t *testing.T) {
	s := openTemp(t)
	var e auditEncoder
	if err := e.encode(oddRecords()[:3]); err != nil {
		t.Fatal(err)
	}
	run := e.buf[e.runs[0].start:e.runs[0].end]
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if err := b.Put(seqKey(1), run); err != nil { // records 1..3
			return err
		}
		return b.Put(seqKey(3), run) // records 3..5: 3 twice
	})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.QueryAudit(ctx, store.AuditFilter{})
	checkCorrupt(t, s.Path(), err)
}

// FuzzAuditRecord feeds stored audit values to the reader: it must never
// panic, and what it reads must encode and read back the same.
func FuzzAuditRecord(f *testing.F) {
	var e auditEncoder
	if err := e.encode(oddRecords()); err != nil {
		f.Fatal(err)
	}
	for _, r := range e.runs {
		f.Add(e.buf[r.start:r.end])
	}
	if err := e.encode(benchRecords()[:20]); err != nil {
		f.Fatal(err)
	}
	f.Add(e.buf[e.runs[0].start:e.runs[0].end])
	old, _ := json.Marshal(auditRec{Time: time.Unix(1, 0).UTC(), Kind: "verify", User: "alice"})
	f.Add(old)
	f.Add([]byte{auditRun, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{auditRunCount, 1, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0})
	f.Add(legacyRun(oddRecords()[:4]))
	f.Fuzz(func(t *testing.T, v []byte) {
		recs, err := decodeAll(v)
		if err != nil {
			return
		}
		if len(v) > 0 && v[0] == auditJSON {
			return // encoding/json's business
		}
		for _, r := range recs {
			for _, s := range strs(&r) {
				if !utf8.ValidString(s) {
					return // stored replaced: not the same strings
				}
			}
		}
		var e auditEncoder
		if err := e.encode(recs); err != nil {
			t.Fatalf("decoded records do not encode: %v", err)
		}
		var again []store.AuditRecord
		for _, r := range e.runs {
			got, err := decodeAll(e.buf[r.start:r.end])
			if err != nil {
				t.Fatalf("re-encoded records do not decode: %v", err)
			}
			again = append(again, got...)
		}
		if !reflect.DeepEqual(recs, again) {
			t.Fatalf("round trip:\n%#v\n%#v", recs, again)
		}
	})
}

// A store written by a tagauth from before runs (schema 1, JSON audit
// values) opens, reads its records as before, takes new ones after them,
// and is marked schema 3 so that such a tagauth refuses it from then on.
func TestAuditUpgradeFromV1(t *testing.T) {
	s := openTemp(t)
	path := s.Path()
	legacy := oddRecords()
	putLegacy(t, s, legacy)
	err := s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("1")) })
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(path)
	if err != nil {
		t.Fatalf("open of a schema 1 store: %v", err)
	}
	defer s.Close()
	err = s.db.View(func(tx *bbolt.Tx) error {
		if v := string(tx.Bucket(bucketMeta).Get(keySchema)); v != "3" {
			return fmt.Errorf("schema %q after open, want 3", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, legacy[1:3]...); err != nil {
		t.Fatal(err)
	}
	recs, seqs, err := s.QueryAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	want := append(legacy, legacy[1:3]...)
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i := range want {
		if seqs[i] != uint64(i+1) || !reflect.DeepEqual(recs[i], jsonForm(t, want[i])) {
			t.Fatalf("record %d (seq %d): %#v, want %#v", i+1, seqs[i], recs[i], jsonForm(t, want[i]))
		}
	}
}

// legacyRun encodes recs as a schema 2 run (format 0x01, no counts), every
// string spelled out: the form tagauth wrote before counts.
func legacyRun(recs []store.AuditRecord) []byte {
	v := binary.AppendUvarint([]byte{auditRun}, uint64(len(recs)))
	prev := int64(0)
	for i := range recs {
		r := &recs[i]
		micro := r.Time.UnixMicro()
		v = binary.AppendVarint(v, micro-prev)
		prev = micro
		v = append(v, r.KVUser, r.KVDevice)
		v = binary.AppendVarint(v, r.LatencyUS)
		for _, s := range strs(r) {
			v = binary.AppendUvarint(v, uint64(len(s))+1)
		}
		for _, s := range strs(r) {
			v = append(v, s...)
		}
	}
	return v
}

// A schema 2 store (runs without counts) opens, reads its records with
// Count 0, is marked 3, and takes counted records after them.
func TestAuditUpgradeFromV2(t *testing.T) {
	s := openTemp(t)
	path := s.Path()
	var old []store.AuditRecord
	for _, r := range benchRecords()[:10] {
		r.Count = 0
		old = append(old, r)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if err := b.SetSequence(uint64(len(old))); err != nil {
			return err
		}
		if err := b.Put(seqKey(1), legacyRun(old)); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("2"))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatalf("open of a schema 2 store: %v", err)
	}
	defer s.Close()
	counted := old[0]
	counted.Count = 70000
	if err := s.AppendAudit(ctx, counted); err != nil {
		t.Fatal(err)
	}
	recs, _, err := s.QueryAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]store.AuditRecord(nil), old...), counted)
	if !reflect.DeepEqual(recs, want) {
		t.Fatalf("records after the upgrade:\n%#v\nwant\n%#v", recs, want)
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		if v := string(tx.Bucket(bucketMeta).Get(keySchema)); v != "3" {
			return fmt.Errorf("schema %q after open, want 3", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package auditlog

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func rec(i int) store.AuditRecord {
	return store.AuditRecord{Time: t0.Add(time.Duration(i) * time.Millisecond), Kind: "verify", Outcome: "ok",
		User: fmt.Sprint("user-", i), Device: "dev-1", Source: "192.0.2.1:5683", KVUser: 1, KVDevice: 2, LatencyUS: int64(i)}
}

func openResumed(t *testing.T, dir string, s Sync) (*Journal, []Entry) {
	t.Helper()
	j, got, damaged, err := Open(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(damaged) > 0 {
		t.Logf("damaged: %v", damaged)
	}
	if err := j.Resume(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, got
}

func appendN(t *testing.T, j *Journal, from, n int) {
	t.Helper()
	var b Batch
	for i := from; i < from+n; i++ {
		r := rec(i)
		if i%2 == 0 {
			b.Add(&r)
		} else {
			b.AddRaw(&r, []byte(r.User), []byte(r.Device), netip.MustParseAddrPort(r.Source))
		}
	}
	first, last, err := j.Append(&b)
	if err != nil {
		t.Fatal(err)
	}
	if last-first+1 != uint64(n) {
		t.Fatalf("Append of %d records numbered %d..%d", n, first, last)
	}
}

func checkEntries(t *testing.T, got []Entry, from, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d records recovered, want %d", len(got), n)
	}
	for i, e := range got {
		want := rec(from + i)
		if e.Seq != uint64(from+i+1) || !reflect.DeepEqual(e.Rec, want) {
			t.Fatalf("record %d: %d %+v, want %d %+v", i, e.Seq, e.Rec, from+i+1, want)
		}
	}
}

// What was appended is read back at the next open, in order, with its
// sequence numbers, whatever the sync policy.
func TestJournalRoundTrip(t *testing.T) {
	for _, s := range []string{"off", "always", "1ms"} {
		t.Run(s, func(t *testing.T) {
			pol, err := ParseSync(s)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			j, got := openResumed(t, dir, pol)
			if len(got) != 0 {
				t.Fatalf("new journal holds %d records", len(got))
			}
			appendN(t, j, 0, 5)
			appendN(t, j, 5, 1)
			id := j.ID()
			j.Close()
			j2, got := openResumed(t, dir, pol)
			checkEntries(t, got, 0, 6)
			if j2.ID() != id {
				t.Fatalf("id changed from %s to %s", id, j2.ID())
			}
			appendN(t, j2, 6, 2) // numbered after the recovered ones
			j2.Close()
			_, got = openResumed(t, dir, pol)
			checkEntries(t, got, 0, 8)
		})
	}
}

// A crash in the middle of a write leaves a torn last frame: every record
// before it is recovered, the torn one is reported and dropped, and the
// journal goes on after it.
func TestJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	j, _ := openResumed(t, dir, Sync{})
	appendN(t, j, 0, 3)
	appendN(t, j, 3, 1)
	j.Close()
	seg := onlySegment(t, dir)
	full, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	r := rec(3)
	b.AddRaw(&r, []byte(r.User), []byte(r.Device), netip.MustParseAddrPort(r.Source))
	lastLen := len(b.buf)
	for cut := 1; cut < lastLen; cut++ {
		torn := full[:len(full)-cut]
		if err := os.WriteFile(seg, torn, 0o600); err != nil {
			t.Fatal(err)
		}
		j, got, damaged, err := Open(dir, Sync{})
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		checkEntries(t, got, 0, 3)
		if len(damaged) != 1 || !strings.Contains(damaged[0], "torn") {
			t.Fatalf("cut %d: damaged %v, want one torn frame", cut, damaged)
		}
		j.Close()
	}
	// A flipped bit in the last record: its CRC fails, the rest stands.
	flip := append([]byte(nil), full...)
	flip[len(flip)-2] ^= 0x10
	os.WriteFile(seg, flip, 0o600)
	j2, got, damaged, err := Open(dir, Sync{})
	if err != nil || len(damaged) != 1 {
		t.Fatalf("flipped bit: %v %v", err, damaged)
	}
	checkEntries(t, got, 0, 3)
	if err := j2.Resume(0); err != nil {
		t.Fatal(err)
	}
	appendN(t, j2, 3, 1) // gets 4, after the 3 recovered
	j2.Close()
	_, got, _, _ = Open(dir, Sync{})
	if len(got) != 4 || got[3].Seq != 4 {
		t.Fatalf("after a torn tail, appends are numbered on: %+v", got)
	}
}

func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(m) != 1 {
		t.Fatalf("segments %v, want one", m)
	}
	return m[0]
}

// Ingested deletes the segments whose records the store holds, never the
// current one; a restart then numbers on after the store's mark.
func TestJournalIngested(t *testing.T) {
	dir := t.TempDir()
	j, _ := openResumed(t, dir, Sync{})
	appendN(t, j, 0, 3)
	j.mu.Lock()
	j.size = SegmentSize // the next append starts a segment
	j.mu.Unlock()
	appendN(t, j, 3, 3)
	if n := j.Segments(); n != 2 {
		t.Fatalf("%d segments, want 2", n)
	}
	if err := j.Ingested(2); err != nil || j.Segments() != 2 {
		t.Fatalf("Ingested(2): %v, %d segments, want 2 (record 3 is in the first)", err, j.Segments())
	}
	if err := j.Ingested(3); err != nil || j.Segments() != 1 {
		t.Fatalf("Ingested(3): %v, %d segments, want 1", err, j.Segments())
	}
	if err := j.Ingested(6); err != nil || j.Segments() != 1 {
		t.Fatalf("Ingested(6): %v, %d segments, want the current one", err, j.Segments())
	}
	j.Close()
	for _, m := range []string{"0000000000000001.seg"} {
		if _, err := os.Stat(filepath.Join(dir, m)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s still there: %v", m, err)
		}
	}
	// All segments gone (an operator removed them): the store's mark
	// keeps the numbers going up.
	for _, m := range mustGlob(t, dir) {
		os.Remove(m)
	}
	j3, got, _, err := Open(dir, Sync{})
	if err != nil || len(got) != 0 {
		t.Fatal(err, got)
	}
	if err := j3.Resume(40); err != nil {
		t.Fatal(err)
	}
	defer j3.Close()
	var b Batch
	r := rec(0)
	b.Add(&r)
	if first, _, err := j3.Append(&b); err != nil || first != 41 {
		t.Fatalf("first number after mark 40: %d, %v", first, err)
	}
}

func mustGlob(t *testing.T, dir string) []string {
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A full disk (writes to /dev/full fail with ENOSPC) fails the append
// with ErrFull and appends nothing; once space is back the journal goes
// on with the next number.
func TestJournalFullDisk(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full here (%v): the full-disk test needs Linux", err)
	}
	dir := t.TempDir()
	j, _ := openResumed(t, dir, Sync{})
	appendN(t, j, 0, 2)
	j.mu.Lock()
	good := j.f
	j.f = full
	j.mu.Unlock()
	var b Batch
	r := rec(2)
	b.Add(&r)
	if _, _, err := j.Append(&b); !errors.Is(err, ErrFull) {
		t.Fatalf("Append on a full disk: %v, want ErrFull", err)
	}
	j.mu.Lock()
	j.f = good
	j.mu.Unlock()
	full.Close()
	b.Reset()
	b.Add(&r)
	if first, _, err := j.Append(&b); err != nil || first != 3 {
		t.Fatalf("Append after space returned: %d, %v", first, err)
	}
	j.Close()
	_, got, damaged, _ := Open(dir, Sync{})
	if len(damaged) != 0 {
		t.Fatalf("damaged: %v", damaged)
	}
	checkEntries(t, got, 0, 3)
}

func TestParseSync(t *testing.T) {
	for in, want := range map[string]Sync{"off": {}, "always": {Mode: SyncAlways}, "10ms": {Mode: SyncInterval, Interval: 10 * time.Millisecond}} {
		got, err := ParseSync(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseSync(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"10", "1ns", "5s", "sometimes"} {
		if _, err := ParseSync(bad); err == nil {
			t.Errorf("ParseSync(%q) accepted", bad)
		}
	}
}

// A segment that is not a journal's is refused, not read as records.
func TestJournalForeignFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "0000000000000001.seg"), []byte("hello, this is not a journal"), 0o600)
	if _, _, _, err := Open(dir, Sync{}); err == nil {
		t.Fatal("a foreign segment file was accepted")
	}
}

// FuzzScan feeds arbitrary bytes to the frame decoder: it never panics,
// consumes only whole frames, and what it decodes encodes and decodes back
// the same.
func FuzzScan(f *testing.F) {
	var b Batch
	for i := range 3 {
		r := rec(i)
		r.Count = uint32(i * 1000)
		r.Detail = strings.Repeat("é", i)
		b.Add(&r)
	}
	b.seal(1)
	f.Add(b.buf)
	f.Add(b.buf[:len(b.buf)-3])
	f.Add([]byte{9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []Entry
		n, err := Scan(data, func(e Entry) { got = append(got, e) })
		if n < 0 || n > len(data) || (err == nil && n != len(data)) {
			t.Fatalf("Scan consumed %d of %d bytes, err %v", n, len(data), err)
		}
		var again Batch
		for _, e := range got {
			again.Add(&e.Rec)
		}
		seq := uint64(0)
		if len(got) > 0 {
			seq = got[0].Seq
		}
		again.seal(seq)
		var back []Entry
		if _, err := Scan(again.buf, func(e Entry) { back = append(back, e) }); err != nil {
			t.Fatalf("re-encoded records do not decode: %v", err)
		}
		for i := range got {
			if !reflect.DeepEqual(got[i].Rec, back[i].Rec) {
				t.Fatalf("round trip of record %d:\n%#v\n%#v", i, got[i].Rec, back[i].Rec)
			}
		}
	})
}

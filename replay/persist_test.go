package replay_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// TestSnapshotCarriesEntriesAcrossRestart: a key seen by one process is
// still a replay for the next one after a clean shutdown.
func TestSnapshotCarriesEntriesAcrossRestart(t *testing.T) {
	ctx := context.Background()
	a := replay.New(64)
	var live, expired protocol.ReplayKey
	live[1], expired[1] = 1, 2
	if ok, _ := a.Insert(ctx, live, 20_000, 1_000); !ok {
		t.Fatal("first insert refused")
	}
	if ok, _ := a.Insert(ctx, expired, 1_500, 1_000); !ok {
		t.Fatal("first insert refused")
	}
	var buf bytes.Buffer
	if err := a.Save(&buf, 2_000); err != nil {
		t.Fatal(err)
	}
	b := replay.New(64)
	if err := b.Restore(bytes.NewReader(buf.Bytes()), 2_000); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Insert(ctx, live, 20_000, 2_001); ok || err != nil {
		t.Fatalf("restored key inserted again: fresh=%v err=%v", ok, err)
	}
	if b.Len() != 1 {
		t.Fatalf("restored %d entries, want only the live one", b.Len())
	}
	// The restored entry keeps its expiry.
	if ok, err := b.Insert(ctx, live, 40_000, 20_000); ok || err != nil {
		t.Fatalf("restored key at its last moment: fresh=%v err=%v", ok, err)
	}
	if ok, err := b.Insert(ctx, live, 40_000, 20_001); !ok || err != nil {
		t.Fatalf("restored key after its expiry: fresh=%v err=%v", ok, err)
	}
}

// TestSnapshotManyEntries: every live entry survives, across two restarts
// (the restored cache saves with the secret it adopted), and only those.
func TestSnapshotManyEntries(t *testing.T) {
	ctx := context.Background()
	a := replay.New(4096)
	const n = 2000
	for i := range uint64(n) {
		// Odd keys expire before the save.
		exp := uint64(50_000)
		if i%2 == 1 {
			exp = 1_500
		}
		insert(t, a, key(i), exp, 1_000)
	}
	c := a
	for restart := range 2 {
		var buf bytes.Buffer
		if err := c.Save(&buf, 2_000+uint64(restart)); err != nil {
			t.Fatal(err)
		}
		c = replay.New(4096)
		if err := c.Restore(&buf, 2_000+uint64(restart)); err != nil {
			t.Fatal(err)
		}
		if c.Len() != n/2 {
			t.Fatalf("restart %d: Len %d, want %d", restart, c.Len(), n/2)
		}
	}
	for i := range uint64(n) {
		fresh, err := c.Insert(ctx, key(i), 60_000, 3_000)
		if err != nil {
			t.Fatal(err)
		}
		if fresh != (i%2 == 1) {
			t.Fatalf("key %d after two restarts: fresh=%v", i, fresh)
		}
	}
}

func snapshot(t *testing.T) []byte {
	t.Helper()
	a := replay.New(64)
	for i := range uint64(3) {
		insert(t, a, key(i), 20_000, 1_000)
	}
	var buf bytes.Buffer
	if err := a.Save(&buf, 1_000); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// restoreFails checks that Restore refuses data and leaves the cache
// empty and usable.
func restoreFails(t *testing.T, data []byte, what string) {
	t.Helper()
	c := replay.New(64)
	if err := c.Restore(bytes.NewReader(data), 1_000); err == nil {
		t.Fatalf("%s accepted", what)
	}
	if c.Len() != 0 {
		t.Fatalf("%s: refused but restored %d entries", what, c.Len())
	}
	if !insert(t, c, key(0), 20_000, 1_000) {
		t.Fatalf("%s: cache unusable after a refused snapshot", what)
	}
}

// TestRestoreRefusesDamage: a snapshot cut short anywhere, even at a
// record boundary, or with any byte changed, is refused as a whole; never
// a panic, never a partial restore.
func TestRestoreRefusesDamage(t *testing.T) {
	data := snapshot(t)
	for n := range len(data) {
		restoreFails(t, data[:n], "snapshot truncated to "+strconv.Itoa(n)+" bytes")
	}
	for i := range data {
		garbled := bytes.Clone(data)
		garbled[i] ^= 0x10
		restoreFails(t, garbled, "snapshot with byte "+strconv.Itoa(i)+" changed")
	}
	restoreFails(t, append(bytes.Clone(data), 0), "snapshot with a byte appended")
}

// TestRestoreRefusesVersion1: the format before digests held the keys
// themselves; it cannot be read back (the caller fences instead).
func TestRestoreRefusesVersion1(t *testing.T) {
	v1 := "tagauth-replay-1\n" + strings.Repeat("\x00", 7) + "\x01" + strings.Repeat("k", protocol.ReplayKeySize)
	c := replay.New(64)
	err := c.Restore(strings.NewReader(v1), 0)
	if err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("version 1 snapshot: %v", err)
	}
	restoreFails(t, []byte(v1), "version 1 snapshot")
}

// TestRestoreNeedsUnusedCache: Restore adopts the snapshot's digest
// secret, which would orphan the entries of a cache already in use.
func TestRestoreNeedsUnusedCache(t *testing.T) {
	data := snapshot(t)
	c := replay.New(64)
	insert(t, c, key(99), 20_000, 1_000)
	if err := c.Restore(bytes.NewReader(data), 1_000); err == nil {
		t.Fatal("Restore into a used cache accepted")
	}
	if insert(t, c, key(99), 20_000, 1_000) {
		t.Fatal("refused Restore lost the cache's own entry")
	}
	c = replay.New(64)
	if err := c.Restore(bytes.NewReader(data), 1_000); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(bytes.NewReader(data), 1_000); err == nil {
		t.Fatal("second Restore accepted")
	}
}

// TestRestoreIntoSmallerCache: entries that do not fit are an error (the
// caller then fences), never silently dropped.
func TestRestoreIntoSmallerCache(t *testing.T) {
	a := replay.New(1024)
	for i := range uint64(200) {
		insert(t, a, key(i), 20_000, 1_000)
	}
	var buf bytes.Buffer
	if err := a.Save(&buf, 1_000); err != nil {
		t.Fatal(err)
	}
	c := replay.New(16)
	if err := c.Restore(&buf, 1_000); !errors.Is(err, protocol.ReasonCacheFull) {
		t.Fatalf("Restore of 200 entries into 16: %v, want ReasonCacheFull", err)
	}
}

func TestFence(t *testing.T) {
	c := replay.New(64)
	c.Fence(30_000)
	var k protocol.ReplayKey
	if ok, err := c.Insert(context.Background(), k, 30_000, 10_000); ok || !errors.Is(err, replay.ErrFenced) || !errors.Is(err, protocol.ErrBusy) {
		t.Fatalf("fenced key: fresh=%v err=%v; want ErrFenced (busy)", ok, err)
	}
	if ok, err := c.Insert(context.Background(), k, 30_001, 10_000); !ok || err != nil {
		t.Fatalf("key after the fence: fresh=%v err=%v", ok, err)
	}
}

// FuzzRestore feeds snapshot files to Restore, which reads them from disk
// after a restart: damaged ones must be refused without a panic, and one
// that is accepted must save and restore again to the same entries.
func FuzzRestore(f *testing.F) {
	ctx := context.Background()
	c := replay.New(64)
	for i := range 5 {
		var k protocol.ReplayKey
		k[1] = byte(i)
		c.Insert(ctx, k, 20_000+uint64(i), 1_000)
	}
	var good bytes.Buffer
	if err := c.Save(&good, 2_000); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:good.Len()-1])
	f.Add([]byte("tagauth-replay-1\n"))
	f.Fuzz(func(t *testing.T, snap []byte) {
		a := replay.New(64)
		if err := a.Restore(bytes.NewReader(snap), 2_000); err != nil {
			return
		}
		var again bytes.Buffer
		if err := a.Save(&again, 2_000); err != nil {
			t.Fatal(err)
		}
		b := replay.New(64)
		if err := b.Restore(bytes.NewReader(again.Bytes()), 2_000); err != nil {
			t.Fatalf("a saved restored snapshot is refused: %v", err)
		}
		if a.Len() != b.Len() {
			t.Fatalf("%d entries restored, %d after saving and restoring again", a.Len(), b.Len())
		}
	})
}

package replay_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

var _ protocol.ReplayCache = (*replay.Cache)(nil)

// key returns a distinct key per n, in the layout's discriminator part.
func key(n uint64) protocol.ReplayKey {
	var k protocol.ReplayKey
	k[0] = 0x02
	binary.BigEndian.PutUint64(k[len(k)-8:], n)
	return k
}

func insert(t *testing.T, c *replay.Cache, k protocol.ReplayKey, expires, now uint64) bool {
	t.Helper()
	fresh, err := c.Insert(context.Background(), k, expires, now)
	if err != nil {
		t.Fatalf("Insert(expires %d, now %d): %v", expires, now, err)
	}
	return fresh
}

func TestInsertIfAbsent(t *testing.T) {
	c := replay.New(64)
	if !insert(t, c, key(1), 1000, 10) {
		t.Fatal("first insert not fresh")
	}
	for _, now := range []uint64{10, 11, 500} {
		if insert(t, c, key(1), 1000, now) {
			t.Fatalf("second insert at %d reported fresh", now)
		}
	}
	// A later attempt with another expiry is still the same login.
	if insert(t, c, key(1), 5000, 20) {
		t.Fatal("re-insert with a later expiry reported fresh")
	}
	if !insert(t, c, key(2), 1000, 10) {
		t.Fatal("another key not fresh")
	}
	// Keys differing only in the domain byte are different keys.
	k := key(1)
	k[0] = 0x03
	if !insert(t, c, k, 1000, 10) {
		t.Fatal("key of another domain collided")
	}
}

// TestEntryLifetime: an entry lives while now <= expires (spec section 7:
// kept until now > T1 + dT) and is gone after.
func TestEntryLifetime(t *testing.T) {
	c := replay.New(64)
	insert(t, c, key(1), 1000, 0)
	if insert(t, c, key(1), 1000, 1000) {
		t.Fatal("entry gone at now == expires")
	}
	if !insert(t, c, key(1), 3000, 1001) {
		t.Fatal("entry still there at now == expires + 1")
	}
	// The re-insert has the new expiry.
	if insert(t, c, key(1), 3000, 3000) {
		t.Fatal("re-inserted entry gone early")
	}
	if !insert(t, c, key(1), 9000, 3001) {
		t.Fatal("re-inserted entry kept past its expiry")
	}
}

// fill inserts distinct keys, all expiring at expires, until the cache
// has refused many in a row, and returns the accepted keys. Every refusal
// must be ReasonCacheFull.
func fill(t *testing.T, c *replay.Cache, from uint64, expires, now uint64) []protocol.ReplayKey {
	t.Helper()
	var kept []protocol.ReplayKey
	refused := 0
	for n := from; refused < 2000; n++ {
		fresh, err := c.Insert(context.Background(), key(n), expires, now)
		switch {
		case err != nil:
			if !errors.Is(err, protocol.ReasonCacheFull) || !errors.Is(err, protocol.ErrBusy) {
				t.Fatalf("refusal is %v, want ReasonCacheFull (busy)", err)
			}
			if fresh {
				t.Fatal("refused insert reported fresh")
			}
			refused++
		case fresh:
			kept = append(kept, key(n))
		default:
			t.Fatalf("distinct key %d reported as seen", n)
		}
	}
	return kept
}

func TestCapacity(t *testing.T) {
	for _, tc := range []struct{ capacity, want int }{{64, 64}, {50, 64}, {1, 16}} {
		c := replay.New(tc.capacity)
		kept := fill(t, c, 0, 1000, 0)
		if len(kept) != tc.want || c.Len() != tc.want {
			t.Fatalf("New(%d) held %d (Len %d), want %d", tc.capacity, len(kept), c.Len(), tc.want)
		}
		// Full, it never evicts an unexpired entry: each is still seen,
		// up to its last moment.
		for _, now := range []uint64{500, 1000} {
			for _, k := range kept {
				if insert(t, c, k, 1000, now) {
					t.Fatalf("New(%d): entry forgotten while full at %d", tc.capacity, now)
				}
			}
		}
		// Once they have expired they make room.
		more := fill(t, c, 1<<32, 5000, 2000)
		if len(more) != tc.want {
			t.Fatalf("New(%d): %d new entries after expiry, want %d", tc.capacity, len(more), tc.want)
		}
		for _, k := range kept {
			if _, err := c.Insert(context.Background(), k, 5000, 2000); !errors.Is(err, protocol.ReasonCacheFull) {
				t.Fatalf("New(%d): expired key neither refused for room nor kept: %v", tc.capacity, err)
			}
		}
	}
}

// TestExpiredMakeRoomAtOnce: the package promises to refuse only when
// full of unexpired entries, so the first millisecond after every entry
// expired must already have room.
func TestExpiredMakeRoomAtOnce(t *testing.T) {
	for _, expires := range []uint64{1000, 1023, 1024, 1087} {
		c := replay.New(16)
		kept := fill(t, c, 0, expires, 0)
		if len(kept) != 16 {
			t.Fatalf("held %d, want 16", len(kept))
		}
		more := fill(t, c, 1<<32, expires+10_000, expires+1)
		if len(more) != 16 {
			t.Errorf("expires %d: at expires+1 only %d of 16 slots were free", expires, len(more))
		}
	}
}

func TestLenDropsAfterPurge(t *testing.T) {
	c := replay.New(1 << 12)
	for n := range uint64(100) {
		insert(t, c, key(n), 1000, 0)
	}
	if c.Len() != 100 {
		t.Fatalf("Len %d, want 100", c.Len())
	}
	// Expired entries are dropped by later inserts into their shard;
	// insert until every shard has seen one (Len then counts only the new).
	now := uint64(100_000)
	n := uint64(1 << 32)
	for inserted := 1; ; inserted++ {
		insert(t, c, key(n), now+1000, now)
		n++
		if c.Len() == inserted {
			break
		}
		if inserted > 10_000 {
			t.Fatalf("expired entries never dropped: Len %d after %d new", c.Len(), inserted)
		}
	}
}

// TestConcurrentInsert: of many simultaneous inserts of one key exactly
// one is fresh. Run with -race.
func TestConcurrentInsert(t *testing.T) {
	c := replay.New(1 << 12)
	const goroutines = 32
	for round := range uint64(50) {
		var fresh atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ok, err := c.Insert(context.Background(), key(round), 1000, 0)
				if err != nil {
					t.Error(err)
				}
				if ok {
					fresh.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if n := fresh.Load(); n != 1 {
			t.Fatalf("round %d: %d of %d concurrent inserts fresh", round, n, goroutines)
		}
	}
	if c.Len() != 50 {
		t.Fatalf("Len %d, want 50", c.Len())
	}
}

// TestMemoryPerEntry: the cache keeps a 16-byte digest per key, not the
// 98-byte key, in a compact table; see BenchmarkMemory for the figure
// (about 64 bytes per entry at 500 000 entries; the key alone is 98).
func TestMemoryPerEntry(t *testing.T) {
	if per := bytesPerEntry(t, 200_000); per > 100 {
		t.Fatalf("%.0f heap bytes per entry, want at most 100", per)
	}
}

package replay

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// TestDigestIsKeyed: the digest depends on the cache's secret, so that
// an outsider cannot compute it; one cache always gives one digest for
// one key; a restored cache adopts the digests of the one it restores.
func TestDigestIsKeyed(t *testing.T) {
	var k protocol.ReplayKey
	k[0], k[50] = 2, 7
	a, b := New(16), New(16)
	alo, ahi := a.digest(&k)
	blo, bhi := b.digest(&k)
	if alo == blo || ahi == bhi {
		t.Fatalf("two caches, one digest: %x%x", alo, ahi)
	}
	if alo == ahi {
		t.Fatal("the halves of the digest are equal")
	}
	if lo, hi := a.digest(&k); lo != alo || hi != ahi {
		t.Fatal("one cache, two digests for one key")
	}
	var buf bytes.Buffer
	if err := a.Save(&buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(&buf, 0); err != nil {
		t.Fatal(err)
	}
	if lo, hi := b.digest(&k); lo != alo || hi != ahi {
		t.Fatal("restored cache did not adopt the saved secret")
	}
}

type digest struct{ lo, hi uint64 }

// checkShard verifies the shard's invariants: n counts the occupied
// slots, each digest is reachable from its home slot and held once, and
// each entry is filed in the bucket of its expiry (or purge would never
// drop it).
func checkShard(t *testing.T, s *shard) {
	t.Helper()
	seen := make(map[digest]bool)
	n := 0
	for i, e := range s.slots {
		if e.expires == 0 {
			continue
		}
		n++
		d := digest{e.lo, e.hi}
		if seen[d] {
			t.Fatalf("digest %x held twice", d)
		}
		seen[d] = true
		if j, ok := s.find(e.lo, e.hi); !ok || j != i {
			t.Fatalf("slot %d unreachable from its home slot", i)
		}
		b := s.buckets[e.expires/granularity]
		if b == nil || !slices.Contains(b.lo, e.lo) {
			t.Fatalf("entry expiring at %d missing from its bucket", e.expires)
		}
	}
	if n != s.n {
		t.Fatalf("n %d, %d slots occupied", s.n, n)
	}
	if s.n*4 > len(s.slots)*3 {
		t.Fatalf("%d entries in %d slots", s.n, len(s.slots))
	}
}

// TestShardAgainstModel drives a shard with random inserts of digests
// that crowd a few home slots (long probe runs, wrap-around, digests that
// share their lo half) and compares every answer with a plain map: an
// entry lives while now <= expires, a refusal for room happens only when
// the shard is full of live entries, and the shard never holds more.
func TestShardAgainstModel(t *testing.T) {
	for _, capacity := range []int{1 << 30, 50} {
		rng := rand.New(rand.NewPCG(uint64(capacity), 1))
		universe := make([]digest, 2000)
		for i := range universe {
			lo := rng.Uint64N(300)
			if rng.IntN(4) == 0 {
				lo |= 1 << 63
			}
			universe[i] = digest{lo, rng.Uint64N(3)}
		}
		var s shard
		s.init(capacity)
		model := make(map[digest]uint64)
		now := uint64(1_000)
		for step := range 60_000 {
			switch r := rng.IntN(1000); {
			case r == 0:
				now += 5_000 // a jump past every expiry
			case r < 300:
				now += rng.Uint64N(20)
			}
			d := universe[rng.IntN(len(universe))]
			exp := now + rng.Uint64N(400)
			if rng.IntN(50) == 0 {
				exp = now - rng.Uint64N(100) // dead on arrival
			}
			old, ok := model[d]
			seen := ok && old >= now
			fresh, err := s.insert(d.lo, d.hi, exp, now)
			switch {
			case errors.Is(err, protocol.ReasonCacheFull):
				live := 0
				for _, e := range model {
					if e >= now {
						live++
					}
				}
				if seen || live < capacity {
					t.Fatalf("step %d: refused for room with %d live of %d (seen %v)", step, live, capacity, seen)
				}
			case err != nil:
				t.Fatal(err)
			case fresh == seen:
				t.Fatalf("step %d: fresh %v, model says seen %v", step, fresh, seen)
			case fresh:
				model[d] = exp
			}
			if s.n > capacity {
				t.Fatalf("step %d: %d entries, capacity %d", step, s.n, capacity)
			}
			if step%97 == 0 {
				checkShard(t, &s)
			}
		}
		checkShard(t, &s)
	}
}

// TestShardSweepAfterDeadEntry: a full shard that swept at some time may
// skip sweeping again at that time, but not once an entry already expired
// was added since.
func TestShardSweepAfterDeadEntry(t *testing.T) {
	var s shard
	s.init(3)
	mustInsert := func(lo, exp, now uint64, want bool) {
		t.Helper()
		fresh, err := s.insert(lo, 0, exp, now)
		if err != nil && !errors.Is(err, protocol.ReasonCacheFull) {
			t.Fatal(err)
		}
		if fresh != want {
			t.Fatalf("insert %d (expires %d) at %d: fresh %v, err %v", lo, exp, now, fresh, err)
		}
	}
	mustInsert(1, 95, 0, true)
	mustInsert(2, 95, 0, true)
	mustInsert(3, 1000, 0, true)
	mustInsert(4, 1000, 96, true) // full: the sweep at 96 drops 1 and 2
	mustInsert(5, 90, 96, true)   // dead on arrival, in the bucket of 96
	mustInsert(6, 1000, 96, true) // full again: 5 must be swept
	mustInsert(7, 1000, 96, false)
}

// TestShardGivesMemoryBack: after a burst expires, the table shrinks.
func TestShardGivesMemoryBack(t *testing.T) {
	var s shard
	s.init(1 << 20)
	for lo := range uint64(10_000) {
		if fresh, err := s.insert(lo*0x9e3779b97f4a7c15, 0, 2_000, 1_000); !fresh || err != nil {
			t.Fatal("insert refused", err)
		}
	}
	big := len(s.slots)
	if fresh, _ := s.insert(1, 1, 20_000, 10_000); !fresh {
		t.Fatal("insert refused")
	}
	if s.n != 1 || len(s.slots) != minSlots {
		t.Fatalf("after the burst: %d entries in %d slots (%d before)", s.n, len(s.slots), big)
	}
	checkShard(t, &s)
}

// TestDigestIsCBCMAC: the digest is the last block of AES-CBC under the
// secret with a zero IV over the key zero-padded to whole blocks, computed
// here with crypto/cipher's CBC mode, not the cache's loop.
func TestDigestIsCBCMAC(t *testing.T) {
	c := New(16)
	var key protocol.ReplayKey
	for i := range key {
		key[i] = byte(7*i + 1)
	}
	block, err := aes.NewCipher(c.secret[:])
	if err != nil {
		t.Fatal(err)
	}
	padded := make([]byte, (len(key)+aes.BlockSize-1)/aes.BlockSize*aes.BlockSize)
	copy(padded, key[:])
	out := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, make([]byte, aes.BlockSize)).CryptBlocks(out, padded)
	last := out[len(out)-aes.BlockSize:]
	lo, hi := c.digest(&key)
	if lo != binary.LittleEndian.Uint64(last[:8]) || hi != binary.LittleEndian.Uint64(last[8:]) {
		t.Fatalf("digest %016x %016x, CBC-MAC %x", lo, hi, last)
	}
}

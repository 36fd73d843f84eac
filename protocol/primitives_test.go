package protocol

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

// TestMACMatchesCryptoHMAC holds the stack-buffer HMAC and the midstate
// HMAC of the gateway equal to crypto/hmac for every key length the
// protocol uses and random messages.
func TestMACMatchesCryptoHMAC(t *testing.T) {
	x := getHasher()
	defer putHasher(x)
	for _, klen := range []int{0, 1, 31, 32, 33, 63, 64} {
		for mlen := 0; mlen < 200; mlen += 7 {
			key := make([]byte, klen)
			msg := make([]byte, mlen)
			rand.Read(key)
			rand.Read(msg)
			// Split msg into parts at an arbitrary point: parts concatenate.
			a, b := msg[:mlen/3], msg[mlen/3:]
			ref := hmac.New(sha256.New, key)
			ref.Write(lbl(labelGamma))
			ref.Write(msg)
			want := ref.Sum(nil)
			if got := mac(key, labelGamma, a, b); !hmac.Equal(got[:], want) {
				t.Fatalf("mac(klen=%d, mlen=%d) differs from crypto/hmac", klen, mlen)
			}
			var ks keyState
			x.setKey(&ks, key)
			if got := x.mac(&ks, labelGamma, a, b); !hmac.Equal(got[:], want) {
				t.Fatalf("keyed mac(klen=%d, mlen=%d) differs from crypto/hmac", klen, mlen)
			}
			// A second use of the same state must give the same answer:
			// the state is restored, not consumed.
			if got := x.mac(&ks, labelGamma, a, b); !hmac.Equal(got[:], want) {
				t.Fatalf("keyed mac reuse (klen=%d) differs", klen)
			}
		}
	}
}

func TestMACRejectsLongKey(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("mac accepted a key longer than one block")
		}
	}()
	mac(make([]byte, hmacBlock+1), labelE)
}

// TestTagCacheFollowsKeyObject checks that a tag cached under one master
// key is recomputed when the registry hands out another key object for the
// same version, and that cached and fresh derivations agree.
func TestTagCacheFollowsKeyObject(t *testing.T) {
	c := newTagCache(32)
	x := getHasher()
	defer putHasher(x)
	var k1, k2 GatewayKey
	rand.Read(k1[:])
	rand.Read(k2[:])
	id := []byte("alice")
	for _, k := range []*GatewayKey{&k1, &k2, &k1} {
		ks := c.state(x, domainUser, 3, k, id)
		tag := userTag(Hardened, k, id)
		want := mac(tag[:], labelBeta, []byte("x"))
		if got := x.mac(ks, labelBeta, []byte("x")); got != want {
			t.Fatal("cached tag state does not match the tag of the current key")
		}
	}
	// Filling the cache past its bound keeps it bounded.
	for i := range 1000 {
		c.state(x, domainDevice, 1, &k1, []byte{byte('a' + i%26), byte(i), byte(i >> 8)})
	}
	n := 0
	for i := range c.shards {
		n += len(c.shards[i].m)
	}
	if n > 32+tagShards {
		t.Fatalf("tag cache holds %d entries, bound is about 32", n)
	}
}

func TestFresh(t *testing.T) {
	cases := []struct {
		t, now, w uint64
		ok        bool
	}{
		{1000, 1000, 0, true},
		{1000, 11000, 10000, true},
		{1000, 11001, 10000, false},
		{21000, 11000, 10000, true},
		{21001, 11000, 10000, false},
		{^uint64(0), 0, 10000, false},
		{0, ^uint64(0), 10000, false},
	}
	for _, c := range cases {
		if got := fresh(c.t, c.now, c.w); got != c.ok {
			t.Errorf("fresh(%d, %d, %d) = %v", c.t, c.now, c.w, got)
		}
	}
}

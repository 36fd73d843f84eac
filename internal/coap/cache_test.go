package coap

import (
	"net/netip"
	"testing"
)

func key(port uint16, mid uint16) cacheKey {
	return cacheKey{from: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port), mid: mid}
}

func TestCacheBounded(t *testing.T) {
	c := newRespCache(64, 1000)
	for i := range 10000 {
		res, _, tk := c.begin(key(1, uint16(i)), 0, nil)
		if res != cacheMiss {
			t.Fatalf("insert %d: %v, want a miss", i, res)
		}
		c.finish(tk, []byte{byte(i)})
	}
	if n := c.len(); n > 64 {
		t.Fatalf("cache holds %d entries, bound is 64", n)
	}
	// The newest entry survives, the oldest is gone.
	if res, got, _ := c.begin(key(1, 9999), 0, nil); res != cacheHit || len(got) != 1 || got[0] != byte(9999%256) {
		t.Errorf("newest entry: %v %x", res, got)
	}
	if res, _, _ := c.begin(key(1, 0), 0, nil); res != cacheMiss {
		t.Errorf("oldest entry still cached: %v", res)
	}
}

func TestCacheStates(t *testing.T) {
	c := newRespCache(1, 1000)
	k1, k2 := key(1, 1), key(1, 2)

	res, _, t1 := c.begin(k1, 0, nil)
	if res != cacheMiss {
		t.Fatal(res)
	}
	if res, _, _ := c.begin(k1, 10, nil); res != cacheInFlight {
		t.Fatalf("duplicate of a pending request: %v", res)
	}
	// k2 evicts the pending k1; k1's late answer must not land in k2's slot.
	if res, _, _ := c.begin(k2, 20, nil); res != cacheMiss {
		t.Fatal(res)
	}
	c.finish(t1, []byte("k1"))
	if res, _, _ := c.begin(k2, 30, nil); res != cacheInFlight {
		t.Fatalf("k2 after k1's late finish: %v, want still in flight", res)
	}

	// forget releases a reservation.
	c = newRespCache(4, 1000)
	_, _, tk := c.begin(k1, 0, nil)
	c.forget(tk)
	if res, _, _ := c.begin(k1, 0, nil); res != cacheMiss {
		t.Fatalf("after forget: %v", res)
	}

	// Expiry: at ttl still a hit, after it a miss.
	c = newRespCache(4, 1000)
	_, _, tk = c.begin(k1, 0, nil)
	c.finish(tk, []byte("a"))
	if res, _, _ := c.begin(k1, 1000, nil); res != cacheHit {
		t.Fatalf("at the lifetime: %v", res)
	}
	if res, _, _ := c.begin(k1, 1001, nil); res != cacheMiss {
		t.Fatalf("past the lifetime: %v", res)
	}
	if n := c.len(); n != 1 {
		t.Fatalf("expired entry left behind: %d entries", n)
	}
}

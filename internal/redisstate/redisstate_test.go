package redisstate_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/redisstate"
	"github.com/tagauth/tagauth/internal/redisstate/redistest"
	"github.com/tagauth/tagauth/protocol"
)

var ctx = context.Background()

func open(t *testing.T, rawURL string, opt redisstate.Options) *redisstate.State {
	t.Helper()
	s, err := redisstate.Open(ctx, rawURL, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fresh opens a state on a new prefix that needs no quarantine.
func fresh(t *testing.T, opt redisstate.Options) (*redisstate.State, string) {
	t.Helper()
	u, prefix := redistest.Prefix(t)
	redistest.MarkFresh(t, prefix)
	return open(t, u, opt), u
}

func key(id string, n uint64) protocol.ReplayKey {
	var k protocol.ReplayKey
	k[0] = 0x02
	k[1] = byte(len(id))
	copy(k[2:], id)
	binary.BigEndian.PutUint64(k[len(k)-8:], n)
	return k
}

const t0 = uint64(1_750_000_000_000) // ms since 1970

func insert(t *testing.T, c protocol.ReplayCache, k protocol.ReplayKey, expires, now uint64) bool {
	t.Helper()
	ok, err := c.Insert(ctx, k, expires, now)
	if err != nil {
		t.Fatalf("Insert: %v", err)
	}
	return ok
}

func TestReplayInsertIfAbsent(t *testing.T) {
	s, _ := fresh(t, redisstate.Options{})
	c := s.Replay()
	if !insert(t, c, key("alice", 1), t0+10_000, t0) {
		t.Fatal("first insert not fresh")
	}
	for _, now := range []uint64{t0, t0 + 1, t0 + 9_000} {
		if insert(t, c, key("alice", 1), t0+10_000, now) {
			t.Fatalf("second insert at +%d ms reported fresh", now-t0)
		}
	}
	// Other discriminators, identities and domains are other keys: the
	// zero padding of the id is not lost in the Redis key.
	for _, k := range []protocol.ReplayKey{key("alice", 2), key("bob", 1), key("alic", 1), key("alice\x00", 1)} {
		if !insert(t, c, k, t0+10_000, t0) {
			t.Fatalf("key %x... not fresh", k[:8])
		}
	}
	k := key("alice", 1)
	k[0] = 0x01
	if !insert(t, c, k, t0+10_000, t0) {
		t.Fatal("same login in another domain not fresh")
	}
}

// TestReplayTTL: an entry lives for what is left of its window by the
// caller's clock, plus the skew allowance, whatever Redis's clock says.
func TestReplayTTL(t *testing.T) {
	s, _ := fresh(t, redisstate.Options{Skew: 2 * time.Second})
	rdb := s.Client()
	k := key("ttl", 1)
	// The caller's clock is far from Redis's: only the difference counts.
	if !insert(t, s.Replay(), k, 5_000+20_000, 5_000) {
		t.Fatal("not fresh")
	}
	var found string
	iter := rdb.Scan(ctx, 0, s.Prefix()+"r:*", 100).Iterator()
	for iter.Next(ctx) {
		found = iter.Val()
	}
	if found == "" {
		t.Fatal("no replay key under the prefix")
	}
	if len(found) != len(s.Prefix()+"r:")+2+len("ttl")+protocol.Size {
		t.Fatalf("Redis key %q keeps the id's zero padding", found)
	}
	ttl, err := rdb.PTTL(ctx, found).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 20*time.Second || ttl > 22*time.Second+time.Millisecond {
		t.Fatalf("TTL %v, want just under 22 s (20 s left of the window + 2 s skew)", ttl)
	}
	// An entry already at its expiry still gets the skew allowance.
	if !insert(t, s.Replay(), key("ttl", 2), 5_000, 5_000) {
		t.Fatal("not fresh")
	}
}

// TestReplayExpiry: an entry is forgotten after its TTL, and only then.
func TestReplayExpiry(t *testing.T) {
	s, _ := fresh(t, redisstate.Options{Skew: time.Millisecond})
	c := s.Replay()
	now := uint64(time.Now().UnixMilli())
	k := key("exp", 1)
	if !insert(t, c, k, now+100, now) {
		t.Fatal("not fresh")
	}
	if insert(t, c, k, now+100, now) {
		t.Fatal("fresh again at once")
	}
	// Wait for Redis to say the entry expired (a keyspace event), not
	// for a guess at how long that takes.
	rdb := s.Client()
	ctx := context.Background()
	if err := rdb.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err(); err != nil {
		t.Fatalf("keyspace notifications unavailable: %v", err)
	}
	sub := rdb.PSubscribe(ctx, "__keyevent@*__:expired")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	// The entry was made before the subscription: insert another, whose
	// expiry the subscription is sure to see, and wait for the first
	// event after it; the older entry, with the same TTL, is gone by then.
	k2 := key("exp", 2)
	if !insert(t, c, k2, now+100, now) {
		t.Fatal("second entry not fresh")
	}
	ctx5, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		m, err := sub.ReceiveMessage(ctx5)
		if err != nil {
			t.Fatalf("no expiry event within 10 s of a 101 ms TTL: %v", err)
		}
		if strings.Contains(m.Payload, "exp") { // k or k2: both are past their TTL once one is
			break
		}
	}
	if !insert(t, c, k, now+100, now) {
		t.Fatal("entry still there after its TTL expired")
	}
}

// TestReplayConcurrent: many goroutines on three connections (three
// replicas) insert one key at once; exactly one is told fresh.
func TestReplayConcurrent(t *testing.T) {
	s, u := fresh(t, redisstate.Options{})
	states := []*redisstate.State{s, open(t, u, redisstate.Options{}), open(t, u, redisstate.Options{})}
	const goroutines = 48
	for round := range 20 {
		k := key("race", uint64(round))
		var (
			wg     sync.WaitGroup
			fresh  atomic.Int32
			errs   = make(chan error, goroutines)
			start  = make(chan struct{})
			expire = t0 + 10_000
		)
		for g := range goroutines {
			c := states[g%len(states)].Replay()
			wg.Go(func() {
				<-start
				ok, err := c.Insert(ctx, k, expire, t0)
				if err != nil {
					errs <- err
				}
				if ok {
					fresh.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: Insert: %v", round, err)
		}
		if n := fresh.Load(); n != 1 {
			t.Fatalf("round %d: %d of %d concurrent inserts of one key were fresh, want exactly 1", round, n, goroutines)
		}
	}
}

// TestReplayQuarantine: a cache that is new or forgot (Redis restarted
// without persistence, FLUSHALL) refuses logins with busy until every
// entry it may have held would have expired: 2 dT + skew by the callers'
// clocks.
func TestReplayQuarantine(t *testing.T) {
	u, prefix := redistest.Prefix(t) // not marked fresh
	s := open(t, u, redisstate.Options{Window: 10 * time.Second, Skew: time.Second})
	c := s.Replay()
	const q = 21_000
	check := func(now uint64, wantQuarantine bool) {
		t.Helper()
		ok, err := c.Insert(ctx, key("q", now), now+10_000, now)
		if wantQuarantine {
			if ok || !errors.Is(err, redisstate.ErrQuarantine) || !errors.Is(err, protocol.ReasonCacheFull) || protocol.CodeOf(err) != protocol.ErrBusy {
				t.Fatalf("insert at +%d ms: fresh %v, %v; want a quarantine refusal (busy)", now-t0, ok, err)
			}
			return
		}
		if err != nil || !ok {
			t.Fatalf("insert at +%d ms: fresh %v, %v; want fresh", now-t0, ok, err)
		}
	}
	check(t0, true) // new: the quarantine starts now
	until, in, err := c.Quarantine(ctx, time.UnixMilli(int64(t0+1)))
	if err != nil || !in || until.UnixMilli() != int64(t0+q) {
		t.Fatalf("Quarantine: %v %v %v, want until +%d ms", until, in, err, q)
	}
	check(t0+q-1, true)
	check(t0+q, false) // the quarantine ends at t0 + q (inclusive)
	check(t0+q+5, false)
	if _, in, _ := c.Quarantine(ctx, time.UnixMilli(int64(t0+q+6))); in {
		t.Fatal("Quarantine reports one after it ended")
	}
	// Redis forgets (a restart without persistence): everything, the
	// epoch included, is gone; a replay of the last login would pass
	// if the cache trusted itself.
	if err := s.Client().Del(ctx, prefix+"epoch").Err(); err != nil {
		t.Fatal(err)
	}
	last := key("q", t0+q+5)
	if ok, err := c.Insert(ctx, last, t0+q+5+10_000, t0+q+100); ok || !errors.Is(err, redisstate.ErrQuarantine) {
		t.Fatalf("replay after the cache forgot: fresh %v, %v; want a quarantine refusal", ok, err)
	}
}

// TestUnreachable: an address where nothing listens is refused at Open
// with a message that says how to start Redis; a connection cut later
// makes every Insert fail (never fresh), Health says so, and both recover
// by themselves when the path is back.
func TestUnreachable(t *testing.T) {
	_, err := redisstate.Open(ctx, "redis://127.0.0.1:1/0", redisstate.Options{})
	if err == nil || !strings.Contains(err.Error(), "redis-server") {
		t.Fatalf("Open of a dead address: %v", err)
	}
	if _, err := redisstate.Open(ctx, "postgres://x", redisstate.Options{}); err == nil {
		t.Fatal("Open of a postgres URL succeeded")
	}

	base, prefix := redistest.Prefix(t)
	redistest.MarkFresh(t, prefix)
	bu, _ := url.Parse(base)
	p := redistest.NewProxy(t, bu.Host)
	bu.Host = p.Addr()
	s := open(t, bu.String(), redisstate.Options{})
	c := s.Replay()
	if !insert(t, c, key("cut", 1), t0+10_000, t0) || !s.Health().OK {
		t.Fatal("insert through the proxy failed")
	}
	p.Cut()
	for i := range 3 {
		ok, err := c.Insert(ctx, key("cut", uint64(10+i)), t0+10_000, t0)
		if ok || err == nil || protocol.CodeOf(err) != protocol.ErrBusy {
			t.Fatalf("insert with Redis cut off: fresh %v, %v; want an error that answers busy", ok, err)
		}
	}
	h := s.Health()
	if h.OK || h.LastError == "" {
		t.Fatalf("Health with Redis cut off: %+v", h)
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping with Redis cut off succeeded")
	}
	if _, err := s.Lockout().Fail(ctx, "u", time.Now(), time.Minute); err == nil {
		t.Fatal("lockout Fail with Redis cut off succeeded")
	}
	p.Restore()
	// Each failed Ping drops one connection the cut broke; the pool holds
	// a bounded number of them, so a few Pings must get through.
	for i := 0; s.Ping(ctx) != nil; i++ {
		if i >= 64 {
			t.Fatal("Redis not reachable again after the proxy was restored")
		}
	}
	if !s.Health().OK {
		t.Fatalf("Health after recovery: %+v", s.Health())
	}
	// The entry made before the cut is still there; new ones are fresh.
	if insert(t, c, key("cut", 1), t0+10_000, t0) {
		t.Fatal("entry from before the cut forgotten")
	}
	if !insert(t, c, key("cut", 2), t0+10_000, t0) {
		t.Fatal("new entry after recovery not fresh")
	}
}

func ExampleReplayCache() {
	// Replicas open the same Redis with the same prefix; each gives the
	// cache to protocol.NewGateway.
	s, err := redisstate.Open(context.Background(), "redis://127.0.0.1:6379/0?prefix=plant-a:", redisstate.Options{})
	if err != nil {
		fmt.Println("no Redis:", err != nil)
		return
	}
	defer s.Close()
	var _ protocol.ReplayCache = s.Replay()
}

// TestURLParams: prefix and skew come from the URL; a bad skew is refused.
func TestURLParams(t *testing.T) {
	u, prefix := redistest.Prefix(t)
	redistest.MarkFresh(t, prefix)
	s := open(t, u+"&skew=3s", redisstate.Options{})
	if s.Prefix() != prefix {
		t.Fatalf("prefix %q, want %q from the URL", s.Prefix(), prefix)
	}
	if !insert(t, s.Replay(), key("p", 1), t0+1_000, t0) {
		t.Fatal("not fresh")
	}
	ttl, err := s.Client().PTTL(ctx, s.Prefix()+"r:\x02\x01p"+string(make([]byte, 24))+"\x00\x00\x00\x00\x00\x00\x00\x01").Result()
	if err != nil || ttl <= 3*time.Second || ttl > 4*time.Second+time.Millisecond {
		t.Fatalf("TTL with skew=3s: %v, %v; want just under 4 s", ttl, err)
	}
	if _, err := redisstate.Open(ctx, u+"&skew=soon", redisstate.Options{}); err == nil || !strings.Contains(err.Error(), "skew") {
		t.Fatalf("Open with skew=soon: %v", err)
	}
}

package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/protocol"
)

// TestHotPathAllocs: what limits.go and metrics.go add to a successful
// verify allocates nothing (the verify itself allocates nothing either).
func TestHotPathAllocs(t *testing.T) {
	g := &Gateway{cfg: Config{}, log: slog.New(slog.DiscardHandler), now: time.Now}
	g.guard = newGuard(&g.cfg)
	g.metrics = newMetrics(g)
	vf := &verifier{guard: g.guard, metrics: g.metrics, now: g.now, log: g.log}
	req := &verifyRequest{M2: []byte{0x02, 0x02}, From: netip.MustParseAddrPort("127.0.0.1:5683")}
	m, perr := protocol.ParseM2(req.M2)
	dst := make([]byte, 0, 512)
	user := []byte("alice")
	ctx := context.Background()
	g.metrics.observe(nil, "", 1, 1, time.Microsecond, time.Now()) // resolves the kv counters once
	for _, src := range []lockout.Source{lockout.SourceOf([]byte{192, 0, 2, 1}), lockout.SourceOf(net.ParseIP("2001:db8::1")), lockout.SourceOf([]byte("mqtt-client-7")), lockout.Unverified} {
		n := testing.AllocsPerRun(1000, func() {
			if _, limited := vf.rateLimit(req, &m, perr, dst); limited {
				t.Fatal("limited with no limits")
			}
			now := time.Now()
			if d, err := g.guard.decide(ctx, user, src, now); err != nil || d.Locked() {
				t.Fatal(d, err)
			}
			if err := g.guard.succeed(ctx, user, src, now); err != nil {
				t.Fatal(err)
			}
			g.metrics.observe(nil, "", 1, 1, 30*time.Microsecond, time.Now())
		})
		if n != 0 {
			t.Errorf("source %v: %v allocations per verify in limits and metrics, want 0", src, n)
		}
	}
	// The rate limiters allocate nothing for a key they hold.
	g.guard.source = newLimiter(RateLimit{Rate: 1e9, Burst: 1e9}, 64, func(s maphashSeed, a netip.Addr) uint64 { return hashAddr(s, a) })
	vf.rateLimit(req, &m, perr, dst)
	if n := testing.AllocsPerRun(1000, func() { vf.rateLimit(req, &m, perr, dst) }); n != 0 {
		t.Errorf("%v allocations per rate-limited verify, want 0", n)
	}
}

// TestLimiterRefill: a bucket holds Burst, refills at Rate, and audits a
// refusal episode once per auditEvery.
func TestLimiterRefill(t *testing.T) {
	l := newLimiter(RateLimit{Rate: 2, Burst: 3}, 64, func(s maphashSeed, a netip.Addr) uint64 { return hashAddr(s, a) })
	a := netip.MustParseAddr("192.0.2.1")
	t0 := time.Unix(1_000_000, 0)
	for i := range 3 {
		if ok, _ := l.allow(a, t0); !ok {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	ok, n := l.allow(a, t0)
	if ok || n != 1 {
		t.Fatalf("past the burst: ok %v audit %d, want refused and audited", ok, n)
	}
	if ok, n := l.allow(a, t0.Add(100*time.Millisecond)); ok || n != 0 {
		t.Fatalf("second refusal: ok %v audit %d, want refused, not audited again", ok, n)
	}
	if ok, _ := l.allow(a, t0.Add(600*time.Millisecond)); !ok {
		t.Fatal("no refill after 0.6 s at 2/s")
	}
	if ok, _ := l.allow(netip.MustParseAddr("192.0.2.2"), t0); !ok {
		t.Fatal("another address shares the bucket")
	}
	// The episode's later refusals are counted in the next record.
	later := t0.Add(auditEvery + time.Second)
	for {
		ok, n := l.allow(a, later)
		if ok {
			continue
		}
		if n != 2 { // the one at t0+100ms and this one
			t.Fatalf("audit after %s counts %d refusals, want 2", auditEvery, n)
		}
		break
	}
}

// TestLimiterBound: a full table makes room, so it never grows past its
// bound.
func TestLimiterBound(t *testing.T) {
	l := newLimiter(RateLimit{Rate: 1, Burst: 1}, 32, func(s maphashSeed, a netip.Addr) uint64 { return hashAddr(s, a) })
	t0 := time.Unix(1_000_000, 0)
	for i := range 1000 {
		l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), t0)
	}
	total := 0
	for i := range l.shards {
		total += len(l.shards[i].m)
	}
	if total > 32 {
		t.Fatalf("%d keys held, bound 32", total)
	}
}

// TestConnLimiterTotal: beyond the total, connections from any source are
// closed at once; closing one makes room.
func TestConnLimiterTotal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limitConns(ln, 4, 2)
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(local string) net.Conn {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for _, src := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		dial(src)
	}
	var got []net.Conn
	timeout := time.After(10 * time.Second)
	for {
		changed := l.changed.wait() // a refusal fires it
		if len(got)+int(l.refused.Load()) >= 7 {
			break
		}
		select {
		case c := <-accepted:
			got = append(got, c)
		case <-changed:
		case <-timeout:
			t.Fatalf("after 10 s, accepted %d and refused %d of 7", len(got), l.refused.Load())
		}
	}
	if len(got) != 4 || l.refused.Load() != 3 || l.opened() != 4 {
		t.Fatalf("accepted %d, refused %d, open %d; want 4, 3, 4 (2 per source, 4 in all)", len(got), l.refused.Load(), l.opened())
	}
	got[0].Close()
	got[0].Close() // twice: counted once
	if l.opened() != 3 {
		t.Fatalf("open %d after a close, want 3", l.opened())
	}
	dial("127.0.0.3")
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no room made by a closed connection")
	}
}

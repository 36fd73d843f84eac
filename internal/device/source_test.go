package device

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// clientFrom is a user's CoAP client sending from the loopback address ip
// (all of 127/8 is local on Linux).
func clientFrom(ip string, ack time.Duration) *coap.Client {
	return &coap.Client{ACKTimeout: ack, LocalAddr: &net.UDPAddr{IP: net.ParseIP(ip)}}
}

// forgeM1 is what an outsider who knows a user's ID can send: a real m1's
// header, ID_i (and kv_i) and T1, with n_i, E_i and theta_i random.
func forgeM1(t *testing.T, u *protocol.User) []byte {
	t.Helper()
	_, m1, err := u.Login(nil, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	random := 64 // E_i, theta_i
	if u.Profile() == protocol.Hardened {
		random += 16 // n_i
	}
	f := bytes.Clone(m1)
	rand.Read(f[len(f)-8-random : len(f)-8])
	return f
}

// rawExchange sends one CON POST from a socket bound to from and returns
// the request datagram and the decoded answer.
func rawExchange(t *testing.T, from, to, path string, payload []byte, opts ...message.Option) ([]byte, message.Message, int) {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(from)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	o, _, err := make(message.Options, 0, 8).SetPath(make([]byte, len(path)), path)
	if err != nil {
		t.Fatal(err)
	}
	o = o.Add(message.Option{ID: message.ContentFormat, Value: []byte{byte(message.AppOctets)}})
	for _, x := range opts {
		o = o.Add(x)
	}
	var id [2]byte
	rand.Read(id[:])
	m := message.Message{Token: []byte{9, 8, 7, 6, id[0], id[1]}, Options: o, Code: codes.POST, Payload: payload,
		MessageID: int32(id[0])<<8 | int32(id[1]), Type: message.Confirmable}
	size, _ := coder.DefaultCoder.Size(m)
	req := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(m, req); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDPAddrPort(req, netip.MustParseAddrPort(to)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no answer to the raw POST: %v", err)
	}
	resp := message.Message{Options: make(message.Options, 0, 8)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &resp); err != nil {
		t.Fatal(err)
	}
	resp.Payload = bytes.Clone(resp.Payload)
	for i := range resp.Options {
		resp.Options[i].Value = bytes.Clone(resp.Options[i].Value)
	}
	return req, resp, n
}

// TestEchoChallenge: an m1 from an address the agent has not verified is
// answered 4.01 with an Echo value, smaller than the request, and nothing
// else happens (no relay, no replay-cache entry); the same m1 with the
// Echo value is relayed with the Source option; a verified address is not
// challenged again.
func TestEchoChallenge(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.String(), func(t *testing.T) {
			r := newRig(t, p, nil)
			u := r.enrol("alice")
			_, m1, err := u.Login(nil, deviceID)
			if err != nil {
				t.Fatal(err)
			}
			req, resp, n := rawExchange(t, "127.0.0.1:0", r.addr, coapbind.PathLogin, m1)
			echo, err := resp.Options.GetBytes(coap.OptionEcho)
			if coap.Code(resp.Code) != coap.Unauthorized || err != nil || len(echo) == 0 || len(resp.Payload) != 0 {
				t.Fatalf("first m1 answered %s, Echo %x (%v), payload %x; want 4.01 with Echo and no payload", coap.Code(resp.Code), echo, err, resp.Payload)
			}
			if n >= len(req) {
				t.Errorf("challenge of %d bytes for a request of %d: amplification", n, len(req))
			}
			if s := r.gw.seenSources(); len(s) != 0 {
				t.Fatalf("a challenged m1 was relayed %d times", len(s))
			}

			// An Echo value is bound to its address.
			_, resp, _ = rawExchange(t, "127.0.0.2:0", r.addr, coapbind.PathLogin, m1, message.Option{ID: coap.OptionEcho, Value: echo})
			if coap.Code(resp.Code) != coap.Unauthorized || len(resp.Payload) != 0 {
				t.Fatalf("m1 from 127.0.0.2 with 127.0.0.1's Echo answered %s %x, want a new challenge", coap.Code(resp.Code), resp.Payload)
			}
			// A tampered one is no good either.
			bad := bytes.Clone(echo)
			bad[len(bad)-1] ^= 1
			_, resp, _ = rawExchange(t, "127.0.0.1:0", r.addr, coapbind.PathLogin, m1, message.Option{ID: coap.OptionEcho, Value: bad})
			if coap.Code(resp.Code) != coap.Unauthorized || len(resp.Payload) != 0 {
				t.Fatalf("m1 with a tampered Echo answered %s %x, want a new challenge", coap.Code(resp.Code), resp.Payload)
			}

			// The same m1 (never seen by the replay cache) with the Echo
			// value, from another port of the same address.
			_, resp, _ = rawExchange(t, "127.0.0.1:0", r.addr, coapbind.PathLogin, m1, message.Option{ID: coap.OptionEcho, Value: echo})
			if coap.Code(resp.Code) != coap.Changed {
				t.Fatalf("m1 with its Echo answered %s %x, want 2.04 and m4", coap.Code(resp.Code), resp.Payload)
			}
			if s := r.gw.seenSources(); len(s) != 1 || s[0] != "\x7f\x00\x00\x01" {
				t.Fatalf("gateway saw Source options %q, want one 127.0.0.1", s)
			}

			// Verified now: a full login from 127.0.0.1 takes no challenge.
			r.mustLogin(r.enrol("bob"))
			wantSample(t, scrapeAgent(t, r.agent), "tagauth_device_echo_challenges_total 3")
			wantSample(t, scrapeAgent(t, r.agent), "tagauth_device_verified_sources 1")
		})
	}
}

// TestNoSourceVerification: with the check off, an m1 is relayed at once
// and m2 carries no Source option.
func TestNoSourceVerification(t *testing.T) {
	r := newRig(t, protocol.Hardened, func(c *Config) { c.NoSourceVerification = true })
	u := r.enrol("alice")
	_, m1, err := u.Login(nil, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	if _, resp, _ := rawExchange(t, "127.0.0.1:0", r.addr, coapbind.PathLogin, m1); coap.Code(resp.Code) != coap.Changed {
		t.Fatalf("m1 answered %s, want 2.04", coap.Code(resp.Code))
	}
	if s := r.gw.seenSources(); len(s) != 1 || s[0] != "" {
		t.Fatalf("gateway saw Source options %q, want one verify without", s)
	}
}

// TestSourceFloodDoesNotDenyOthers is item 8: a flood of forged m1s from
// one address is cut by its token bucket, while a user from another
// address logs in.
func TestSourceFloodDoesNotDenyOthers(t *testing.T) {
	r := newRig(t, protocol.Hardened, func(c *Config) { c.SourceBurst = 5 })
	alice := r.enrol("alice")
	mallory := clientFrom("127.0.0.2", 200*time.Millisecond)
	var busy, rejected int
	for range 30 {
		code, resp, err := mallory.Post(context.Background(), r.addr, coapbind.PathLogin, forgeM1(t, alice))
		if err != nil {
			t.Fatal(err)
		}
		_, c, err := protocol.ParseError(resp)
		switch {
		case err != nil:
			t.Fatalf("forged m1 answered %s %x", code, resp)
		case c == protocol.ErrBusy:
			busy++
		case c == protocol.ErrRejected:
			rejected++
		}
	}
	if rejected != 5 || busy != 25 {
		t.Errorf("30 forged m1s: %d relayed and rejected, %d busy; want 5 and 25", rejected, busy)
	}
	if got := len(r.gw.seenSources()); got != 5 {
		t.Errorf("the gateway saw %d verifies, want the 5 of the burst", got)
	}
	r.mustLogin(alice)
	text := scrapeAgent(t, r.agent)
	wantSample(t, text, `tagauth_device_logins_total{outcome="refused",reason="source rate limit",step="m1"} 25`)
	// Tokens come back with time.
	r.clk.Advance(time.Second)
	if _, _, err := mallory.Post(context.Background(), r.addr, coapbind.PathLogin, forgeM1(t, alice)); err != nil {
		t.Fatal(err)
	}
	if got := len(r.gw.seenSources()); got != 5+1+1 {
		t.Errorf("after a second: the gateway saw %d verifies, want 7 (the burst, alice's, one more)", got)
	}
}

// TestRelayShare is item 8's fair slots: one address holds at most
// MaxRelaysPerSource relays; another still gets a slot.
func TestRelayShare(t *testing.T) {
	r := newRig(t, protocol.Hardened, func(c *Config) {
		c.SourceBurst = 1000
		c.GatewayTimeout = time.Minute
		c.Client = &coap.Client{ACKTimeout: time.Second}
	})
	alice := r.enrol("alice")
	mallory := clientFrom("127.0.0.2", 500*time.Millisecond)
	// Verify 127.0.0.2 first, so that the concurrent m1s below all go
	// straight to the limits.
	if _, _, err := mallory.Post(context.Background(), r.addr, coapbind.PathLogin, []byte{0x02}); err != nil {
		t.Fatal(err)
	}
	r.agent.verified.Add(netip.MustParseAddr("127.0.0.2"), r.clk.Now())
	r.gw.hang.Store(true)
	const extra = 3
	codes := make(chan protocol.Code, MaxRelaysPerSource+extra)
	for range MaxRelaysPerSource + extra {
		m1 := forgeM1(t, alice)
		go func() {
			_, resp, err := mallory.Post(context.Background(), r.addr, coapbind.PathLogin, m1)
			_, c, perr := protocol.ParseError(resp)
			if err != nil || perr != nil {
				c = 0
			}
			codes <- c
		}()
	}
	for range MaxRelaysPerSource {
		<-r.gw.arrived
	}
	for range extra {
		if c := <-codes; c != protocol.ErrBusy {
			t.Fatalf("an m1 beyond the address's share answered %v, want busy", c)
		}
	}
	done := make(chan error, 1)
	go func() {
		conn, err := userclient.Login(context.Background(), alice, clientFrom("127.0.0.1", 500*time.Millisecond), r.addr, deviceID)
		if err == nil {
			conn.Close()
		}
		done <- err
	}()
	<-r.gw.arrived // alice's relay got a slot
	r.gw.hang.Store(false)
	for range MaxRelaysPerSource + 1 {
		r.gw.release <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatalf("alice's login beside the flood: %v", err)
	}
	for range MaxRelaysPerSource {
		if c := <-codes; c != protocol.ErrRejected {
			t.Errorf("a held forged m1 answered %v, want rejected", c)
		}
	}
	wantSample(t, scrapeAgent(t, r.agent), `tagauth_device_logins_total{outcome="refused",reason="source relay share",step="m1"} 3`)
}

// TestRefusalLogBounded: a flood of refusals writes at most
// refusalLogLines lines per interval and one line with the count of the
// rest; the metrics count every refusal.
func TestRefusalLogBounded(t *testing.T) {
	r := newRig(t, protocol.Hardened, func(c *Config) { c.SourceBurst = 1000 })
	alice := r.enrol("alice")
	mallory := clientFrom("127.0.0.2", 200*time.Millisecond)
	const flood = 60
	for range flood {
		if _, _, err := mallory.Post(context.Background(), r.addr, coapbind.PathLogin, forgeM1(t, alice)); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(r.logs.String(), "outcome=refused"); n != refusalLogLines {
		t.Errorf("%d refusals wrote %d lines, want %d", flood, n, refusalLogLines)
	}
	wantSample(t, scrapeAgent(t, r.agent), `tagauth_device_logins_total{outcome="refused",reason="gateway rejected",step="m3"} 60`)
	wantSample(t, scrapeAgent(t, r.agent), `tagauth_device_log_lines_suppressed_total 50`)
	r.clk.Advance(refusalLogEvery)
	r.agent.flushRefusalLog() // the janitor may have done it already
	if !strings.Contains(r.logs.String(), "login refusals not logged") || !strings.Contains(r.logs.String(), "lines=50") {
		t.Errorf("no summary of the 50 refusals not logged:\n%s", r.logs)
	}
	// The next interval logs again.
	r.mustLogin(alice)
	if _, _, err := mallory.Post(context.Background(), r.addr, coapbind.PathLogin, forgeM1(t, alice)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(r.logs.String(), "outcome=refused"); n != refusalLogLines+1 {
		t.Errorf("after the interval: %d refusal lines, want %d", n, refusalLogLines+1)
	}
}

// TestPerUserSessionCap is item 7: a user who opens many sessions loses
// its own oldest ones and never fills the table for others.
func TestPerUserSessionCap(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.String(), func(t *testing.T) {
			r := newRig(t, p, func(c *Config) { c.MaxSessions = 5; c.MaxSessionsPerUser = 3 })
			alice := r.enrol("alice")
			var conns []*userclient.Conn
			for range 8 {
				r.clk.Advance(time.Millisecond) // classic refuses one user's second T1 of a millisecond
				conns = append(conns, r.mustLogin(alice))
			}
			if st := r.agent.Stats(); st.Sessions != 3 {
				t.Fatalf("after 8 logins of one user: %d sessions, want 3", st.Sessions)
			}
			ctx := context.Background()
			if _, err := conns[0].Task(ctx, "echo", "x"); !errors.Is(err, protocol.ErrRejected) {
				t.Errorf("task on alice's oldest session: %v, want rejected (closed)", err)
			}
			if resp, err := conns[7].Task(ctx, "echo", "x"); err != nil || !resp.OK {
				t.Errorf("task on alice's newest session: %+v %v", resp, err)
			}
			bob := r.enrol("bob")
			r.mustLogin(bob)
			r.clk.Advance(time.Millisecond)
			r.mustLogin(bob)
			wantSample(t, scrapeAgent(t, r.agent), `tagauth_device_user_evictions_total{table="session"} 5`)
		})
	}
}

// TestPerUserPendingCap: logins a user leaves unconfirmed evict that
// user's oldest, never another user's.
func TestPerUserPendingCap(t *testing.T) {
	r := newRig(t, protocol.Hardened, func(c *Config) { c.MaxSessions = 3; c.MaxPendingPerUser = 2 })
	alice := r.enrol("alice")
	var logins []*protocol.Login
	var m4s [][]byte
	for range 5 {
		l, m4 := r.startLogin(alice)
		logins, m4s = append(logins, l), append(m4s, m4)
	}
	if st := r.agent.Stats(); st.Pending != 2 {
		t.Fatalf("after 5 unconfirmed logins of one user: %d pending, want 2", st.Pending)
	}
	r.mustLogin(r.enrol("bob"))
	// alice's newest is still there and confirms.
	s, m5, err := logins[4].Finish(nil, m4s[4])
	if err != nil {
		t.Fatal(err)
	}
	if code, resp := r.post(coapbind.PathConfirm, protocol.AppendConfirmPayload(nil, s.SID(), m5)); code != coap.Changed {
		t.Fatalf("confirming alice's newest login: %s %x", code, resp)
	}
	wantSample(t, scrapeAgent(t, r.agent), `tagauth_device_user_evictions_total{table="pending"} 3`)
}

// TestSourceLimitsBounded: a stream of new addresses, each limited, never
// grows the table past its bound, and an address that is forgotten
// starts with a full bucket, no more.
func TestSourceLimitsBounded(t *testing.T) {
	l := newSourceLimits(0.001, 1)
	t0 := time.Unix(1_800_000_000, 0)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range 3 * maxSourceBuckets {
		if why := l.acquire(addr(i), t0); why != "" {
			t.Fatalf("a new address refused: %s", why)
		}
		l.release(addr(i))
		if n := l.len(); n > maxSourceBuckets {
			t.Fatalf("%d buckets after %d addresses, bound %d", n, i+1, maxSourceBuckets)
		}
	}
	last := addr(3*maxSourceBuckets - 1)
	if why := l.acquire(last, t0); why != reasonSourceRate {
		t.Errorf("the newest address, which spent its burst, got %q, want %q", why, reasonSourceRate)
	}
	// A bucket that holds a relay is never dropped.
	busy := netip.MustParseAddr("192.0.2.1")
	if l.acquire(busy, t0) != "" {
		t.Fatal("first acquire refused")
	}
	for i := range 2 * maxSourceBuckets {
		if l.acquire(addr(5*maxSourceBuckets+i), t0) == "" {
			l.release(addr(5*maxSourceBuckets + i))
		}
	}
	l.mu.Lock()
	b := l.buckets[busy]
	l.mu.Unlock()
	if b == nil || b.relays != 1 {
		t.Error("a bucket holding a relay was dropped")
	}
}

// TestSourceIPv6: a client on IPv6 is verified by its full address and
// reported to the gateway in 16 bytes.
func TestSourceIPv6(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	r := newRig(t, protocol.Hardened, func(c *Config) { c.Listen = "[::1]:0" })
	r.mustLogin(r.enrol("alice"))
	if s := r.gw.seenSources(); len(s) != 1 || s[0] != string(net.IPv6loopback) {
		t.Fatalf("gateway saw Source options %q, want ::1 in 16 bytes", s)
	}
	wantSample(t, scrapeAgent(t, r.agent), "tagauth_device_echo_challenges_total 1")
}

// TestSourceLimitsIPv6Prefix: the per-source bucket and relay share of an
// IPv6 client are its /64's, as the gateway counts sources: one
// subscriber holds a whole /64, so per-address limits would give a
// flooder 2^64 fresh buckets and every relay slot.
func TestSourceLimitsIPv6Prefix(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	in64 := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 8: byte(i >> 8), 15: byte(i)})
	}
	l := newSourceLimits(0.001, 1)
	if why := l.acquire(in64(1), t0); why != "" {
		t.Fatalf("first address of the /64: %q", why)
	}
	l.release(in64(1))
	if why := l.acquire(in64(2), t0); why != reasonSourceRate {
		t.Fatalf("another address of the same /64 after its burst: %q, want %q", why, reasonSourceRate)
	}
	other := netip.MustParseAddr("2001:db8:1:3::1")
	if why := l.acquire(other, t0); why != "" {
		t.Fatalf("an address of another /64: %q", why)
	}

	l = newSourceLimits(1000, 1000)
	for i := range MaxRelaysPerSource {
		if why := l.acquire(in64(100+i), t0); why != "" {
			t.Fatalf("relay %d of the /64: %q", i, why)
		}
	}
	if why := l.acquire(in64(999), t0); why != reasonSourceShare {
		t.Fatalf("one relay more than the share from a fresh address of the /64: %q, want %q", why, reasonSourceShare)
	}
	l.release(in64(100))
	if why := l.acquire(in64(998), t0); why != "" {
		t.Fatalf("after a release: %q", why)
	}
}

// TestLogsSanitizeIDs: an identity claimed in a forged m1 (anyone can
// send one) or held by a user who logs in is never written raw: a bidi
// override or an invisible character could make a JSON log line (which
// escapes only control characters) read as something else.
func TestLogsSanitizeIDs(t *testing.T) {
	logs := &testenv.LockedBuffer{}
	r := newRig(t, protocol.Hardened, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	odd := "admin\u202e\u200bnimda"
	u := r.enrol(odd)
	mallory := clientFrom("127.0.0.2", 200*time.Millisecond)
	if _, _, err := mallory.Post(context.Background(), r.addr, coapbind.PathLogin, forgeM1(t, u)); err != nil {
		t.Fatal(err)
	}
	c := r.mustLogin(u)
	if _, err := c.Task(context.Background(), "echo", "{}"); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if strings.ContainsAny(out, "\u202e\u200b") {
		t.Errorf("an odd identity was logged raw:\n%s", out)
	}
	if want := "hex:" + hex.EncodeToString([]byte(odd)); strings.Count(out, want) < 3 {
		t.Errorf("want the refusal, the login and the task logged with %s:\n%s", want, out)
	}
}

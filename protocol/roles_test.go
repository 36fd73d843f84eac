package protocol_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/protocol/prototest"
)

// Behaviour of each role when it is handed something wrong: a forged
// field, a timestamp one millisecond outside its window, a replay, a wrong
// password, an identity the gateway refuses, a step out of order, a bad
// record. Every refusal is checked for its precise reason and, where a
// reply goes on the wire, for the exact reply bytes.

// winDT is dT, the freshness window every party uses here (the default).
const winDT = protocol.DefaultWindow

// winMs is dT in milliseconds.
const winMs = int64(winDT / time.Millisecond)

// cast is a world whose card, device and gateway each read their own
// clock, so that a test can put a timestamp exactly on either edge of a
// window.
type cast struct {
	w                *world
	p                protocol.Profile
	base             time.Time // offset 0 of at()
	cardT, devT, gwT time.Time
	idle, life       time.Duration
	did              string // the device the card logs in to
	user             *protocol.User
	dev              *protocol.Device
	gw               *protocol.Gateway
}

func newCast(t *testing.T, p protocol.Profile) *cast { return newCastWith(t, p, 0, 0) }

// newCastWith sets the session idle time and maximum life (0: defaults).
func newCastWith(t *testing.T, p protocol.Profile, idle, life time.Duration) *cast {
	t.Helper()
	c := &cast{w: newWorld(t, p), p: p, idle: idle, life: life, did: "sensor-7"}
	c.base = c.w.now
	c.at(0, 0, 0)
	u, err := protocol.Unlock(c.w.card, "correct horse", c.cfg(&c.cardT))
	if err != nil {
		t.Fatal(err)
	}
	c.user = u
	c.freshDevice(t, c.w.devCrd)
	c.freshGateway(t)
	return c
}

func (c *cast) cfg(clock *time.Time) protocol.Config {
	return protocol.Config{
		Now:         func() time.Time { return *clock },
		Rand:        rand.Reader,
		SessionIdle: c.idle,
		SessionLife: c.life,
	}
}

// at sets each party's clock to base plus an offset in milliseconds.
func (c *cast) at(card, dev, gw int64) {
	c.cardT = c.base.Add(time.Duration(card) * time.Millisecond)
	c.devT = c.base.Add(time.Duration(dev) * time.Millisecond)
	c.gwT = c.base.Add(time.Duration(gw) * time.Millisecond)
}

// tick moves every clock one millisecond on: two classic logins of one
// user in the same millisecond share (ID_i, T1), the gateway's replay key.
func (c *cast) tick() {
	c.cardT = c.cardT.Add(time.Millisecond)
	c.devT = c.devT.Add(time.Millisecond)
	c.gwT = c.gwT.Add(time.Millisecond)
}

func (c *cast) freshDevice(t *testing.T, cred protocol.DeviceCredential) {
	t.Helper()
	d, err := protocol.NewDevice(cred, &prototest.ReplayCache{}, c.cfg(&c.devT))
	if err != nil {
		t.Fatal(err)
	}
	c.dev = d
}

func (c *cast) freshGateway(t *testing.T) {
	t.Helper()
	g, err := protocol.NewGateway(c.p, c.w.reg, &prototest.ReplayCache{}, c.cfg(&c.gwT))
	if err != nil {
		t.Fatal(err)
	}
	c.gw = g
}

func ms(t time.Time) uint64 { return uint64(t.UnixMilli()) }

// attempt is one login and whatever it has produced so far.
type attempt struct {
	login              *protocol.Login
	dl                 *protocol.DeviceLogin
	m1, m2, m3, m4, m5 []byte
	us, ds             *protocol.Session
}

// run takes a new login through upTo messages (1: m1 only, ... 4: up to
// m4; 5: both sessions established). Every step must succeed.
func (c *cast) run(t *testing.T, upTo int) *attempt {
	t.Helper()
	ctx := context.Background()
	a := &attempt{}
	fail := func(step string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v %s: %v", c.p, step, err)
		}
	}
	var err error
	a.login, a.m1, err = c.user.Login(nil, c.did)
	fail("login", err)
	if upTo < 2 {
		return a
	}
	a.dl, a.m2, err = c.dev.Start(ctx, nil, a.m1)
	fail("start", err)
	if upTo < 3 {
		return a
	}
	a.m3, _, err = c.gw.Verify(ctx, nil, a.m2)
	fail("verify", err)
	if upTo < 4 {
		return a
	}
	a.m4, a.ds, err = a.dl.Respond(nil, a.m3)
	fail("respond", err)
	if upTo < 5 {
		return a
	}
	a.us, a.m5, err = a.login.Finish(nil, a.m4)
	fail("finish", err)
	if c.p == protocol.Hardened {
		a.ds, err = a.dl.Confirm(a.m5)
		fail("confirm", err)
	}
	if a.us.Fingerprint() != a.ds.Fingerprint() {
		t.Fatalf("%v: keys differ", c.p)
	}
	return a
}

// channelCheck sends one record from the card to the device. It reports
// "channel" and the error when the device cannot open it, which is how a
// key mismatch shows when the protocol has no key confirmation.
func channelCheck(t *testing.T, us, ds *protocol.Session) (string, error) {
	t.Helper()
	rec, err := us.Seal(nil, []byte("sensor.read"))
	if err != nil {
		t.Fatal(err)
	}
	same := us.Fingerprint() == ds.Fingerprint()
	if _, err := ds.Open(nil, rec); err != nil {
		if same {
			t.Fatalf("equal keys but the record was refused: %v", err)
		}
		return "channel", err
	}
	if !same {
		t.Fatal("fingerprints differ but the record opened")
	}
	return "", nil
}

// drive runs a login from a given m1 to the end and reports the first
// party to refuse it, or "" if both ends hold the same key.
func (c *cast) drive(t *testing.T, l *protocol.Login, m1 []byte) (string, error) {
	t.Helper()
	ctx := context.Background()
	dl, m2, err := c.dev.Start(ctx, nil, m1)
	if err != nil {
		return "device", err
	}
	m3, _, err := c.gw.Verify(ctx, nil, m2)
	if err != nil {
		wantReply(t, m3, c.p, protocol.CodeOf(err))
		return "gateway", err
	}
	m4, ds, err := dl.Respond(nil, m3)
	if err != nil {
		return "device", err
	}
	us, m5, err := l.Finish(nil, m4)
	if err != nil {
		return "card", err
	}
	if c.p == protocol.Hardened {
		if ds, err = dl.Confirm(m5); err != nil {
			return "device", err
		}
	}
	return channelCheck(t, us, ds)
}

// wantReply requires the exact error message p || 0x7f || code.
func wantReply(t *testing.T, reply []byte, p protocol.Profile, code protocol.Code) {
	t.Helper()
	if want := []byte{byte(p), byte(protocol.TypeError), byte(code)}; !bytes.Equal(reply, want) {
		t.Fatalf("reply %x, want %x (%v)", reply, want, code)
	}
}

// span is a named field of a message layout.
type span struct {
	name string
	n    int
}

// layoutOf lists the fields after the header, as spec section 7 orders
// them.
func layoutOf(typ protocol.MsgType, p protocol.Profile, id, did string) []span {
	hard := p == protocol.Hardened
	var s []span
	add := func(name string, n int, present bool) {
		if present {
			s = append(s, span{name, n})
		}
	}
	switch typ {
	case protocol.TypeM1:
		add("ID", 1+len(id), true)
		add("kv", 1, hard)
		add("nonce", protocol.NonceSize, hard)
		add("E", 32, true)
		add("theta", 32, true)
		add("T1", 8, true)
	case protocol.TypeM2:
		add("ID", 1+len(id), true)
		add("kv", 1, hard)
		add("nonce", protocol.NonceSize, hard)
		add("E", 32, true)
		add("DID", 1+len(did), true)
		add("kvdev", 1, hard)
		add("I", 32, true)
		add("T1", 8, true)
		add("T2", 8, true)
	case protocol.TypeM3:
		add("F", 32, true)
		add("gamma", 32, true)
		add("T3", 8, true)
	case protocol.TypeM4:
		add("X", 32, true)
		add("gamma", 32, true)
		add("T3", 8, hard)
		add("T4", 8, true)
		add("tau", 32, hard)
	case protocol.TypeM5:
		add("tau", 32, true)
	}
	return s
}

// verdict is a party and the reason it must give; party "" with a nil
// reason means the forgery is accepted, which only a known weakness of
// classic may allow.
type verdict struct {
	party  string
	reason error
}

// tamper flips every bit after the header of msg, one bit at a time, hands
// each flip to try (which applies it to the message it is about to send)
// and requires one of the verdicts want lists for the field the bit lies
// in. It returns how many flips ended in each field/party.
func tamper(t *testing.T, p protocol.Profile, msg []byte, want map[string][]verdict,
	try func(flip func([]byte) []byte) (string, error)) map[string]int {
	t.Helper()
	typ := protocol.MsgType(msg[1])
	spans := layoutOf(typ, p, "alice", "sensor-7")
	var field []string // field name of each byte after the header
	for _, s := range spans {
		for range s.n {
			field = append(field, s.name)
		}
	}
	if len(field) != len(msg)-2 {
		t.Fatalf("layout of type %d covers %d bytes, message has %d", typ, len(field), len(msg)-2)
	}
	tally := map[string]int{}
	for bit := range len(field) * 8 {
		flip := func(b []byte) []byte {
			out := bytes.Clone(b)
			out[2+bit/8] ^= 1 << (bit % 8)
			return out
		}
		f := field[bit/8]
		party, err := try(flip)
		ok := false
		for _, v := range want[f] {
			if v.party == party && ((v.reason == nil && err == nil) || (v.reason != nil && errors.Is(err, v.reason))) {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("%v type %d bit %d (field %s): party %q, err %v; want one of %v", p, typ, bit, f, party, err, want[f])
		}
		tally[f+"/"+party]++
	}
	keys := make([]string, 0, len(tally))
	for k := range tally {
		keys = append(keys, fmt.Sprintf("%s=%d", k, tally[k]))
	}
	sort.Strings(keys)
	t.Logf("%v type %d: %d bit flips: %s", p, typ, len(field)*8, strings.Join(keys, " "))
	return tally
}

// TestTamperM1: the device checks only structure, T1 and replays; the
// gateway checks ID_i, kv_i, n_i, E_i and T1; theta_i reaches only the card
// (hardened: through tau_j; classic: nobody, spec section 8 item 2, so the
// first record shows it).
func TestTamperM1(t *testing.T) {
	for _, p := range twoProfiles {
		t.Run(p.String(), func(t *testing.T) {
			c := newCast(t, p)
			theta := []verdict{{"card", protocol.ReasonBadM4}}
			if p == protocol.Classic {
				theta = []verdict{{"channel", protocol.ReasonBadRecord}}
			}
			want := map[string][]verdict{
				"ID":    {{"device", protocol.ErrMalformed}, {"gateway", protocol.ReasonUnknownUser}},
				"kv":    {{"device", protocol.ErrMalformed}, {"gateway", protocol.ReasonUnknownKeyVersion}},
				"nonce": {{"gateway", protocol.ReasonBadE}},
				"E":     {{"gateway", protocol.ReasonBadE}}, // the genuine device signs the altered E_i
				"theta": theta,
				"T1":    {{"device", protocol.ReasonStaleT1}, {"gateway", protocol.ReasonBadE}},
			}
			template := c.run(t, 1).m1
			tamper(t, p, template, want, func(flip func([]byte) []byte) (string, error) {
				// Each flip is a new login on empty replay caches, so that
				// one forgery cannot make the next one a replay.
				c.freshDevice(t, c.w.devCrd)
				c.freshGateway(t)
				l, m1, err := c.user.Login(nil, c.did)
				if err != nil {
					t.Fatal(err)
				}
				return c.drive(t, l, flip(m1))
			})
		})
	}
}

// TestTamperM2: the gateway checks every field of m2. Classic I_j does not
// cover T2 (spec section 8 item 5): a T2 that stays fresh is accepted.
func TestTamperM2(t *testing.T) {
	for _, p := range twoProfiles {
		t.Run(p.String(), func(t *testing.T) {
			c := newCast(t, p)
			t2 := []verdict{{"gateway", protocol.ReasonStaleT2}, {"gateway", protocol.ReasonBadI}}
			if p == protocol.Classic {
				t2 = []verdict{{"gateway", protocol.ReasonStaleT2}, {"", nil}}
			}
			want := map[string][]verdict{
				"ID":    {{"gateway", protocol.ErrMalformed}, {"gateway", protocol.ReasonUnknownUser}},
				"kv":    {{"gateway", protocol.ErrMalformed}, {"gateway", protocol.ReasonUnknownKeyVersion}},
				"nonce": {{"gateway", protocol.ReasonBadE}},
				"E":     {{"gateway", protocol.ReasonBadI}}, // I_j covers E_i and is checked first
				"DID":   {{"gateway", protocol.ErrMalformed}, {"gateway", protocol.ReasonUnknownDevice}},
				"kvdev": {{"gateway", protocol.ErrMalformed}, {"gateway", protocol.ReasonUnknownKeyVersion}},
				"I":     {{"gateway", protocol.ReasonBadI}},
				"T1":    {{"gateway", protocol.ReasonStaleT1}, {"gateway", protocol.ReasonBadE}},
				"T2":    t2,
			}
			m2 := c.run(t, 2).m2
			ctx := context.Background()
			tally := tamper(t, p, m2, want, func(flip func([]byte) []byte) (string, error) {
				// The gateway records (ID_i, T1 or n_i) before it checks
				// E_i, so each forgery gets an empty cache.
				c.freshGateway(t)
				reply, _, err := c.gw.Verify(ctx, nil, flip(m2))
				if err != nil {
					wantReply(t, reply, p, protocol.CodeOf(err))
					return "gateway", err
				}
				if _, err := protocol.ParseM3(reply); err != nil {
					t.Fatalf("success reply %x: %v", reply, err)
				}
				return "", nil
			})
			if p == protocol.Classic {
				// Exactly the flips of T2 by 2^k <= dT stay fresh.
				n := 0
				for k := 0; int64(1)<<k <= winMs; k++ {
					n++
				}
				if got := tally["T2/"]; got != n {
					t.Errorf("classic accepted %d rewritten T2, want %d", got, n)
				}
			}
			c.freshGateway(t)
			if _, _, err := c.gw.Verify(ctx, nil, m2); err != nil {
				t.Fatalf("genuine m2 refused: %v", err)
			}
		})
	}
}

// TestTamperM3: the device checks F_ij and T3 (the unmasked beta_i must
// reproduce E_i); gamma_i is the card's to check, so the device relays a
// forged one and the card refuses it. A refused m3 leaves the device login
// waiting, and the genuine m3 then completes the login.
func TestTamperM3(t *testing.T) {
	for _, p := range twoProfiles {
		t.Run(p.String(), func(t *testing.T) {
			c := newCast(t, p)
			want := map[string][]verdict{
				"F":     {{"device", protocol.ReasonBadM3}},
				"gamma": {{"card", protocol.ReasonBadGamma}},
				"T3":    {{"device", protocol.ReasonStaleT3}, {"device", protocol.ReasonBadM3}},
			}
			a := c.run(t, 3)
			tamper(t, p, a.m3, want, func(flip func([]byte) []byte) (string, error) {
				m4, ds, err := a.dl.Respond(nil, flip(a.m3))
				if err != nil {
					return "device", err
				}
				_, _, refusal := a.login.Finish(nil, m4)
				if refusal == nil {
					t.Fatal("card accepted an m4 relaying a forged m3")
				}
				// gamma_i sits at the same offset in m3 and m4: flipping it
				// back gives the m4 the device would have sent, which the
				// card, unchanged by the refusal, must now accept.
				us, m5, err := a.login.Finish(nil, flip(m4))
				if err != nil {
					t.Fatalf("card refused the repaired m4: %v", err)
				}
				if p == protocol.Hardened {
					if ds, err = a.dl.Confirm(m5); err != nil {
						t.Fatal(err)
					}
				}
				if party, err := channelCheck(t, us, ds); party != "" {
					t.Fatalf("repaired login: %v", err)
				}
				c.tick()
				a = c.run(t, 3)
				return "card", refusal
			})
			var err error
			if a.m4, a.ds, err = a.dl.Respond(nil, a.m3); err != nil {
				t.Fatalf("genuine m3 refused after forgeries: %v", err)
			}
			finishAndCompare(t, p, a)
		})
	}
}

// finishAndCompare completes a login from m4 and requires equal keys.
func finishAndCompare(t *testing.T, p protocol.Profile, a *attempt) {
	t.Helper()
	us, m5, err := a.login.Finish(nil, a.m4)
	if err != nil {
		t.Fatalf("genuine m4 refused: %v", err)
	}
	ds := a.ds
	if p == protocol.Hardened {
		if ds, err = a.dl.Confirm(m5); err != nil {
			t.Fatalf("genuine m5 refused: %v", err)
		}
	}
	if ds == nil {
		t.Fatal("device holds no session")
	}
	if party, err := channelCheck(t, us, ds); party != "" {
		t.Fatalf("genuine login: %v", err)
	}
}

// TestTamperM4: the card checks m4. Hardened covers every field (gamma_i
// covers T3; tau_j covers X_ij, T3 and T4). Classic checks only gamma_i and
// the freshness of T4: X_ij and a fresh T4 are accepted and the card ends
// with a key the device does not hold (spec section 8 item 2). A refused
// m4 leaves the card login waiting.
func TestTamperM4(t *testing.T) {
	for _, p := range twoProfiles {
		t.Run(p.String(), func(t *testing.T) {
			c := newCast(t, p)
			want := map[string][]verdict{
				"X":     {{"card", protocol.ReasonBadM4}},
				"gamma": {{"card", protocol.ReasonBadGamma}},
				"T3":    {{"card", protocol.ReasonStaleT3}, {"card", protocol.ReasonBadGamma}},
				"T4":    {{"card", protocol.ReasonStaleT4}, {"card", protocol.ReasonBadM4}},
				"tau":   {{"card", protocol.ReasonBadM4}},
			}
			if p == protocol.Classic {
				want["X"] = []verdict{{"channel", protocol.ReasonBadRecord}}
				want["T4"] = []verdict{{"card", protocol.ReasonStaleT4}, {"channel", protocol.ReasonBadRecord}}
			}
			a := c.run(t, 4)
			tamper(t, p, a.m4, want, func(flip func([]byte) []byte) (string, error) {
				us, m5, err := a.login.Finish(nil, flip(a.m4))
				if err != nil {
					return "card", err
				}
				ds := a.ds
				if p == protocol.Hardened {
					if ds, err = a.dl.Confirm(m5); err != nil {
						return "device", err
					}
				}
				party, err := channelCheck(t, us, ds)
				c.tick()
				a = c.run(t, 4)
				return party, err
			})
			finishAndCompare(t, p, a)
		})
	}
}

// TestTamperM5: the hardened device checks tau_i; a refused m5 leaves the
// login pending. Classic has no m5: its device is done after m4.
func TestTamperM5(t *testing.T) {
	c := newCast(t, protocol.Hardened)
	a := c.run(t, 4)
	us, m5, err := a.login.Finish(nil, a.m4)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]verdict{"tau": {{"device", protocol.ReasonBadM5}}}
	tamper(t, protocol.Hardened, m5, want, func(flip func([]byte) []byte) (string, error) {
		if _, err := a.dl.Confirm(flip(m5)); err != nil {
			return "device", err
		}
		return "", nil
	})
	ds, err := a.dl.Confirm(m5)
	if err != nil {
		t.Fatalf("genuine m5 refused after forgeries: %v", err)
	}
	if party, err := channelCheck(t, us, ds); party != "" {
		t.Fatal(err)
	}

	c = newCast(t, protocol.Classic)
	a = c.run(t, 5)
	if a.m5 != nil {
		t.Fatal("classic card produced an m5")
	}
	// The first checks of spec section 7: the hardened m5 has the other
	// profile's byte, and a classic one is malformed (classic has no m5).
	if _, err := a.dl.Confirm(m5); !errors.Is(err, protocol.ErrUnsupportedProfile) {
		t.Fatalf("classic device took a hardened m5: %v", err)
	}
	classic5 := append([]byte{byte(protocol.Classic)}, m5[1:]...)
	if _, err := a.dl.Confirm(classic5); !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("classic device took a classic m5: %v", err)
	}
}

// wantStale requires a stale_timestamp refusal with the given reason.
func wantStale(t *testing.T, what string, err, reason error) {
	t.Helper()
	if !errors.Is(err, protocol.ErrStaleTimestamp) || !errors.Is(err, reason) {
		t.Fatalf("%s: err %v, want %v", what, err, reason)
	}
}

// Each freshness check of spec section 7 (|T - now| <= dT) is probed at
// exactly dT, which must pass, and dT + 1 ms, which must fail, in the
// past and in the future.

func TestFreshnessT1AtDevice(t *testing.T) {
	for _, p := range twoProfiles {
		c := newCast(t, p)
		for _, off := range []int64{-winMs - 1, -winMs, winMs, winMs + 1} {
			c.at(off, 0, 0)
			_, m1, err := c.user.Login(nil, c.did)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.dev.Start(context.Background(), nil, m1)
			what := fmt.Sprintf("%v T1 = now%+d ms", p, off)
			if off == -winMs || off == winMs {
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				continue
			}
			wantStale(t, what, err, protocol.ReasonStaleT1)
		}
	}
}

func TestFreshnessAtGateway(t *testing.T) {
	w := winMs
	cases := []struct {
		name          string
		card, dev, gw int64 // clock offsets, ms
		reason        error // nil: accepted
	}{
		{"T1 past, dT+1", -w - 1, -1, 0, protocol.ReasonStaleT1},
		{"T1 past, dT", -w, -1, 0, nil},
		{"T1 future, dT+1", w + 1, 1, 0, protocol.ReasonStaleT1},
		{"T1 future, dT", w, 1, 0, nil},
		{"T2 past, dT+1", 1, 0, w + 1, protocol.ReasonStaleT2},
		{"T2 past, dT", 0, 0, w, nil},
		{"T2 future, dT+1", -1, 0, -w - 1, protocol.ReasonStaleT2},
		{"T2 future, dT", 0, 0, -w, nil},
	}
	for _, p := range twoProfiles {
		c := newCast(t, p)
		for _, tc := range cases {
			c.at(tc.card, tc.dev, tc.gw)
			// Classic: two cases share T1, so E_i and the gateway's key.
			c.freshDevice(t, c.w.devCrd)
			c.freshGateway(t)
			a := c.run(t, 2)
			reply, _, err := c.gw.Verify(context.Background(), nil, a.m2)
			what := fmt.Sprintf("%v %s", p, tc.name)
			if tc.reason == nil {
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				continue
			}
			wantStale(t, what, err, tc.reason)
			wantReply(t, reply, p, protocol.ErrStaleTimestamp)
		}
	}
}

func TestFreshnessT3AtDevice(t *testing.T) {
	for _, p := range twoProfiles {
		c := newCast(t, p)
		for _, dir := range []int64{1, -1} {
			c.at(0, 0, 0)
			c.freshDevice(t, c.w.devCrd)
			c.freshGateway(t)
			a := c.run(t, 3) // T3 = base
			c.at(0, dir*(winMs+1), 0)
			_, _, err := a.dl.Respond(nil, a.m3)
			wantStale(t, fmt.Sprintf("%v T3 = now%+d ms", p, -dir*(winMs+1)), err, protocol.ReasonStaleT3)
			c.at(0, dir*winMs, 0)
			if _, _, err := a.dl.Respond(nil, a.m3); err != nil {
				t.Fatalf("%v T3 = now%+d ms after a stale one: %v", p, -dir*winMs, err)
			}
		}
	}
}

func TestFreshnessT4AtCard(t *testing.T) {
	for _, p := range twoProfiles {
		c := newCast(t, p)
		for _, dir := range []int64{1, -1} {
			c.at(0, 0, 0)
			c.freshDevice(t, c.w.devCrd)
			c.freshGateway(t)
			a := c.run(t, 4) // T3 = T4 = base
			c.at(dir*(winMs+1), 0, 0)
			_, _, err := a.login.Finish(nil, a.m4)
			wantStale(t, fmt.Sprintf("%v T4 = now%+d ms", p, -dir*(winMs+1)), err, protocol.ReasonStaleT4)
			c.at(dir*winMs, 0, 0)
			finishAndCompare(t, p, a)
		}
	}
}

// TestFreshnessT3VersusT4AtCard: the hardened card requires T3 within dT
// of T4. An honest device never sends anything else (it checked T3
// against its clock when it stamped T4), so the m4 here is built by the
// reference from K_i, as only a party holding it could.
func TestFreshnessT3VersusT4AtCard(t *testing.T) {
	r := newFuzzRig(t, protocol.Hardened)
	m3, err := protocol.ParseM3(r.m3)
	if err != nil {
		t.Fatal(err)
	}
	t3 := m3.T3
	if genuine, _ := r.forgeM4(m3.Gamma, t3, t3, r.kj); !bytes.Equal(genuine, r.m4) {
		t.Fatal("reference m4 differs from the device's: the forgeries below would prove nothing")
	}
	kj := fzPattern(0x33)
	for _, dir := range []int64{1, -1} {
		r.now = time.UnixMilli(rigT0)
		login, m1, err := r.user.Login(nil, rigDevice)
		if err != nil || !bytes.Equal(m1, r.m1) {
			t.Fatalf("login not reproducible: %v", err)
		}
		t4 := uint64(int64(t3) + dir*(winMs+1))
		r.now = time.UnixMilli(int64(t4)) // T4 itself is fresh at the card
		stale, _ := r.forgeM4(m3.Gamma, t3, t4, kj)
		_, _, err = login.Finish(nil, stale)
		wantStale(t, fmt.Sprintf("T3 = T4%+d ms", -dir*(winMs+1)), err, protocol.ReasonStaleT3)

		t4 = uint64(int64(t3) + dir*winMs)
		r.now = time.UnixMilli(int64(t4))
		inside, wantM5 := r.forgeM4(m3.Gamma, t3, t4, kj)
		_, m5, err := login.Finish(nil, inside)
		if err != nil || !bytes.Equal(m5, wantM5) {
			t.Fatalf("T3 = T4%+d ms refused after a stale one: %v", -dir*winMs, err)
		}
	}
}

func TestFreshnessRegistration(t *testing.T) {
	for _, p := range twoProfiles {
		w := newWorld(t, p)
		req, err := protocol.NewRegistrationRequest(p, "bob", "pw", fastKDF, w.cfg)
		if err != nil {
			t.Fatal(err)
		}
		now := ms(w.now)
		for _, off := range []int64{-winMs - 1, -winMs, winMs, winMs + 1} {
			r := req
			r.T = uint64(int64(now) + off)
			_, err := protocol.IssueCard(&r, w.mk, w.cfg)
			what := fmt.Sprintf("%v T_reg = now%+d ms", p, off)
			if off == -winMs || off == winMs {
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				continue
			}
			wantStale(t, what, err, protocol.ReasonStaleReg)
		}
	}
}

// TestReplayAtDevice: the device refuses an m1 it has seen while the
// entry lives (until now > T1 + dT, measured from T1, not from when it
// was seen); after that the m1 is necessarily stale and refused as such.
func TestReplayAtDevice(t *testing.T) {
	ctx := context.Background()
	for _, p := range twoProfiles {
		for _, t1 := range []int64{0, winMs} { // T1 on time, and T1 at the future edge
			c := newCast(t, p)
			c.at(t1, 0, 0)
			m1 := c.run(t, 1).m1
			if _, _, err := c.dev.Start(ctx, nil, m1); err != nil {
				t.Fatal(err)
			}
			for _, devT := range []int64{0, t1 + winMs} {
				c.at(t1, devT, 0)
				if _, _, err := c.dev.Start(ctx, nil, m1); !errors.Is(err, protocol.ErrReplayed) || !errors.Is(err, protocol.ReasonLoginReplay) {
					t.Fatalf("%v T1 %+d, replay at %+d ms: %v", p, t1, devT, err)
				}
			}
			c.at(t1, t1+winMs+1, 0)
			_, _, err := c.dev.Start(ctx, nil, m1)
			wantStale(t, fmt.Sprintf("%v replay after T1 + dT", p), err, protocol.ReasonStaleT1)
		}
	}
}

// TestReplayAtGateway: as the device, with the wire reply checked.
func TestReplayAtGateway(t *testing.T) {
	ctx := context.Background()
	for _, p := range twoProfiles {
		c := newCast(t, p)
		m2 := c.run(t, 2).m2 // T1 = T2 = base
		if _, _, err := c.gw.Verify(ctx, nil, m2); err != nil {
			t.Fatal(err)
		}
		for _, gwT := range []int64{0, 1, winMs} {
			c.at(0, 0, gwT)
			reply, _, err := c.gw.Verify(ctx, nil, m2)
			if !errors.Is(err, protocol.ReasonLoginReplay) {
				t.Fatalf("%v replay at +%d ms: %v", p, gwT, err)
			}
			wantReply(t, reply, p, protocol.ErrReplayed)
		}
		c.at(0, 0, winMs+1)
		reply, _, err := c.gw.Verify(ctx, nil, m2)
		if !errors.Is(err, protocol.ErrStaleTimestamp) {
			t.Fatalf("%v replay after T1 + dT: %v", p, err)
		}
		wantReply(t, reply, p, protocol.ErrStaleTimestamp)
	}
}

// TestGatewayReplayKey: the gateway's replay key is (ID_i, T1) under
// classic and (ID_i, n_i) under hardened. Two genuine logins of one user
// in one millisecond, to two devices, collide at the gateway only under
// classic; under classic they would not even pass one device, since E_i
// then depends only on T1 and the identities (spec section 8 item 6).
func TestGatewayReplayKey(t *testing.T) {
	ctx := context.Background()
	for _, p := range twoProfiles {
		c := newCast(t, p)
		first := c.run(t, 2)
		_, m1, err := c.user.Login(nil, c.did)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = c.dev.Start(ctx, nil, m1)
		if sameE := p == protocol.Classic; sameE != errors.Is(err, protocol.ReasonLoginReplay) {
			t.Errorf("%v: second login in the same ms to the same device: %v", p, err)
		}

		mustOK(t, c.w.reg.AddDevice("sensor-8"))
		cred, err := protocol.ProvisionDevice(p, "sensor-8", c.w.mk)
		mustOK(t, err)
		c.did = "sensor-8"
		c.freshDevice(t, cred)
		second := c.run(t, 2)
		if _, _, err := c.gw.Verify(ctx, nil, first.m2); err != nil {
			t.Fatal(err)
		}
		_, _, err = c.gw.Verify(ctx, nil, second.m2)
		if p == protocol.Classic && !errors.Is(err, protocol.ReasonLoginReplay) {
			t.Errorf("classic: second login in the same ms: %v, want replay", err)
		}
		if p == protocol.Hardened && err != nil {
			t.Errorf("hardened: second login in the same ms: %v", err)
		}
	}
}

// TestWrongPasswordClassic: classic has no local check; the gateway finds
// that E_i does not verify and answers only "rejected".
func TestWrongPasswordClassic(t *testing.T) {
	c := newCast(t, protocol.Classic)
	u, err := protocol.Unlock(c.w.card, "correct horsE", c.cfg(&c.cardT))
	if err != nil {
		t.Fatalf("classic Unlock refused a password locally: %v", err)
	}
	c.user = u
	m2 := c.run(t, 2).m2 // the device has no way to tell
	reply, _, err := c.gw.Verify(context.Background(), nil, m2)
	if !errors.Is(err, protocol.ReasonBadE) {
		t.Fatalf("gateway: %v, want bad E", err)
	}
	wantReply(t, reply, protocol.Classic, protocol.ErrRejected)
}

// TestWrongPasswordHardened: the fuzzy verifier refuses 255 of 256 wrong
// passwords locally; one that slips through is refused by the gateway with
// the same single wire code as everything else.
func TestWrongPasswordHardened(t *testing.T) {
	c := newCast(t, protocol.Hardened)
	cfg := c.cfg(&c.cardT)
	caught, passer := 0, ""
	for i := range 64 {
		pw := fmt.Sprintf("wrong password %d", i)
		switch _, err := protocol.Unlock(c.w.card, pw, cfg); {
		case errors.Is(err, protocol.ReasonWrongPassword):
			caught++
		case err == nil:
			passer = pw
		default:
			t.Fatal(err)
		}
	}
	// 64 tries at 1/256 each: fewer than 56 caught has probability < 1e-15.
	if caught < 56 {
		t.Fatalf("fuzzy verifier caught %d of 64 wrong passwords", caught)
	}
	t.Logf("fuzzy verifier caught %d of 64 wrong passwords", caught)
	for i := 64; passer == "" && i < 20000; i++ {
		pw := fmt.Sprintf("wrong password %d", i)
		if _, err := protocol.Unlock(c.w.card, pw, cfg); err == nil {
			passer = pw
		}
	}
	if passer == "" {
		t.Fatal("no wrong password passed the fuzzy verifier in 20000 tries")
	}
	u, err := protocol.Unlock(c.w.card, passer, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.user = u
	m2 := c.run(t, 2).m2
	reply, _, err := c.gw.Verify(context.Background(), nil, m2)
	if !errors.Is(err, protocol.ReasonBadE) {
		t.Fatalf("gateway: %v, want bad E", err)
	}
	wantReply(t, reply, protocol.Hardened, protocol.ErrRejected)
	if _, code, err := protocol.ParseError(reply); err != nil || !errors.Is(code, protocol.ErrRejected) {
		t.Fatalf("ParseError(%x) = %v, %v", reply, code, err)
	}
}

// TestGatewayRejectionReasons: every refusal about identities, keys and
// policy carries its precise reason in err and the one wire code
// "rejected", byte for byte the same, so the wire tells an outsider
// nothing about which.
func TestGatewayRejectionReasons(t *testing.T) {
	issue := func(t *testing.T, c *cast, id string, mk protocol.MasterKey) {
		t.Helper()
		cfg := c.cfg(&c.cardT)
		req, err := protocol.NewRegistrationRequest(c.p, id, "pw", fastKDF, cfg)
		if err != nil {
			t.Fatal(err)
		}
		card, err := protocol.IssueCard(&req, mk, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c.user, err = protocol.Unlock(card, "pw", cfg); err != nil {
			t.Fatal(err)
		}
	}
	provision := func(t *testing.T, c *cast, did string, mk protocol.MasterKey) {
		t.Helper()
		cred, err := protocol.ProvisionDevice(c.p, did, mk)
		if err != nil {
			t.Fatal(err)
		}
		c.did = did
		c.freshDevice(t, cred)
	}
	newKey := func(v uint8) protocol.MasterKey {
		mk := protocol.MasterKey{Version: v}
		rand.Read(mk.Key[:])
		return mk
	}
	cases := []struct {
		name     string
		hardened bool // hardened only
		setup    func(t *testing.T, c *cast)
		reason   error
	}{
		{"revoked user", false, func(t *testing.T, c *cast) { mustOK(t, c.w.reg.RevokeUser("alice")) }, protocol.ReasonRevokedUser},
		{"revoked device", false, func(t *testing.T, c *cast) { mustOK(t, c.w.reg.RevokeDevice("sensor-7")) }, protocol.ReasonRevokedDevice},
		{"unknown user", false, func(t *testing.T, c *cast) { issue(t, c, "bob", c.w.mk) }, protocol.ReasonUnknownUser},
		{"unknown device", false, func(t *testing.T, c *cast) { provision(t, c, "ghost", c.w.mk) }, protocol.ReasonUnknownDevice},
		{"retired key", false, func(t *testing.T, c *cast) { c.w.reg.RetireKey(1) }, protocol.ReasonUnknownKeyVersion},
		{"unknown user key version", true, func(t *testing.T, c *cast) {
			mustOK(t, c.w.reg.AddUser("bob"))
			issue(t, c, "bob", newKey(2))
		}, protocol.ReasonUnknownKeyVersion},
		{"unknown device key version", true, func(t *testing.T, c *cast) {
			mustOK(t, c.w.reg.AddDevice("sensor-9"))
			provision(t, c, "sensor-9", newKey(2))
		}, protocol.ReasonUnknownKeyVersion},
		{"policy denial", false, func(t *testing.T, c *cast) {
			reg := prototest.NewRegistry(c.p, false)
			reg.AddKey(c.w.mk)
			mustOK(t, reg.AddUser("alice"))
			mustOK(t, reg.AddDevice("sensor-7"))
			mustOK(t, reg.AddDevice("sensor-8"))
			reg.Allow("alice", "sensor-8") // another device does not count
			c.w.reg = reg
		}, protocol.ReasonPolicyDenied},
	}
	for _, p := range twoProfiles {
		for _, tc := range cases {
			if tc.hardened && p != protocol.Hardened {
				continue
			}
			t.Run(p.String()+"/"+tc.name, func(t *testing.T) {
				c := newCast(t, p)
				tc.setup(t, c)
				c.freshGateway(t)
				m2 := c.run(t, 2).m2
				reply, v, err := c.gw.Verify(context.Background(), nil, m2)
				if !errors.Is(err, tc.reason) || !errors.Is(err, protocol.ErrRejected) {
					t.Fatalf("err %v, want %v", err, tc.reason)
				}
				wantReply(t, reply, p, protocol.ErrRejected)
				if string(v.User) == "" || string(v.Device) != c.did {
					t.Errorf("verification for the audit log lacks the claimed identities: %+v", v)
				}
			})
		}
	}
	// The policy case's positive control: the allowed pair gets in.
	for _, p := range twoProfiles {
		c := newCast(t, p)
		reg := prototest.NewRegistry(p, false)
		reg.AddKey(c.w.mk)
		mustOK(t, reg.AddUser("alice"))
		mustOK(t, reg.AddDevice("sensor-7"))
		reg.Allow("alice", "sensor-7")
		c.w.reg = reg
		c.freshGateway(t)
		c.run(t, 5)
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWrongProfile: a party refuses every message of the other profile
// with unsupported_profile, and a refused message leaves its login as it
// was.
func TestWrongProfile(t *testing.T) {
	ctx := context.Background()
	casts := map[protocol.Profile]*cast{
		protocol.Classic:  newCast(t, protocol.Classic),
		protocol.Hardened: newCast(t, protocol.Hardened),
	}
	for from, src := range casts {
		for to, dst := range casts {
			if from == to {
				continue
			}
			a := src.run(t, 2)
			src.tick()
			if _, _, err := dst.dev.Start(ctx, nil, a.m1); !errors.Is(err, protocol.ErrUnsupportedProfile) {
				t.Errorf("%v m1 into %v device: %v", from, to, err)
			}
			reply, _, err := dst.gw.Verify(ctx, nil, a.m2)
			if !errors.Is(err, protocol.ReasonWrongProfile) {
				t.Errorf("%v m2 into %v gateway: %v", from, to, err)
			}
			wantReply(t, reply, from, protocol.ErrUnsupportedProfile)

			b := dst.run(t, 3)
			dst.tick()
			m3 := bytes.Clone(b.m3)
			m3[0] = byte(from) // m3 has one layout in both profiles
			if _, _, err := b.dl.Respond(nil, m3); !errors.Is(err, protocol.ErrUnsupportedProfile) {
				t.Errorf("%v m3 into %v device: %v", from, to, err)
			}
			if b.m4, b.ds, err = b.dl.Respond(nil, b.m3); err != nil {
				t.Fatalf("%v: genuine m3 after a wrong-profile one: %v", to, err)
			}
			m4 := (&protocol.M4{Profile: from}).Append(nil)
			if _, _, err := b.login.Finish(nil, m4); !errors.Is(err, protocol.ErrUnsupportedProfile) {
				t.Errorf("%v m4 into %v card: %v", from, to, err)
			}
			finishAndCompare(t, to, b)
		}
	}
	// Replies to an m2 whose profile byte is not a profile carry 0x00.
	g := casts[protocol.Hardened].gw
	for _, tc := range []struct {
		m2   []byte
		code protocol.Code
	}{
		{[]byte{0x03, 0x02, 0x05, 'a'}, protocol.ErrUnsupportedProfile},
		{[]byte{0x00}, protocol.ErrUnsupportedProfile},
		{nil, protocol.ErrMalformed},
		{[]byte{0x02}, protocol.ErrMalformed},
		{[]byte{0x02, 0x03}, protocol.ErrMalformed},
	} {
		reply, _, err := g.Verify(ctx, nil, tc.m2)
		if !errors.Is(err, tc.code) {
			t.Errorf("m2 %x: %v, want %v", tc.m2, err, tc.code)
		}
		wantP := protocol.Profile(0)
		if len(tc.m2) > 0 && protocol.Profile(tc.m2[0]).Valid() {
			wantP = protocol.Profile(tc.m2[0])
		}
		wantReply(t, reply, wantP, tc.code)
	}
}

// TestOutOfOrder: every step refuses to run before its turn, and a second
// message for a step its login has passed is replayed (spec section 7).
func TestOutOfOrder(t *testing.T) {
	for _, p := range twoProfiles {
		t.Run(p.String(), func(t *testing.T) {
			c := newCast(t, p)
			a := c.run(t, 3)
			early := append([]byte{byte(p), byte(protocol.TypeM5)}, make([]byte, protocol.Size)...)
			_, err := a.dl.Confirm(early)
			if want := map[protocol.Profile]error{protocol.Hardened: protocol.ErrState, protocol.Classic: protocol.ErrMalformed}[p]; !errors.Is(err, want) {
				t.Errorf("Confirm before Respond: %v, want %v", err, want)
			}
			m4, ds, err := a.dl.Respond(nil, a.m3)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := a.dl.Respond(nil, a.m3); !errors.Is(err, protocol.ReasonStepReplay) || !errors.Is(err, protocol.ErrReplayed) {
				t.Errorf("Respond twice: %v", err)
			}
			us, m5, err := a.login.Finish(nil, m4)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := a.login.Finish(nil, m4); !errors.Is(err, protocol.ReasonStepReplay) || !errors.Is(err, protocol.ErrReplayed) {
				t.Errorf("Finish twice: %v", err)
			}
			if p == protocol.Hardened {
				if ds, err = a.dl.Confirm(m5); err != nil {
					t.Fatal(err)
				}
				if _, err := a.dl.Confirm(m5); !errors.Is(err, protocol.ReasonStepReplay) || !errors.Is(err, protocol.ErrReplayed) {
					t.Errorf("Confirm twice: %v", err)
				}
			} else if _, err := a.dl.Confirm(nil); !errors.Is(err, protocol.ErrMalformed) {
				t.Errorf("classic Confirm after Respond: %v", err)
			}
			if party, err := channelCheck(t, us, ds); party != "" {
				t.Fatal(err)
			}

			// Closed logins and users refuse everything.
			c.tick()
			b := c.run(t, 4)
			b.login.Close()
			if _, _, err := b.login.Finish(nil, b.m4); !errors.Is(err, protocol.ErrState) {
				t.Errorf("Finish after Close: %v", err)
			}
			c.tick()
			b = c.run(t, 3)
			b.dl.Close()
			if _, _, err := b.dl.Respond(nil, b.m3); !errors.Is(err, protocol.ErrState) {
				t.Errorf("Respond after Close: %v", err)
			}
			c.user.Close()
			if _, _, err := c.user.Login(nil, c.did); !errors.Is(err, protocol.ErrState) {
				t.Errorf("Login after User.Close: %v", err)
			}
		})
	}
}

// TestPendingLoginExpires: the hardened device holds a login between m4
// and m5 for at most dT after T4.
func TestPendingLoginExpires(t *testing.T) {
	c := newCast(t, protocol.Hardened)
	for _, late := range []int64{winMs, winMs + 1} {
		c.at(late*10, late*10, late*10) // a distinct T1 per round
		t4 := late * 10
		a := c.run(t, 4)
		_, m5, err := a.login.Finish(nil, a.m4)
		if err != nil {
			t.Fatal(err)
		}
		c.at(t4, t4+late, t4)
		_, err = a.dl.Confirm(m5)
		if late == winMs {
			if err != nil {
				t.Fatalf("Confirm at T4 + dT: %v", err)
			}
			continue
		}
		if !errors.Is(err, protocol.ReasonSessionExpired) {
			t.Fatalf("Confirm at T4 + dT + 1 ms: %v", err)
		}
		if _, err := a.dl.Confirm(m5); !errors.Is(err, protocol.ReasonSessionExpired) {
			t.Fatalf("Confirm after expiry: %v", err)
		}
	}
}

// TestSessionSequence: each direction accepts only increasing sequence
// numbers; gaps are allowed, replays and reordering are not.
func TestSessionSequence(t *testing.T) {
	for _, p := range twoProfiles {
		c := newCast(t, p)
		a := c.run(t, 5)
		for _, dir := range []struct {
			name       string
			from, into *protocol.Session
		}{{"user->device", a.us, a.ds}, {"device->user", a.ds, a.us}} {
			var recs [][]byte
			for i := range 3 {
				r, err := dir.from.Seal(nil, []byte{byte(i)})
				if err != nil {
					t.Fatal(err)
				}
				recs = append(recs, r)
			}
			open := func(i int, want error) {
				t.Helper()
				pt, err := dir.into.Open(nil, recs[i])
				if want == nil {
					if err != nil || !bytes.Equal(pt, []byte{byte(i)}) {
						t.Fatalf("%v %s record %d: %x %v", p, dir.name, i+1, pt, err)
					}
					return
				}
				if !errors.Is(err, want) || protocol.CodeOf(err) != protocol.ErrReplayed || pt != nil {
					t.Fatalf("%v %s record %d: %v, want %v", p, dir.name, i+1, err, want)
				}
			}
			open(0, nil)
			open(0, protocol.ReasonRecordReplay) // replay
			open(2, nil)                         // gap
			open(1, protocol.ReasonRecordReplay) // reordered
			open(2, protocol.ReasonRecordReplay)
		}
	}
}

// TestSessionTamper: every bit of a record is covered (the header as AEAD
// associated data), and a refused record leaves the session unchanged.
func TestSessionTamper(t *testing.T) {
	for _, p := range twoProfiles {
		c := newCast(t, p)
		a := c.run(t, 5)
		first, _ := a.us.Seal(nil, []byte("one"))
		if _, err := a.ds.Open(nil, first); err != nil {
			t.Fatal(err)
		}
		rec, _ := a.us.Seal(nil, []byte("sensor.read")) // seq 2
		for bit := range len(rec) * 8 {
			forged := bytes.Clone(rec)
			forged[bit/8] ^= 1 << (bit % 8)
			var want []error
			switch i := bit / 8; {
			case i == 0:
				want = []error{protocol.ErrUnsupportedProfile}
			case i == 1:
				want = []error{protocol.ErrMalformed}
			case i < 2+protocol.SIDSize:
				want = []error{protocol.ReasonBadRecord}
			case i < 2+protocol.SIDSize+8: // seq: lower is a replay, higher fails the tag
				want = []error{protocol.ReasonBadRecord, protocol.ReasonRecordReplay}
			default:
				want = []error{protocol.ReasonBadRecord}
			}
			_, err := a.ds.Open(nil, forged)
			ok := false
			for _, w := range want {
				ok = ok || errors.Is(err, w)
			}
			if !ok {
				t.Fatalf("%v record bit %d: %v, want one of %v", p, bit, err, want)
			}
		}
		for n := range len(rec) {
			if _, err := a.ds.Open(nil, rec[:n]); err == nil {
				t.Fatalf("%v record truncated to %d bytes opened", p, n)
			}
		}
		if pt, err := a.ds.Open(nil, rec); err != nil || string(pt) != "sensor.read" {
			t.Fatalf("%v genuine record after forgeries: %q %v", p, pt, err)
		}
	}
}

// TestSessionWrongSessionOrDirection: a record opens only in its own
// session and its own direction.
func TestSessionWrongSessionOrDirection(t *testing.T) {
	for _, p := range twoProfiles {
		c := newCast(t, p)
		a := c.run(t, 5)
		c.tick()
		b := c.run(t, 5)
		if a.us.SID() == b.us.SID() {
			t.Fatal("two logins share a sid")
		}
		other, _ := b.us.Seal(nil, []byte("x"))
		if _, err := a.ds.Open(nil, other); !errors.Is(err, protocol.ReasonBadRecord) {
			t.Errorf("%v record of another session: %v", p, err)
		}
		// The other session's record under this session's sid: the key
		// still differs.
		resid := bytes.Clone(other)
		sid := a.us.SID()
		copy(resid[2:], sid[:])
		if _, err := a.ds.Open(nil, resid); !errors.Is(err, protocol.ReasonBadRecord) {
			t.Errorf("%v record re-labelled with this sid: %v", p, err)
		}
		own, _ := a.ds.Seal(nil, []byte("x"))
		if _, err := a.ds.Open(nil, own); !errors.Is(err, protocol.ReasonBadRecord) {
			t.Errorf("%v device opened its own record as the user's: %v", p, err)
		}
		mine, _ := a.us.Seal(nil, []byte("x"))
		if _, err := a.us.Open(nil, mine); !errors.Is(err, protocol.ReasonBadRecord) {
			t.Errorf("%v card opened its own record as the device's: %v", p, err)
		}
		if _, err := a.ds.Open(nil, mine); err != nil {
			t.Errorf("%v genuine record after refusals: %v", p, err)
		}
		if _, err := a.us.Open(nil, own); err != nil {
			t.Errorf("%v genuine device record after refusals: %v", p, err)
		}
	}
}

// TestSessionExpiry: a session ends after SessionIdle without use and
// after SessionLife in any case, by the injected clock.
func TestSessionExpiry(t *testing.T) {
	for _, lim := range []struct{ idle, life time.Duration }{
		{0, 0}, // defaults
		{2 * time.Minute, 7 * time.Minute},
	} {
		idle, life := lim.idle, lim.life
		if idle == 0 {
			idle, life = protocol.DefaultSessionIdle, protocol.DefaultSessionLife
		}
		for _, p := range twoProfiles {
			name := fmt.Sprintf("%v idle %v life %v", p, idle, life)
			c := newCastWith(t, p, lim.idle, lim.life)
			setAll := func(d time.Duration) { c.cardT, c.devT, c.gwT = c.base.Add(d), c.base.Add(d), c.base.Add(d) }
			exchange := func(d time.Duration, a *attempt) error {
				setAll(d)
				rec, err := a.us.Seal(nil, []byte("ping"))
				if err != nil {
					return err
				}
				_, err = a.ds.Open(nil, rec)
				return err
			}

			a := c.run(t, 5) // created at base
			if err := exchange(idle, a); err != nil {
				t.Fatalf("%s: used after exactly idle: %v", name, err)
			}
			setAll(2 * idle)
			if a.us.Expired() || a.ds.Expired() {
				t.Fatalf("%s: expired at exactly idle since last use", name)
			}
			if err := exchange(2*idle+time.Millisecond, a); !errors.Is(err, protocol.ReasonSessionExpired) {
				t.Fatalf("%s: idle + 1 ms: %v", name, err)
			}
			if !a.us.Expired() || !a.ds.Expired() {
				t.Fatalf("%s: Expired false after idle", name)
			}
			if _, err := a.ds.Seal(nil, nil); !errors.Is(err, protocol.ReasonSessionExpired) {
				t.Fatalf("%s: device Seal after idle: %v", name, err)
			}

			// Max life: used often enough never to idle out.
			c.base = c.base.Add(time.Hour * 24)
			setAll(0)
			c.freshGateway(t)
			b := c.run(t, 5)
			step := idle - time.Millisecond
			for d := step; d < life; d += step {
				if err := exchange(d, b); err != nil {
					t.Fatalf("%s: in use at %v: %v", name, d, err)
				}
			}
			if err := exchange(life, b); err != nil {
				t.Fatalf("%s: at exactly life: %v", name, err)
			}
			if err := exchange(life+time.Millisecond, b); !errors.Is(err, protocol.ReasonSessionExpired) {
				t.Fatalf("%s: life + 1 ms: %v", name, err)
			}
		}
	}
}

// TestSessionClosed: Close ends both directions.
func TestSessionClosed(t *testing.T) {
	c := newCast(t, protocol.Hardened)
	a := c.run(t, 5)
	rec, _ := a.us.Seal(nil, []byte("x"))
	a.ds.Close()
	if _, err := a.ds.Open(nil, rec); !errors.Is(err, protocol.ReasonSessionExpired) {
		t.Errorf("Open after Close: %v", err)
	}
	if _, err := a.ds.Seal(nil, nil); !errors.Is(err, protocol.ReasonSessionExpired) {
		t.Errorf("Seal after Close: %v", err)
	}
	if a.ds.Fingerprint() != [protocol.Size]byte{} {
		t.Error("fingerprint kept after Close")
	}
}

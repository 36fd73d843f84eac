package protocol_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/protocol/prototest"
)

// This file holds a fuzz target for every function that reads untrusted
// bytes, and the deterministic rig they share. Each role target runs its
// step on fresh state with the same randomness, so an input always meets
// the same state and a crasher reproduces; and each checks the outcome
// against an independent computation from PROTOCOL.md, so "accepted" is
// tested, not just "did not panic".

// fzRand fills every read with the same bytes, starting at its own
// value: each login draws the same n_i, K_i and K_j, and a test knows them.
type fzRand byte

func (r fzRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r) + byte(i)
	}
	return len(p), nil
}

func fzPattern(r fzRand) (b [protocol.Size]byte) {
	r.Read(b[:])
	return b
}

// Reference primitives written from PROTOCOL.md sections 2 and 6 with the
// standard library, independent of the package's optimised ones.

func fzH(parts ...[]byte) [protocol.Size]byte {
	d := sha256.New()
	for _, p := range parts {
		d.Write(p)
	}
	var out [protocol.Size]byte
	d.Sum(out[:0])
	return out
}

func fzM(key []byte, label string, parts ...[]byte) [protocol.Size]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte{byte(len(label))})
	m.Write([]byte(label))
	for _, p := range parts {
		m.Write(p)
	}
	var out [protocol.Size]byte
	m.Sum(out[:0])
	return out
}

func fzTS(t uint64) []byte { return binary.BigEndian.AppendUint64(nil, t) }

func fzID8(id string) []byte { return append([]byte{byte(len(id))}, id...) }

func fzXOR(a, b [protocol.Size]byte) (out [protocol.Size]byte) {
	for i := range out {
		out[i] = a[i] ^ b[i]
	}
	return out
}

// fzOpen opens a user->device record with keys derived independently,
// requiring what section 9 requires of a first record: the profile, type
// and sid, and a sequence number of at least 1.
func fzOpen(p protocol.Profile, k *protocol.ChannelKeys, rec []byte) ([]byte, bool) {
	const hdr = 2 + protocol.SIDSize + 8
	if len(rec) < hdr+chacha20poly1305.Overhead || rec[0] != byte(p) || rec[1] != byte(protocol.TypeRecord) ||
		!bytes.Equal(rec[2:2+protocol.SIDSize], k.SID[:]) {
		return nil, false
	}
	seq := binary.BigEndian.Uint64(rec[2+protocol.SIDSize : hdr])
	if seq == 0 {
		return nil, false
	}
	aead, err := chacha20poly1305.New(k.UserToDevice[:])
	if err != nil {
		panic(err)
	}
	var nonce [chacha20poly1305.NonceSize]byte
	binary.BigEndian.PutUint64(nonce[4:], seq)
	pt, err := aead.Open(nil, nonce[:], rec[hdr:], rec[:hdr])
	return pt, err == nil
}

// fuzzRig is one enrolled user, one device and one gateway of a profile,
// all on one clock, with fixed keys and fixed randomness, and one genuine
// login (m1..m5, sealed records) computed once.
type fuzzRig struct {
	p       protocol.Profile
	now     time.Time
	reg     *prototest.Registry
	mk      protocol.MasterKey
	cred    protocol.DeviceCredential
	user    *protocol.User
	cardCfg protocol.Config
	devCfg  protocol.Config
	gwCfg   protocol.Config

	m1, m2, m3, m4, m5 []byte
	ki, kj             [protocol.Size]byte
	e, theta           [protocol.Size]byte
	keys               protocol.ChannelKeys
	records            [][]byte // user->device, seq 1, 2, 3
}

const (
	rigUser   = "alice"
	rigDevice = "sensor-7"
	rigPW     = "correct horse"
	rigT0     = 1_760_000_000_000
	cardRand  = fzRand(0x10)
	devRand   = fzRand(0x80)
)

func newFuzzRig(tb testing.TB, p protocol.Profile) *fuzzRig {
	tb.Helper()
	r := &fuzzRig{p: p, now: time.UnixMilli(rigT0), ki: fzPattern(cardRand), kj: fzPattern(devRand)}
	clock := func() time.Time { return r.now }
	r.cardCfg = protocol.Config{Now: clock, Rand: cardRand}
	r.devCfg = protocol.Config{Now: clock, Rand: devRand}
	r.gwCfg = protocol.Config{Now: clock}
	r.mk = protocol.MasterKey{Version: 1, Key: fzPattern(0x40)}
	r.reg = prototest.NewRegistry(p, true)
	r.reg.AddKey(r.mk)
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(r.reg.AddUser(rigUser))
	must(r.reg.AddDevice(rigDevice))
	var err error
	r.cred, err = protocol.ProvisionDevice(p, rigDevice, r.mk)
	must(err)
	req, err := protocol.NewRegistrationRequest(p, rigUser, rigPW, fastKDF, r.cardCfg)
	must(err)
	card, err := protocol.IssueCard(&req, r.mk, r.gwCfg)
	must(err)
	r.user, err = protocol.Unlock(card, rigPW, r.cardCfg)
	must(err)

	ctx := context.Background()
	login, m1, err := r.user.Login(nil, rigDevice)
	must(err)
	dl, m2, err := r.device(tb).Start(ctx, nil, m1)
	must(err)
	m3, _, err := r.gateway(tb).Verify(ctx, nil, m2)
	must(err)
	m4, ds, err := dl.Respond(nil, m3)
	must(err)
	us, m5, err := login.Finish(nil, m4)
	must(err)
	if p == protocol.Hardened {
		ds, err = dl.Confirm(m5)
		must(err)
	}
	r.m1, r.m2, r.m3, r.m4, r.m5 = m1, m2, m3, m4, m5
	for _, pt := range []string{"sensor.read", "", "actuator.set 42"} {
		rec, err := us.Seal(nil, []byte(pt))
		must(err)
		r.records = append(r.records, rec)
	}

	pm1, err := protocol.ParseM1(m1)
	must(err)
	pm4, err := protocol.ParseM4(m4)
	must(err)
	r.e, r.theta = pm1.E, pm1.Theta
	sk := r.refSK(r.kj, pm4.X)
	r.keys, err = protocol.DeriveChannelKeys(&sk, &r.e)
	must(err)
	// The reference must agree with the package on the genuine login, or
	// every oracle below would be vacuous.
	if us.Fingerprint() != ds.Fingerprint() || us.SID() != r.keys.SID {
		tb.Fatal("rig: sessions disagree with each other or with the reference sid")
	}
	for i, rec := range r.records {
		if _, ok := fzOpen(p, &r.keys, rec); !ok {
			tb.Fatalf("rig: reference cannot open genuine record %d", i+1)
		}
	}
	return r
}

// device returns a device with an empty replay cache.
func (r *fuzzRig) device(tb testing.TB) *protocol.Device {
	d, err := protocol.NewDevice(r.cred, &prototest.ReplayCache{}, r.devCfg)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// gateway returns a gateway with an empty replay cache.
func (r *fuzzRig) gateway(tb testing.TB) *protocol.Gateway {
	g, err := protocol.NewGateway(r.p, r.reg, &prototest.ReplayCache{}, r.gwCfg)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// deviceLogin returns a fresh device login waiting for m3.
func (r *fuzzRig) deviceLogin(tb testing.TB) *protocol.DeviceLogin {
	dl, _, err := r.device(tb).Start(context.Background(), nil, r.m1)
	if err != nil {
		tb.Fatal(err)
	}
	return dl
}

// deviceSession returns a fresh device session of the genuine login.
func (r *fuzzRig) deviceSession(tb testing.TB) *protocol.Session {
	dl := r.deviceLogin(tb)
	_, s, err := dl.Respond(nil, r.m3)
	if err == nil && r.p == protocol.Hardened {
		s, err = dl.Confirm(r.m5)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// refSK is SK_ij for the rig's K_i, a K_j and X_ij (sections 5 and 6).
func (r *fuzzRig) refSK(kj, x [protocol.Size]byte) protocol.SessionKey {
	if r.p == protocol.Classic {
		k := fzXOR(r.ki, kj)
		return fzH(k[:])
	}
	return fzM(append(r.ki[:], kj[:]...), "tagauth/SK", r.e[:], x[:])
}

// refPadF is the pad that masks beta_i in F_ij for a given T3.
func (r *fuzzRig) refPadF(t3 uint64) [protocol.Size]byte {
	if r.p == protocol.Classic {
		return fzH(r.cred.Tag[:], fzTS(t3))
	}
	return fzM(r.cred.Tag[:], "tagauth/F", r.e[:], fzTS(t3))
}

// refI is I_j as the device must compute it for E_i and T2.
func (r *fuzzRig) refI(e [protocol.Size]byte, t2 uint64) [protocol.Size]byte {
	if r.p == protocol.Classic {
		return fzH(r.cred.Tag[:], e[:])
	}
	return fzM(r.cred.Tag[:], "tagauth/I", e[:], fzID8(rigDevice), fzTS(t2))
}

// forgeM4 builds a hardened m4 for the rig's login with any T3 and T4, as
// only a party holding K_i could: it places T3 and T4 where no honest
// device would. It returns the m4 and the m5 the card must answer.
func (r *fuzzRig) forgeM4(gamma [protocol.Size]byte, t3, t4 uint64, kj [protocol.Size]byte) ([]byte, []byte) {
	xp := fzM(r.ki[:], "tagauth/X", r.e[:], fzTS(t4))
	x := fzXOR(xp, kj)
	sk := fzM(append(r.ki[:], kj[:]...), "tagauth/SK", r.e[:], x[:])
	tau := fzM(sk[:], "tagauth/confirm-device", r.e[:], x[:], fzTS(t3), fzTS(t4))
	ti := fzM(sk[:], "tagauth/confirm-user", r.e[:], x[:])
	m4 := protocol.M4{Profile: protocol.Hardened, X: x, Gamma: gamma, T3: t3, T4: t4, Tau: tau}
	m5 := protocol.M5{Profile: protocol.Hardened, Tau: ti}
	return m4.Append(nil), m5.Append(nil)
}

func (r *fuzzRig) nowMs() uint64 { return uint64(r.now.UnixMilli()) }

// fuzzRigs returns rigs of both profiles, indexed by "hardened".
func fuzzRigs(tb testing.TB) map[bool]*fuzzRig {
	return map[bool]*fuzzRig{
		false: newFuzzRig(tb, protocol.Classic),
		true:  newFuzzRig(tb, protocol.Hardened),
	}
}

// addMessageSeeds seeds a one-argument target with every genuine message
// of both profiles, wrong-type messages included, and edge cases around
// typ's layout.
func addMessageSeeds(f *testing.F, typ protocol.MsgType) {
	for _, r := range fuzzRigs(f) {
		for _, m := range [][]byte{r.m1, r.m2, r.m3, r.m4, r.m5, r.records[0]} {
			if m == nil {
				continue
			}
			f.Add(m)
			f.Add(append(bytes.Clone(m), 0))
			f.Add(m[:len(m)-1])
		}
		f.Add(protocol.AppendError(nil, r.p, protocol.ErrRejected))
	}
	long := bytes.Repeat([]byte("a"), 65)
	for _, p := range twoProfiles {
		f.Add([]byte{byte(p), byte(typ)})
		f.Add((&protocol.M1{Profile: p, ID: nil, KV: 1}).Append(nil))
		f.Add((&protocol.M1{Profile: p, ID: long, KV: 1}).Append(nil))
		f.Add((&protocol.M1{Profile: p, ID: []byte("a\x00"), KV: 0}).Append(nil))
		f.Add((&protocol.M2{Profile: p, ID: []byte("\xff"), DID: []byte("d"), KV: 1, KVDev: 0}).Append(nil))
		f.Add((&protocol.M5{Profile: p}).Append(nil))
	}
	f.Add([]byte{})
	f.Add([]byte{0x02})
	f.Add([]byte{0x03, byte(typ)})
	f.Add([]byte{0x00, 0x7f, 0x01})
}

// checkParseError requires the only two outcomes a parser may report:
// unsupported_profile when the first byte is not a profile, else malformed.
func checkParseError(t *testing.T, b []byte, err error) {
	t.Helper()
	want := protocol.ErrMalformed
	if len(b) >= 1 && !protocol.Profile(b[0]).Valid() {
		want = protocol.ErrUnsupportedProfile
	}
	if !errors.Is(err, want) {
		t.Fatalf("parse %x: err %v, want %v", b, err, want)
	}
}

func checkCanonical(t *testing.T, b, again []byte) {
	t.Helper()
	if !bytes.Equal(b, again) {
		t.Fatalf("non-canonical encoding accepted:\n in  %x\n out %x", b, again)
	}
}

func FuzzParseM1(f *testing.F) {
	addMessageSeeds(f, protocol.TypeM1)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseM1(b)
		if err != nil {
			checkParseError(t, b, err)
			return
		}
		checkCanonical(t, b, m.Append(nil))
		if !protocol.ValidIdentity(m.ID) || (m.Profile == protocol.Hardened && m.KV == 0) {
			t.Fatalf("accepted invalid field: %+v", m)
		}
	})
}

func FuzzParseM2(f *testing.F) {
	addMessageSeeds(f, protocol.TypeM2)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseM2(b)
		if err != nil {
			checkParseError(t, b, err)
			return
		}
		checkCanonical(t, b, m.Append(nil))
		if !protocol.ValidIdentity(m.ID) || !protocol.ValidIdentity(m.DID) ||
			(m.Profile == protocol.Hardened && (m.KV == 0 || m.KVDev == 0)) {
			t.Fatalf("accepted invalid field: %+v", m)
		}
	})
}

func FuzzParseM3(f *testing.F) {
	addMessageSeeds(f, protocol.TypeM3)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseM3(b)
		if err != nil {
			checkParseError(t, b, err)
			return
		}
		checkCanonical(t, b, m.Append(nil))
	})
}

func FuzzParseM4(f *testing.F) {
	addMessageSeeds(f, protocol.TypeM4)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseM4(b)
		if err != nil {
			checkParseError(t, b, err)
			return
		}
		checkCanonical(t, b, m.Append(nil))
	})
}

func FuzzParseM5(f *testing.F) {
	addMessageSeeds(f, protocol.TypeM5)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseM5(b)
		if err != nil {
			checkParseError(t, b, err)
			return
		}
		checkCanonical(t, b, m.Append(nil))
		if m.Profile != protocol.Hardened {
			t.Fatalf("accepted a %v m5", m.Profile)
		}
	})
}

func FuzzParseError(f *testing.F) {
	addMessageSeeds(f, protocol.TypeError)
	for _, p := range []protocol.Profile{0, protocol.Classic, protocol.Hardened, 3} {
		for c := range protocol.Code(9) {
			f.Add(protocol.AppendError(nil, p, c))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, c, err := protocol.ParseError(b)
		if err != nil {
			if !errors.Is(err, protocol.ErrMalformed) {
				t.Fatalf("ParseError(%x): %v, want malformed", b, err)
			}
			return
		}
		checkCanonical(t, b, protocol.AppendError(nil, p, c))
		if !c.Valid() || (p != 0 && !p.Valid()) {
			t.Fatalf("ParseError(%x) accepted profile %v code %v", b, p, c)
		}
	})
}

// addRoleSeeds seeds a (hardened, bytes) target with the genuine message
// of each profile that the step expects, the other messages, and their
// mutations.
func addRoleSeeds(f *testing.F, rigs map[bool]*fuzzRig, pick func(*fuzzRig) []byte) {
	for hardened, r := range rigs {
		for _, m := range [][]byte{pick(r), r.m1, r.m2, r.m3, r.m4, r.m5, r.records[0]} {
			if m == nil {
				continue
			}
			f.Add(hardened, m)
			f.Add(!hardened, m)
			f.Add(hardened, m[:len(m)-1])
			flipped := bytes.Clone(m)
			flipped[len(flipped)-1] ^= 1
			f.Add(hardened, flipped)
		}
	}
	f.Add(true, []byte{})
	f.Add(false, []byte{0x01})
	f.Add(true, []byte{0x00, 0x7f, 0x05})
}

// checkStepError requires a protocol outcome, never an internal error.
func checkStepError(t *testing.T, err error) {
	t.Helper()
	if protocol.CodeOf(err) == protocol.ErrInternal || errors.Is(err, protocol.ErrState) {
		t.Fatalf("step failed with a non-protocol error: %v", err)
	}
}

// FuzzSessionOpen feeds a record to a fresh device session: it opens only
// if the independent reference opens it too, to the same plaintext, and a
// refused record leaves the session able to open the genuine first one.
func FuzzSessionOpen(f *testing.F) {
	rigs := fuzzRigs(f)
	addRoleSeeds(f, rigs, func(r *fuzzRig) []byte { return r.records[0] })
	for hardened, r := range rigs {
		for _, rec := range r.records {
			f.Add(hardened, rec)
		}
		bad := bytes.Clone(r.records[1])
		bad[2] ^= 0x80 // sid
		f.Add(hardened, bad)
		zero := bytes.Clone(r.records[0])
		binary.BigEndian.PutUint64(zero[2+protocol.SIDSize:], 0)
		f.Add(hardened, zero)
	}
	f.Fuzz(func(t *testing.T, hardened bool, rec []byte) {
		r := rigs[hardened]
		s := r.deviceSession(t)
		pt, err := s.Open(nil, rec)
		want, ok := fzOpen(r.p, &r.keys, rec)
		if err == nil {
			if !ok || !bytes.Equal(pt, want) {
				t.Fatalf("session opened a record the reference refuses: %x -> %q", rec, pt)
			}
			return
		}
		checkStepError(t, err)
		if ok {
			t.Fatalf("session refused a valid record %x: %v", rec, err)
		}
		if _, err := s.Open(nil, r.records[0]); err != nil {
			t.Fatalf("refused record %x changed the session: genuine record now fails: %v", rec, err)
		}
	})
}

// FuzzGatewayVerify feeds m2 to a fresh gateway: the reply is always a
// well-formed m3 or error message that agrees with err, and only the
// genuine request verifies (classic: up to T2, which I_j does not cover,
// spec section 8 item 5).
func FuzzGatewayVerify(f *testing.F) {
	rigs := fuzzRigs(f)
	addRoleSeeds(f, rigs, func(r *fuzzRig) []byte { return r.m2 })
	f.Fuzz(func(t *testing.T, hardened bool, m2 []byte) {
		r := rigs[hardened]
		reply, _, err := r.gateway(t).Verify(context.Background(), []byte("prefix"), m2)
		if !bytes.HasPrefix(reply, []byte("prefix")) {
			t.Fatalf("reply does not extend dst: %x", reply)
		}
		reply = reply[len("prefix"):]
		if err != nil {
			checkStepError(t, err)
			p, c, perr := protocol.ParseError(reply)
			if perr != nil || c != protocol.CodeOf(err) {
				t.Fatalf("error reply %x for %v: %v, %v", reply, err, c, perr)
			}
			wantP := protocol.Profile(0)
			if len(m2) > 0 && protocol.Profile(m2[0]).Valid() {
				wantP = protocol.Profile(m2[0])
			}
			if p != wantP {
				t.Fatalf("error reply carries profile %v, want %v", p, wantP)
			}
			return
		}
		m3, perr := protocol.ParseM3(reply)
		if perr != nil || m3.Profile != r.p || m3.T3 != r.nowMs() {
			t.Fatalf("success reply %x is not an m3 of now: %v", reply, perr)
		}
		if bytes.Equal(m2, r.m2) {
			return
		}
		got, _ := protocol.ParseM2(m2)
		want, _ := protocol.ParseM2(r.m2)
		got.T2, want.T2 = 0, 0
		if r.p != protocol.Classic || !bytes.Equal(got.Append(nil), want.Append(nil)) {
			t.Fatalf("gateway verified a forged m2 %x", m2)
		}
	})
}

// FuzzDeviceStart feeds m1 to a fresh device: on success m2 relays the
// claimed fields and carries the I_j of the reference, and the same m1 is
// then a replay.
func FuzzDeviceStart(f *testing.F) {
	rigs := fuzzRigs(f)
	addRoleSeeds(f, rigs, func(r *fuzzRig) []byte { return r.m1 })
	f.Fuzz(func(t *testing.T, hardened bool, m1 []byte) {
		r := rigs[hardened]
		d := r.device(t)
		dl, out, err := d.Start(context.Background(), nil, m1)
		if err != nil {
			checkStepError(t, err)
			if dl != nil || out != nil {
				t.Fatal("failed Start returned state or a message")
			}
			return
		}
		in, perr := protocol.ParseM1(m1)
		m2, perr2 := protocol.ParseM2(out)
		if perr != nil || perr2 != nil {
			t.Fatalf("Start accepted %x or produced %x unparseable: %v %v", m1, out, perr, perr2)
		}
		wantKVDev := r.cred.KV
		if r.p == protocol.Classic {
			wantKVDev = 0 // the classic wire carries no key version
		}
		if m2.Profile != r.p || !bytes.Equal(m2.ID, in.ID) || m2.KV != in.KV || m2.Nonce != in.Nonce ||
			m2.E != in.E || string(m2.DID) != rigDevice || m2.KVDev != wantKVDev ||
			m2.T1 != in.T1 || m2.T2 != r.nowMs() || m2.I != r.refI(in.E, m2.T2) {
			t.Fatalf("m2 %+v does not relay m1 %+v", m2, in)
		}
		if dl.UserID() != string(in.ID) {
			t.Fatalf("UserID %q, m1 claims %q", dl.UserID(), in.ID)
		}
		if _, _, err := d.Start(context.Background(), nil, m1); !errors.Is(err, protocol.ReasonLoginReplay) {
			t.Fatalf("second Start of %x: %v, want replay", m1, err)
		}
	})
}

// FuzzDeviceRespond feeds m3 to a fresh device login: it succeeds exactly
// when the reference says F_ij unmasks the login's beta_i under a fresh T3,
// and a refused m3 leaves the login able to take the genuine one.
func FuzzDeviceRespond(f *testing.F) {
	rigs := fuzzRigs(f)
	addRoleSeeds(f, rigs, func(r *fuzzRig) []byte { return r.m3 })
	f.Fuzz(func(t *testing.T, hardened bool, m3 []byte) {
		r := rigs[hardened]
		dl := r.deviceLogin(t)
		m4, _, err := dl.Respond(nil, m3)
		in, perr := protocol.ParseM3(m3)
		beta := fzXOR(r.theta, r.ki)
		now, w := r.nowMs(), uint64(protocol.DefaultWindow/time.Millisecond)
		valid := perr == nil && in.Profile == r.p && in.T3+w >= now && in.T3 <= now+w &&
			fzXOR(in.F, r.refPadF(in.T3)) == beta
		if err != nil {
			checkStepError(t, err)
			if valid {
				t.Fatalf("device refused a valid m3 %x: %v", m3, err)
			}
			if _, _, err := dl.Respond(nil, r.m3); err != nil {
				t.Fatalf("refused m3 %x changed the login: %v", m3, err)
			}
			return
		}
		if !valid {
			t.Fatalf("device accepted a forged m3 %x", m3)
		}
		out, err := protocol.ParseM4(m4)
		if err != nil || out.Profile != r.p || out.Gamma != in.Gamma || out.T4 != now ||
			(r.p == protocol.Hardened && out.T3 != in.T3) {
			t.Fatalf("m4 %x does not answer m3 %x: %v", m4, m3, err)
		}
	})
}

// FuzzCardFinish feeds m4 to a fresh card login. Hardened: only the
// genuine m4 finishes. Classic: m4 finishes exactly when T4 is fresh and
// gamma_i is right (X_ij has no integrity, spec section 8 item 2), and the
// card's key is then the reference's SK for that X_ij and T4.
func FuzzCardFinish(f *testing.F) {
	rigs := fuzzRigs(f)
	addRoleSeeds(f, rigs, func(r *fuzzRig) []byte { return r.m4 })
	f.Fuzz(func(t *testing.T, hardened bool, m4 []byte) {
		r := rigs[hardened]
		login, _, err := r.user.Login(nil, rigDevice)
		if err != nil {
			t.Fatal(err)
		}
		s, m5, err := login.Finish(nil, m4)
		if err != nil {
			checkStepError(t, err)
			if _, _, err := login.Finish(nil, r.m4); err != nil {
				t.Fatalf("refused m4 %x changed the login: %v", m4, err)
			}
			return
		}
		if r.p == protocol.Hardened {
			if !bytes.Equal(m4, r.m4) || !bytes.Equal(m5, r.m5) {
				t.Fatalf("card accepted a forged m4 %x", m4)
			}
			return
		}
		in, err := protocol.ParseM4(m4)
		gen, _ := protocol.ParseM4(r.m4)
		now, w := r.nowMs(), uint64(protocol.DefaultWindow/time.Millisecond)
		if err != nil || in.Profile != protocol.Classic || in.Gamma != gen.Gamma || in.T4+w < now || in.T4 > now+w || m5 != nil {
			t.Fatalf("classic card accepted %x: %v", m4, err)
		}
		xp := fzH(r.ki[:], fzTS(in.T4))
		sk := r.refSK(fzXOR(xp, in.X), in.X)
		keys, err := protocol.DeriveChannelKeys(&sk, &r.e)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.Seal(nil, []byte("probe"))
		if err != nil {
			t.Fatal(err)
		}
		if pt, ok := fzOpen(r.p, &keys, rec); !ok || string(pt) != "probe" {
			t.Fatalf("card's key for m4 %x is not the reference SK", m4)
		}
	})
}

// FuzzSplitConfirmPayload: the confirm payload (spec section 11) splits
// into an 8-byte sid and an m5 of at least one byte, exactly as
// AppendConfirmPayload joins them, and anything shorter is malformed.
func FuzzSplitConfirmPayload(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, protocol.SIDSize))
	f.Add(append(make([]byte, protocol.SIDSize), 0x02, 0x05))
	f.Fuzz(func(t *testing.T, b []byte) {
		sid, m5, err := protocol.SplitConfirmPayload(b)
		if len(b) < protocol.SIDSize+1 {
			if !errors.Is(err, protocol.ErrMalformed) || m5 != nil {
				t.Fatalf("%d bytes: %v, m5 %x; want malformed", len(b), err, m5)
			}
			return
		}
		if err != nil || !bytes.Equal(protocol.AppendConfirmPayload(nil, sid, m5), b) {
			t.Fatalf("%x: split into %x and %x, %v", b, sid, m5, err)
		}
	})
}

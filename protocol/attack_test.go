package protocol_test

// Attacks on the classic profile (PROTOCOL.md section 8, ANALYSIS.md), each
// run for real against classic, where it succeeds, and against hardened,
// where it fails with a precise reason.
//
// The attacker never calls into the package for anything it could not do
// itself: it computes hashes, HMACs, Argon2id and XORs with its own code
// (the atk* helpers below, written from the spec's formulas) and builds
// messages with the M1..M5 structs' Append. It uses only what its scenario
// gives it: observed messages, its own insider credentials, a captured
// device credential or a stolen card. The honest parties are the real
// protocol.Gateway, protocol.Device and protocol.User.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/protocol/prototest"
)

// atkKDF is the cheapest Argon2id the spec allows, so that hardened cards
// in these tests unlock quickly. The benchmark uses protocol.DefaultKDF.
var atkKDF = protocol.KDFParams{Time: 1, MemoryKiB: 8, Threads: 1}

// ---- The attacker's own primitives (spec section 2 and 6). ----

type atkKey = [protocol.Size]byte

// atkH is SHA-256 over the concatenation of parts.
func atkH(parts ...[]byte) atkKey {
	d := sha256.New()
	for _, p := range parts {
		d.Write(p)
	}
	var out atkKey
	d.Sum(out[:0])
	return out
}

// atkMAC is M(k, s, x) = HMAC-SHA256(k, lbl(s) || x).
func atkMAC(key []byte, label string, parts ...[]byte) atkKey {
	m := hmac.New(sha256.New, key)
	m.Write([]byte{byte(len(label))})
	m.Write([]byte(label))
	for _, p := range parts {
		m.Write(p)
	}
	var out atkKey
	m.Sum(out[:0])
	return out
}

func atkID8(id string) []byte { return append([]byte{byte(len(id))}, id...) }

func atkTS(ms uint64) []byte { return binary.BigEndian.AppendUint64(nil, ms) }

func atkXOR(a, b atkKey) atkKey {
	var out atkKey
	subtle.XORBytes(out[:], a[:], b[:])
	return out
}

// atkFill returns 32 bytes the attacker chooses (its own K_i, K_j, beta).
func atkFill(c byte) atkKey {
	var k atkKey
	for i := range k {
		k[i] = c + byte(i)
	}
	return k
}

// atkOpen opens a sealed channel record (spec section 9) with a key the
// attacker derived, proving that it holds SK_ij. fromDevice picks k_du.
func atkOpen(t *testing.T, sk, e atkKey, rec []byte, fromDevice bool) []byte {
	t.Helper()
	// The attacker holds SK as bare bytes: the conversion is the claim.
	sk2 := protocol.SessionKey(sk)
	k, err := protocol.DeriveChannelKeys(&sk2, &e)
	if err != nil {
		t.Fatal(err)
	}
	key := k.UserToDevice
	if fromDevice {
		key = k.DeviceToUser
	}
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		t.Fatal(err)
	}
	const hdr = 2 + protocol.SIDSize + 8
	if len(rec) < hdr {
		t.Fatalf("record too short: %d bytes", len(rec))
	}
	nonce := make([]byte, chacha20poly1305.NonceSize)
	copy(nonce[4:], rec[2+protocol.SIDSize:hdr])
	pt, err := aead.Open(nil, nonce, rec[hdr:], rec[:hdr])
	if err != nil {
		t.Fatalf("attacker cannot open the record: its key is wrong: %v", err)
	}
	return pt
}

// atkAlwaysFresh is a gateway replay cache switched off: it calls every
// login fresh. It isolates what the cryptography alone stops.
type atkAlwaysFresh struct{}

func (atkAlwaysFresh) Insert(context.Context, protocol.ReplayKey, uint64, uint64) (bool, error) {
	return true, nil
}

// atkTap records every byte a party draws, so that a test can see K_i and
// n_i (the attacker cannot; only the assertions use it).
type atkTap struct {
	r   io.Reader
	got []byte
}

func (t *atkTap) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.got = append(t.got, p[:n]...)
	return n, err
}

// ---- The honest world. ----

// atkScene is one gateway and any number of devices and users, in memory,
// on a clock the test moves.
type atkScene struct {
	tb    testing.TB
	p     protocol.Profile
	now   time.Time
	cfg   protocol.Config
	mk    protocol.MasterKey
	reg   *prototest.Registry
	gw    *protocol.Gateway
	devs  map[string]*protocol.Device
	creds map[string]protocol.DeviceCredential
}

// newAtkScene builds a gateway whose replay cache is gwReplay (nil: a real
// in-memory one).
func newAtkScene(tb testing.TB, p protocol.Profile, gwReplay protocol.ReplayCache) *atkScene {
	tb.Helper()
	s := &atkScene{tb: tb, p: p, now: time.UnixMilli(1_760_000_000_000),
		devs: map[string]*protocol.Device{}, creds: map[string]protocol.DeviceCredential{}}
	s.cfg = protocol.Config{Now: func() time.Time { return s.now }, Rand: rand.Reader}
	s.mk = protocol.MasterKey{Version: protocol.ClassicKeyVersion}
	rand.Read(s.mk.Key[:])
	s.reg = prototest.NewRegistry(p, true)
	s.reg.AddKey(s.mk)
	if gwReplay == nil {
		gwReplay = &prototest.ReplayCache{}
	}
	var err error
	if s.gw, err = protocol.NewGateway(p, s.reg, gwReplay, s.cfg); err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *atkScene) nowMs() uint64 { return uint64(s.now.UnixMilli()) }

func (s *atkScene) tick(d time.Duration) { s.now = s.now.Add(d) }

// device provisions and registers a device with its own replay cache.
func (s *atkScene) device(did string) *protocol.Device {
	s.tb.Helper()
	cred, err := protocol.ProvisionDevice(s.p, did, s.mk)
	if err != nil {
		s.tb.Fatal(err)
	}
	if err := s.reg.AddDevice(did); err != nil {
		s.tb.Fatal(err)
	}
	d, err := protocol.NewDevice(cred, &prototest.ReplayCache{}, s.cfg)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.devs[did], s.creds[did] = d, cred
	return d
}

// enroll registers a user the normal way (registry check, then the card).
func (s *atkScene) enroll(id, pw string, kdf protocol.KDFParams) protocol.Card {
	s.tb.Helper()
	if err := s.reg.AddUser(id); err != nil {
		s.tb.Fatal(err)
	}
	return s.issue(id, pw, kdf)
}

// issue runs registration without the registry: IssueCard alone.
func (s *atkScene) issue(id, pw string, kdf protocol.KDFParams) protocol.Card {
	s.tb.Helper()
	req, err := protocol.NewRegistrationRequest(s.p, id, pw, kdf, s.cfg)
	if err != nil {
		s.tb.Fatal(err)
	}
	defer req.Wipe()
	card, err := protocol.IssueCard(&req, s.mk, s.cfg)
	if err != nil {
		s.tb.Fatal(err)
	}
	return card
}

func (s *atkScene) unlock(card protocol.Card, pw string) *protocol.User {
	s.tb.Helper()
	u, err := protocol.Unlock(card, pw, s.cfg)
	if err != nil {
		s.tb.Fatal(err)
	}
	return u
}

// atkRun is what one honest login put on the wire, and its two sessions.
type atkRun struct {
	m1, m2, m3, m4, m5 []byte
	user, dev          *protocol.Session
}

// login runs an honest login of u to device did and fails the test on any
// error.
func (s *atkScene) login(u *protocol.User, did string) atkRun {
	s.tb.Helper()
	ctx := context.Background()
	var r atkRun
	login, m1, err := u.Login(nil, did)
	if err != nil {
		s.tb.Fatal(err)
	}
	r.m1 = m1
	dl, m2, err := s.devs[did].Start(ctx, nil, m1)
	if err != nil {
		s.tb.Fatal(err)
	}
	r.m2 = m2
	if r.m3, _, err = s.gw.Verify(ctx, nil, m2); err != nil {
		s.tb.Fatal(err)
	}
	if r.m4, r.dev, err = dl.Respond(nil, r.m3); err != nil {
		s.tb.Fatal(err)
	}
	if r.user, r.m5, err = login.Finish(nil, r.m4); err != nil {
		s.tb.Fatal(err)
	}
	if s.p == protocol.Hardened {
		if r.dev, err = dl.Confirm(r.m5); err != nil {
			s.tb.Fatal(err)
		}
	}
	return r
}

func atkWantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func mustParseM1(t testing.TB, b []byte) protocol.M1 {
	t.Helper()
	m, err := protocol.ParseM1(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustParseM3(t testing.TB, b []byte) protocol.M3 {
	t.Helper()
	m, err := protocol.ParseM3(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustParseM4(t testing.TB, b []byte) protocol.M4 {
	t.Helper()
	m, err := protocol.ParseM4(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ---- Item 1: replayed m4. ----

// TestAttackReplayedM4 is PROTOCOL.md section 8 item 1. The attacker is a
// passive recorder turned active: it recorded one m4 of an earlier login of
// alice to sensor-7 and, an hour later, answers a new login of alice to
// sensor-7 itself (the device never sees the new m1). It cannot compute
// X_ij (it lacks K_i), so it sends the old X and gamma with a fresh T4.
func TestAttackReplayedM4(t *testing.T) {
	t.Run("classic accepts", func(t *testing.T) {
		s := newAtkScene(t, protocol.Classic, nil)
		s.device("sensor-7")
		u := s.unlock(s.enroll("alice", "correct horse", atkKDF), "correct horse")
		recorded := s.login(u, "sensor-7")

		s.tick(time.Hour)
		login, _, err := u.Login(nil, "sensor-7")
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = login.Finish(nil, recorded.m4)
		atkWantErr(t, err, protocol.ReasonStaleT4) // hence the retiming below
		m := mustParseM4(t, recorded.m4)
		m.T4 = s.nowMs()
		sess, _, err := login.Finish(nil, m.Append(nil))
		if err != nil {
			t.Fatalf("classic card refused a replayed m4 with a fresh T4: %v", err)
		}
		if sess == nil {
			t.Fatal("no session")
		}
		// The card believes it authenticated sensor-7, but its key is shared
		// with no one: the only session sensor-7 ever had is the old one.
		if sess.Fingerprint() == recorded.dev.Fingerprint() {
			t.Fatal("the replayed login reproduced the old key")
		}
	})
	t.Run("hardened refuses", func(t *testing.T) {
		s := newAtkScene(t, protocol.Hardened, nil)
		s.device("sensor-7")
		u := s.unlock(s.enroll("alice", "correct horse", atkKDF), "correct horse")
		recorded := s.login(u, "sensor-7")

		s.tick(time.Hour)
		login, _, err := u.Login(nil, "sensor-7")
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = login.Finish(nil, recorded.m4)
		atkWantErr(t, err, protocol.ReasonStaleT4)
		m := mustParseM4(t, recorded.m4)
		m.T3, m.T4 = s.nowMs(), s.nowMs()
		_, _, err = login.Finish(nil, m.Append(nil))
		// gamma_i covers E_i and T3: the old one does not fit the new login.
		atkWantErr(t, err, protocol.ReasonBadGamma)
	})
}

// ---- Item 2: no key confirmation (brief). ----

// TestAttackNoKeyConfirmation is section 8 item 2. An outsider on the link
// flips one bit of theta_i in m1. Classic: the device and the card both
// finish, with different keys, and neither notices. Hardened: the card's
// check of tau_j refuses m4.
func TestAttackNoKeyConfirmation(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			ctx := context.Background()
			s := newAtkScene(t, p, nil)
			dev := s.device("sensor-7")
			u := s.unlock(s.enroll("alice", "correct horse", atkKDF), "correct horse")
			login, m1, err := u.Login(nil, "sensor-7")
			if err != nil {
				t.Fatal(err)
			}
			m := mustParseM1(t, m1)
			m.Theta[0] ^= 1
			dl, m2, err := dev.Start(ctx, nil, m.Append(nil))
			if err != nil {
				t.Fatal(err)
			}
			m3, _, err := s.gw.Verify(ctx, nil, m2)
			if err != nil {
				t.Fatal(err)
			}
			m4, devSess, err := dl.Respond(nil, m3)
			if err != nil {
				t.Fatal(err)
			}
			userSess, _, err := login.Finish(nil, m4)
			if p == protocol.Hardened {
				atkWantErr(t, err, protocol.ReasonBadM4)
				return
			}
			if err != nil {
				t.Fatalf("classic card refused: %v", err)
			}
			if userSess.Fingerprint() == devSess.Fingerprint() {
				t.Fatal("keys agree although theta was altered")
			}
		})
	}
}

// ---- Item 3 (and 9): offline password guessing. ----

// atkClassicGuesser holds what a thief of a classic card knows: the card
// (ID_i, alpha_i, r_i), one observed m1 (E_i, T1), the device it went to
// (DID_j, public), and gamma_i from one observed m3 or m4 (item 9).
type atkClassicGuesser struct {
	alpha, r atkKey
	e, gamma atkKey
	t1       []byte
	pair     []byte // id8(ID_i) || id8(DID_j)
	did      []byte // id8(DID_j)
	buf      []byte
}

func newAtkClassicGuesser(card protocol.Card, m1, m4 []byte, did string, tb testing.TB) *atkClassicGuesser {
	m := mustParseM1(tb, m1)
	return &atkClassicGuesser{
		alpha: card.Alpha, r: card.R, e: m.E, gamma: mustParseM4(tb, m4).Gamma,
		t1: atkTS(m.T1), pair: append(atkID8(card.ID), atkID8(did)...), did: atkID8(did),
	}
}

// tag computes Tag_i = h(r_i || pw) ^ alpha_i for a guess.
func (g *atkClassicGuesser) tag(pw string) atkKey {
	g.buf = append(append(g.buf[:0], g.r[:]...), pw...)
	return atkXOR(sha256.Sum256(g.buf), g.alpha)
}

// tryE tests a guess against m1: beta = h(Tag || T1), E = h(beta || ids).
func (g *atkClassicGuesser) tryE(pw string) bool {
	tag := g.tag(pw)
	g.buf = append(append(g.buf[:0], tag[:]...), g.t1...)
	beta := sha256.Sum256(g.buf)
	g.buf = append(append(g.buf[:0], beta[:]...), g.pair...)
	return sha256.Sum256(g.buf) == g.e
}

// tryGamma tests a guess against gamma_i = h(Tag || id8(DID_j)), which never
// changes: one observed m3 or m4 is a verifier forever (item 9).
func (g *atkClassicGuesser) tryGamma(pw string) bool {
	tag := g.tag(pw)
	g.buf = append(append(g.buf[:0], tag[:]...), g.did...)
	return sha256.Sum256(g.buf) == g.gamma
}

// atkHardenedGuesser holds what a thief of a hardened card knows: the card
// (ID_i, alpha_i, r_i, v_i, Argon2 parameters), one observed m1 (n_i, E_i,
// T1) and DID_j.
type atkHardenedGuesser struct {
	alpha, r atkKey
	fuzzy    byte
	kdf      protocol.KDFParams
	e        atkKey
	betaIn   []byte // id8(DID_j) || n_i || ts(T1)
	pair     []byte
}

func newAtkHardenedGuesser(card protocol.Card, m1 []byte, did string, tb testing.TB) *atkHardenedGuesser {
	m := mustParseM1(tb, m1)
	betaIn := append(append(atkID8(did), m.Nonce[:]...), atkTS(m.T1)...)
	return &atkHardenedGuesser{
		alpha: card.Alpha, r: card.R, fuzzy: card.Fuzzy, kdf: card.KDF, e: m.E,
		betaIn: betaIn, pair: append(atkID8(card.ID), atkID8(did)...),
	}
}

func (g *atkHardenedGuesser) w(pw string) atkKey {
	var w atkKey
	copy(w[:], argon2.IDKey([]byte(pw), g.r[:], g.kdf.Time, g.kdf.MemoryKiB, g.kdf.Threads, protocol.Size))
	return w
}

// fuzzyPasses is the card-only test: v_i = M(W, "tagauth/fuzzy", "")[0].
func (g *atkHardenedGuesser) fuzzyPasses(w atkKey) bool {
	return atkMAC(w[:], "tagauth/fuzzy")[0] == g.fuzzy
}

// eMatches is the m1 test: Tag -> beta -> E.
func (g *atkHardenedGuesser) eMatches(w atkKey) bool {
	tag := atkXOR(w, g.alpha)
	beta := atkMAC(tag[:], "tagauth/beta", g.betaIn)
	return atkMAC(beta[:], "tagauth/E", g.pair) == g.e
}

// try costs one Argon2id per guess, whatever the outcome.
func (g *atkHardenedGuesser) try(pw string) bool {
	w := g.w(pw)
	return g.fuzzyPasses(w) && g.eMatches(w)
}

func atkCandidates(n int) []string {
	c := make([]string, n)
	for i := range c {
		c[i] = fmt.Sprintf("guess-%06d", i)
	}
	return c
}

// TestAttackOfflineGuess is section 8 items 3 and 9. The attacker holds a
// stolen card and has observed one login (m1, and under classic the m4 that
// carries gamma_i). Classic: a list of candidates is searched at SHA-256
// speed and the password found, by E_i and by gamma_i alike. Hardened: the
// fuzzy verifier alone leaves about 1/256 of wrong candidates, and with m1
// the password is still found, but every guess costs one Argon2id
// (BenchmarkOfflineGuess measures the rates).
func TestAttackOfflineGuess(t *testing.T) {
	const pw = "tr0ub4dor&3"
	t.Run("classic", func(t *testing.T) {
		s := newAtkScene(t, protocol.Classic, nil)
		s.device("sensor-7")
		card := s.enroll("alice", pw, atkKDF)
		run := s.login(s.unlock(card, pw), "sensor-7")
		g := newAtkClassicGuesser(card, run.m1, run.m4, "sensor-7", t)

		cands := atkCandidates(500)
		cands[317] = pw
		var byE, byGamma []string
		for _, c := range cands {
			if g.tryE(c) {
				byE = append(byE, c)
			}
			if g.tryGamma(c) {
				byGamma = append(byGamma, c)
			}
		}
		if len(byE) != 1 || byE[0] != pw {
			t.Fatalf("guessing against m1 found %q, want exactly %q", byE, pw)
		}
		if len(byGamma) != 1 || byGamma[0] != pw {
			t.Fatalf("guessing against gamma found %q, want exactly %q", byGamma, pw)
		}
	})
	t.Run("hardened", func(t *testing.T) {
		s := newAtkScene(t, protocol.Hardened, nil)
		s.device("sensor-7")
		// A fixed seed makes r_i, and so the count below, reproducible.
		s.cfg.Rand = mrand.NewChaCha8([32]byte{'a', 't', 'k'})
		card := s.enroll("alice", pw, atkKDF)
		s.cfg.Rand = rand.Reader
		run := s.login(s.unlock(card, pw), "sensor-7")
		g := newAtkHardenedGuesser(card, run.m1, "sensor-7", t)

		// n wrong candidates; the fuzzy verifier passes each with p = 1/256.
		// Expected 32, standard deviation 5.6: [8, 72] is about -4 to +7
		// standard deviations, and the test fails on a missing verifier
		// (all pass) or a longer one (almost none pass).
		const n = 8192
		var survivors []atkKey
		for _, c := range atkCandidates(n) {
			if w := g.w(c); g.fuzzyPasses(w) {
				survivors = append(survivors, w)
			}
		}
		if k := len(survivors); k < 8 || k > 72 {
			t.Fatalf("fuzzy verifier passed %d of %d wrong candidates, want about %d", k, n, n/256)
		}
		t.Logf("fuzzy verifier alone passed %d of %d wrong candidates (expected %d)", len(survivors), n, n/256)
		for _, w := range survivors {
			if g.eMatches(w) {
				t.Fatal("a wrong candidate passed the E_i check")
			}
		}
		if !g.try(pw) {
			t.Fatal("the hardened guesser missed the right password: the attack model is wrong")
		}
	})
}

// BenchmarkOfflineGuess is section 8 item 3 as a measured rate: guesses per
// second per core of an attacker holding a stolen card and one observed m1.
// Classic: three SHA-256. Hardened: one Argon2id with the card's default
// parameters (protocol.DefaultKDF), then the fuzzy and E_i checks.
func BenchmarkOfflineGuess(b *testing.B) {
	const pw = "tr0ub4dor&3"
	cands := atkCandidates(4096)
	b.Run("classic", func(b *testing.B) {
		s := newAtkScene(b, protocol.Classic, nil)
		s.device("sensor-7")
		card := s.enroll("alice", pw, protocol.KDFParams{})
		run := s.login(s.unlock(card, pw), "sensor-7")
		g := newAtkClassicGuesser(card, run.m1, run.m4, "sensor-7", b)
		if !g.tryE(pw) {
			b.Fatal("guesser misses the right password")
		}
		n := 0
		for b.Loop() {
			if g.tryE(cands[n%len(cands)]) {
				b.Fatal("false positive")
			}
			n++
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "guesses/s")
	})
	b.Run("hardened", func(b *testing.B) {
		s := newAtkScene(b, protocol.Hardened, nil)
		s.device("sensor-7")
		card := s.enroll("alice", pw, protocol.DefaultKDF)
		run := s.login(s.unlock(card, pw), "sensor-7")
		g := newAtkHardenedGuesser(card, run.m1, "sensor-7", b)
		if card.KDF != protocol.DefaultKDF || !g.try(pw) {
			b.Fatal("guesser misses the right password or the card is not at the defaults")
		}
		n := 0
		for b.Loop() {
			if g.try(cands[n%len(cands)]) {
				b.Fatal("false positive")
			}
			n++
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "guesses/s")
	})
}

// ---- Item 4: one namespace for users and devices. ----

// TestAttackNamespaceCollision is section 8 item 4. Mallory gets a card for
// the identity "sensor-7", a device's DID, through an enrolment path that
// calls IssueCard without the registry's check. She knows her password and
// card, so she knows alpha_i ^ W_i. Under classic that is Tag_j, and she
// then answers alice's login as sensor-7: the gateway verifies her m2 and
// alice ends up with a key that Mallory holds.
func TestAttackNamespaceCollision(t *testing.T) {
	const did, mpw = "sensor-7", "mallory's password"
	ctx := context.Background()
	t.Run("classic", func(t *testing.T) {
		s := newAtkScene(t, protocol.Classic, nil)
		s.device(did)
		if err := s.reg.AddUser(did); !errors.Is(err, prototest.ErrNamespace) {
			t.Fatalf("registry let a user take a device identity: %v", err)
		}
		card := s.issue(did, mpw, atkKDF)
		tag := atkXOR(atkH(card.R[:], []byte(mpw)), card.Alpha)
		if tag != s.creds[did].Tag {
			t.Fatal("the colliding user's tag is not the device's tag")
		}

		// alice's m1 for sensor-7 reaches Mallory instead of the device.
		login, m1, err := s.unlock(s.enroll("alice", "correct horse", atkKDF), "correct horse").Login(nil, did)
		if err != nil {
			t.Fatal(err)
		}
		a := mustParseM1(t, m1)
		m2 := protocol.M2{Profile: protocol.Classic, ID: a.ID, E: a.E, DID: []byte(did),
			I: atkH(tag[:], a.E[:]), T1: a.T1, T2: s.nowMs()}
		m3b, _, err := s.gw.Verify(ctx, nil, m2.Append(nil))
		if err != nil {
			t.Fatalf("gateway refused Mallory's m2: %v", err)
		}
		m3 := mustParseM3(t, m3b)
		beta := atkXOR(m3.F, atkH(tag[:], atkTS(m3.T3)))
		ki := atkXOR(a.Theta, beta)
		kj := atkFill(0x40)
		m4 := protocol.M4{Profile: protocol.Classic, Gamma: m3.Gamma, T4: s.nowMs(),
			X: atkXOR(atkH(ki[:], atkTS(s.nowMs())), kj)}
		sess, _, err := login.Finish(nil, m4.Append(nil))
		if err != nil {
			t.Fatalf("alice refused Mallory's m4: %v", err)
		}
		sk := atkH(func() []byte { k := atkXOR(ki, kj); return k[:] }())
		rec, err := sess.Seal(nil, []byte("unlock front door"))
		if err != nil {
			t.Fatal(err)
		}
		if pt := atkOpen(t, sk, a.E, rec, false); string(pt) != "unlock front door" {
			t.Fatalf("opened %q", pt)
		}
	})
	t.Run("hardened", func(t *testing.T) {
		s := newAtkScene(t, protocol.Hardened, nil)
		s.device(did)
		// Labels keep the tags apart, so the registry allows equal identities.
		card := s.enroll(did, mpw, atkKDF)
		w := argon2.IDKey([]byte(mpw), card.R[:], card.KDF.Time, card.KDF.MemoryKiB, card.KDF.Threads, protocol.Size)
		tag := atkXOR([protocol.Size]byte(w), card.Alpha)
		if tag == s.creds[did].Tag {
			t.Fatal("hardened user tag equals the device tag")
		}
		_, m1, err := s.unlock(s.enroll("alice", "correct horse", atkKDF), "correct horse").Login(nil, did)
		if err != nil {
			t.Fatal(err)
		}
		a := mustParseM1(t, m1)
		t2 := s.nowMs()
		m2 := protocol.M2{Profile: protocol.Hardened, ID: a.ID, KV: a.KV, Nonce: a.Nonce, E: a.E,
			DID: []byte(did), KVDev: s.mk.Version, T1: a.T1, T2: t2,
			I: atkMAC(tag[:], "tagauth/I", a.E[:], atkID8(did), atkTS(t2))}
		_, _, err = s.gw.Verify(ctx, nil, m2.Append(nil))
		atkWantErr(t, err, protocol.ReasonBadI)
	})
}

// ---- Item 5: T2 rewritten in transit. ----

// TestAttackRewriteT2 is section 8 item 5. An outsider on the device-gateway
// link moves T2 in m2 by 7 s (still inside dT). Classic: I_j does not cover
// T2, so the gateway accepts, logs a T2 the device never wrote, and the
// login completes. Hardened: I_j covers T2.
func TestAttackRewriteT2(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			ctx := context.Background()
			s := newAtkScene(t, p, nil)
			dev := s.device("sensor-7")
			u := s.unlock(s.enroll("alice", "correct horse", atkKDF), "correct horse")
			login, m1, err := u.Login(nil, "sensor-7")
			if err != nil {
				t.Fatal(err)
			}
			dl, m2b, err := dev.Start(ctx, nil, m1)
			if err != nil {
				t.Fatal(err)
			}
			m2, err := protocol.ParseM2(m2b)
			if err != nil {
				t.Fatal(err)
			}
			m2.T2 -= 7000
			m3, v, err := s.gw.Verify(ctx, nil, m2.Append(nil))
			if p == protocol.Hardened {
				atkWantErr(t, err, protocol.ReasonBadI)
				return
			}
			if err != nil {
				t.Fatalf("classic gateway refused a rewritten T2: %v", err)
			}
			if v.T2 != s.nowMs()-7000 {
				t.Fatalf("audit T2 = %d, want the forged %d", v.T2, s.nowMs()-7000)
			}
			m4, _, err := dl.Respond(nil, m3)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := login.Finish(nil, m4); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// ---- Item 6: beta reused within one millisecond. ----

// TestAttackBetaReuse is section 8 item 6. A passive observer sees two m1
// from one card stamped in the same millisecond (the test's clock stands
// still). Classic: beta_i is the same, so theta_i ^ theta_i' = K_i ^ K_i'
// (and E_i repeats, linking the logins). Hardened: n_i makes beta_i differ.
func TestAttackBetaReuse(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			s := newAtkScene(t, p, nil)
			s.device("sensor-7")
			card := s.enroll("alice", "correct horse", atkKDF)
			tap := &atkTap{r: rand.Reader}
			cfg := s.cfg
			cfg.Rand = tap
			u, err := protocol.Unlock(card, "correct horse", cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, b1, err := u.Login(nil, "sensor-7")
			if err != nil {
				t.Fatal(err)
			}
			_, b2, err := u.Login(nil, "sensor-7")
			if err != nil {
				t.Fatal(err)
			}
			m1, m1b := mustParseM1(t, b1), mustParseM1(t, b2)
			if m1.T1 != m1b.T1 {
				t.Fatal("the logins are not in the same millisecond")
			}
			observed := atkXOR(m1.Theta, m1b.Theta)

			// Each login draws n_i (hardened only) and then K_i.
			skip := 0
			if p == protocol.Hardened {
				skip = protocol.NonceSize
			}
			per := skip + protocol.Size
			if len(tap.got) != 2*per {
				t.Fatalf("drew %d random bytes, want %d", len(tap.got), 2*per)
			}
			ki := atkKey(tap.got[skip:per])
			ki2 := atkKey(tap.got[per+skip : 2*per])
			secret := atkXOR(ki, ki2)

			if p == protocol.Classic {
				if observed != secret {
					t.Fatal("classic: theta XOR theta' is not K_i XOR K_i'")
				}
				if m1.E != m1b.E {
					t.Fatal("classic: E_i differs although beta_i repeats")
				}
				return
			}
			if observed == secret {
				t.Fatal("hardened: theta XOR theta' reveals K_i XOR K_i'")
			}
			if m1.E == m1b.E {
				t.Fatal("hardened: E_i repeats")
			}
		})
	}
}

// ---- Item 7: a captured device impersonates its user elsewhere. ----

// TestAttackCapturedDevice is section 8 item 7. The attacker controls device
// sensor-1 (it holds Tag_1) and so sees alice's m1 and the gateway's m3 when
// alice logs in there. From them it learns beta_i and K_i, builds an m1 for
// sensor-2 with alice's T1 and its own K_i, and logs in at sensor-2 as
// alice within dT. Classic without the gateway's replay check: accepted,
// and the attacker holds sensor-2's session key. Classic with the real
// replay cache: refused, since (alice, T1) was seen. Hardened: refused by E_i
// even without the replay check, because beta_i is bound to DID_j.
func TestAttackCapturedDevice(t *testing.T) {
	cases := []struct {
		name     string
		p        protocol.Profile
		gwReplay protocol.ReplayCache
		want     error // nil: the attack succeeds
	}{
		{"classic/no-replay-check", protocol.Classic, atkAlwaysFresh{}, nil},
		{"classic/replay-cache", protocol.Classic, nil, protocol.ReasonLoginReplay},
		{"hardened/no-replay-check", protocol.Hardened, atkAlwaysFresh{}, protocol.ReasonBadE},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			s := newAtkScene(t, c.p, c.gwReplay)
			s.device("sensor-1")
			d2 := s.device("sensor-2")
			u := s.unlock(s.enroll("alice", "correct horse", atkKDF), "correct horse")
			seen := s.login(u, "sensor-1")
			tag1 := s.creds["sensor-1"].Tag // captured

			m1 := mustParseM1(t, seen.m1)
			m3 := mustParseM3(t, seen.m3)
			ids1 := append(atkID8("alice"), atkID8("sensor-1")...)
			ids2 := append(atkID8("alice"), atkID8("sensor-2")...)
			var beta, e1, e2 atkKey
			if c.p == protocol.Classic {
				beta = atkXOR(m3.F, atkH(tag1[:], atkTS(m3.T3)))
				e1, e2 = atkH(beta[:], ids1), atkH(beta[:], ids2)
			} else {
				beta = atkXOR(m3.F, atkMAC(tag1[:], "tagauth/F", m1.E[:], atkTS(m3.T3)))
				e1, e2 = atkMAC(beta[:], "tagauth/E", ids1), atkMAC(beta[:], "tagauth/E", ids2)
			}
			if e1 != m1.E {
				t.Fatal("the captured device did not recover beta_i")
			}
			// It also has K_i = theta_i ^ beta_i; the attack needs only beta_i.

			s.tick(2 * time.Second)
			ka := atkFill(0x11)
			forged := m1
			forged.E, forged.Theta = e2, atkXOR(ka, beta)
			dl, m2, err := d2.Start(ctx, nil, forged.Append(nil))
			if err != nil {
				t.Fatalf("sensor-2 refused the forged m1: %v", err)
			}
			m3b, _, err := s.gw.Verify(ctx, nil, m2)
			if c.want != nil {
				atkWantErr(t, err, c.want)
				return
			}
			if err != nil {
				t.Fatalf("gateway refused: %v", err)
			}
			m4b, devSess, err := dl.Respond(nil, m3b)
			if err != nil {
				t.Fatalf("sensor-2 refused m3: %v", err)
			}
			if dl.UserID() != "alice" || devSess == nil {
				t.Fatalf("sensor-2 has no session for alice (%q)", dl.UserID())
			}
			m4 := mustParseM4(t, m4b)
			kj := atkXOR(atkH(ka[:], atkTS(m4.T4)), m4.X)
			k := atkXOR(ka, kj)
			rec, err := devSess.Seal(nil, []byte("camera feed"))
			if err != nil {
				t.Fatal(err)
			}
			if pt := atkOpen(t, atkH(k[:]), e2, rec, true); string(pt) != "camera feed" {
				t.Fatalf("opened %q", pt)
			}
		})
	}
}

// ---- Item 8: an insider forges m3 for another user. ----

// TestAttackInsiderForgesM3 is section 8 item 8. Mallory is a registered
// user with her own card and password, so she knows Tag_U and the beta of
// her own login to lock-3. From her own m3 she unmasks the device's pad for
// T3. While T3 is fresh she sends lock-3 an m1 in alice's name, built with
// a beta and K_i of her choosing, drops the device's m2 and answers with
// her own m3 (F = beta ^ pad, same T3). The gateway never sees alice's
// login. Classic: lock-3 accepts and shares a key with Mallory believing
// she is alice. Hardened: the pad is bound to E_i, so the device refuses.
func TestAttackInsiderForgesM3(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			const did, mpw = "lock-3", "mallory's password"
			ctx := context.Background()
			s := newAtkScene(t, p, nil)
			lock := s.device(did)
			s.enroll("alice", "correct horse", atkKDF) // the victim; she never logs in
			mcard := s.enroll("mallory", mpw, atkKDF)
			own := s.login(s.unlock(mcard, mpw), did)

			om1 := mustParseM1(t, own.m1)
			om3 := mustParseM3(t, own.m3)
			var w atkKey
			if p == protocol.Classic {
				w = atkH(mcard.R[:], []byte(mpw))
			} else {
				copy(w[:], argon2.IDKey([]byte(mpw), mcard.R[:], mcard.KDF.Time, mcard.KDF.MemoryKiB, mcard.KDF.Threads, protocol.Size))
			}
			tagU := atkXOR(w, mcard.Alpha)
			var betaU atkKey
			if p == protocol.Classic {
				betaU = atkH(tagU[:], atkTS(om1.T1))
			} else {
				betaU = atkMAC(tagU[:], "tagauth/beta", atkID8(did), om1.Nonce[:], atkTS(om1.T1))
			}
			pad := atkXOR(om3.F, betaU)

			s.tick(time.Second)
			betaV, ka := atkFill(0x70), atkFill(0x90)
			ids := append(atkID8("alice"), atkID8(did)...)
			forged := protocol.M1{Profile: p, ID: []byte("alice"), KV: om1.KV, Theta: atkXOR(ka, betaV), T1: s.nowMs()}
			if p == protocol.Classic {
				forged.E = atkH(betaV[:], ids)
			} else {
				copy(forged.Nonce[:], "any nonce at all")
				forged.E = atkMAC(betaV[:], "tagauth/E", ids)
			}
			dl, _, err := lock.Start(ctx, nil, forged.Append(nil)) // m2 is dropped
			if err != nil {
				t.Fatal(err)
			}
			m3 := protocol.M3{Profile: p, F: atkXOR(betaV, pad), Gamma: om3.Gamma, T3: om3.T3}
			m4b, sess, err := dl.Respond(nil, m3.Append(nil))
			if p == protocol.Hardened {
				atkWantErr(t, err, protocol.ReasonBadM3)
				return
			}
			if err != nil {
				t.Fatalf("classic device refused the insider's m3: %v", err)
			}
			if dl.UserID() != "alice" || sess == nil {
				t.Fatalf("device has no session for alice (%q)", dl.UserID())
			}
			m4 := mustParseM4(t, m4b)
			kj := atkXOR(atkH(ka[:], atkTS(m4.T4)), m4.X)
			k := atkXOR(ka, kj)
			rec, err := sess.Seal(nil, []byte("door unlocked for alice"))
			if err != nil {
				t.Fatal(err)
			}
			if pt := atkOpen(t, atkH(k[:]), forged.E, rec, true); !bytes.Equal(pt, []byte("door unlocked for alice")) {
				t.Fatalf("opened %q", pt)
			}
		})
	}
}

package protocol

import (
	"fmt"
	"sync"
)

// User is an unlocked card: the card plus Tag_i, recovered from the
// password. It starts logins. It is safe for concurrent use.
type User struct {
	mu   sync.Mutex
	card Card
	tag  UserTag
	cfg  Config
	gone bool
}

// Unlock runs the card's password function (Argon2id under hardened, which
// takes tens of milliseconds on purpose) and recovers Tag_i = W_i ^ alpha_i.
// Under hardened a mistyped password is refused here with ReasonWrongPassword
// in 255 of 256 cases; the rest are refused by the gateway.
func Unlock(card Card, password string, cfg Config) (*User, error) {
	if err := cfg.check(true); err != nil {
		return nil, err
	}
	if err := card.Validate(); err != nil {
		return nil, err
	}
	w := passwordHash(card.Profile, password, &card.R, card.KDF)
	defer clear(w[:])
	if card.Profile == Hardened && fuzzyVerifier(&w) != card.Fuzzy {
		return nil, ReasonWrongPassword
	}
	return &User{card: card, tag: xor32(&w, &card.Alpha), cfg: cfg}, nil
}

// ID returns the user identity ID_i.
func (u *User) ID() string { return u.card.ID }

// Profile returns the card's profile.
func (u *User) Profile() Profile { return u.card.Profile }

// Close wipes Tag_i. Logins already started keep their own copies.
func (u *User) Close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	clear(u.tag[:])
	u.gone = true
}

// Login is the card's side of one login: it holds K_i and beta_i between m1
// and m4.
type Login struct {
	profile Profile
	cfg     Config
	id, did []byte
	tag     UserTag
	beta    [Size]byte
	ki      [Size]byte
	e       [Size]byte
	t1      uint64
	state   loginState
}

type loginState uint8

const (
	loginSent loginState = iota // m1 sent, waiting for m4
	loginDone                   // m4 accepted
	loginDead                   // closed or failed
)

var loginStateNames = [...]string{
	loginSent: "sent-m1",
	loginDone: "done",
	loginDead: "dead",
}

func (s loginState) String() string {
	if int(s) < len(loginStateNames) {
		return loginStateNames[s]
	}
	return fmt.Sprintf("loginState(%d)", uint8(s))
}

// Login starts a login to device did (step 502 classic, section 6 card):
// it draws K_i (and, hardened, n_i), and returns the state that Finish
// needs with m1 appended to dst, so that a client sending many logins
// reuses one buffer (pass nil for a fresh slice).
func (u *User) Login(dst []byte, did string) (*Login, []byte, error) {
	if !ValidIdentity([]byte(did)) {
		return nil, nil, fmt.Errorf("%w: invalid device identity", ReasonBadMessage)
	}
	u.mu.Lock()
	if u.gone {
		u.mu.Unlock()
		return nil, nil, ErrState
	}
	l := &Login{profile: u.card.Profile, cfg: u.cfg, id: []byte(u.card.ID), did: []byte(did), tag: u.tag}
	u.mu.Unlock()

	m := M1{Profile: l.profile, ID: l.id, KV: u.card.KV, T1: u.cfg.nowMs()}
	l.t1 = m.T1
	var err error
	if l.profile == Classic {
		err = l.startClassic(&m)
	} else {
		err = l.startHardened(&m)
	}
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	m.E = l.e
	m.Theta = xor32(&l.ki, &l.beta)
	return l, m.Append(dst), nil
}

// startClassic is step 502 under classic: beta_i = h(Tag_i || T1) and
// E_i = h(beta_i || ID_i || DID_j).
func (l *Login) startClassic(m *M1) error {
	if err := l.cfg.random(l.ki[:]); err != nil {
		return err
	}
	t1 := ts(m.T1)
	var ids [2 * (1 + MaxIDLen)]byte
	l.beta = h(l.tag[:], t1[:])
	l.e = h(l.beta[:], id8(id8(ids[:0], l.id), l.did))
	return nil
}

// startHardened is step 502 under hardened: a fresh nonce n_i, then
// beta_i = M(Tag_i, "tagauth/beta", DID_j || n_i || T1) and E_i. The nonce
// is drawn before K_i, which the vectors' fixed randomness relies on.
func (l *Login) startHardened(m *M1) error {
	if err := l.cfg.random(m.Nonce[:]); err != nil {
		return err
	}
	if err := l.cfg.random(l.ki[:]); err != nil {
		return err
	}
	t1 := ts(m.T1)
	var dbuf [1 + MaxIDLen]byte
	var ids [2 * (1 + MaxIDLen)]byte
	l.beta = mac(l.tag[:], labelBeta, id8(dbuf[:0], l.did), m.Nonce[:], t1[:])
	l.e = mac(l.beta[:], labelE, id8(id8(ids[:0], l.id), l.did))
	return nil
}

// Finish checks m4 (step 510 classic, section 6 card) and derives the
// session. Under hardened it also returns m5 for the device, appended to
// dst. Under classic there is no m5 and the result is nil whatever dst
// holds, so that "m5 != nil" keeps meaning "send a confirm" for a caller
// that reuses a buffer. A message that fails a check leaves the login
// waiting, so that a forged m4 cannot cancel a genuine one still in
// flight. A second m4, once one has been accepted, is ReasonStepReplay
// (replayed).
func (l *Login) Finish(dst, m4 []byte) (*Session, []byte, error) {
	if err := CheckProfile(l.profile, m4); err != nil {
		return nil, nil, err
	}
	m, err := ParseM4(m4)
	if err != nil {
		return nil, nil, err
	}
	switch l.state {
	case loginSent:
	case loginDone:
		return nil, nil, ReasonStepReplay
	default:
		return nil, nil, ErrState
	}
	now := l.cfg.nowMs()
	w := l.cfg.window()
	if !fresh(m.T4, now, w) {
		return nil, nil, staleError(ReasonStaleT4, m.T4, now)
	}
	var s *Session
	var m5 []byte
	if l.profile == Classic {
		s, err = l.finishClassic(&m)
	} else {
		s, m5, err = l.finishHardened(dst, &m, w)
	}
	if err != nil {
		return nil, nil, err
	}
	l.state = loginDone
	l.wipe()
	return s, m5, nil
}

// finishClassic is step 510 under classic: gamma_i = h(Tag_i || DID_j)
// authenticates m4, K_j = X xor h(K_i || T4) and SK = h(K_i xor K_j).
func (l *Login) finishClassic(m *M4) (*Session, error) {
	var dbuf [1 + MaxIDLen]byte
	t4 := ts(m.T4)
	gamma := h(l.tag[:], id8(dbuf[:0], l.did))
	if !equal(gamma[:], m.Gamma[:]) {
		return nil, ReasonBadGamma
	}
	pad := h(l.ki[:], t4[:])
	kj := xor32(&pad, &m.X)
	x := xor32(&l.ki, &kj)
	sk := SessionKey(h(x[:]))
	clear(kj[:])
	clear(x[:])
	defer clear(sk[:])
	return newSession(Classic, roleUser, &sk, &l.e, l.cfg)
}

// finishHardened is step 510 under hardened: T3 must be within dT of T4,
// gamma_i = M(Tag_i, G, DID_j || E_i || T3) authenticates m4, and the
// device's tau_j must verify under SK before the card answers with its own
// tau_i in m5.
func (l *Login) finishHardened(dst []byte, m *M4, w uint64) (*Session, []byte, error) {
	if !fresh(m.T3, m.T4, w) {
		return nil, nil, staleError(ReasonStaleT3, m.T3, m.T4)
	}
	var dbuf [1 + MaxIDLen]byte
	t3, t4 := ts(m.T3), ts(m.T4)
	gamma := mac(l.tag[:], labelGamma, id8(dbuf[:0], l.did), l.e[:], t3[:])
	if !equal(gamma[:], m.Gamma[:]) {
		return nil, nil, ReasonBadGamma
	}
	pad := mac(l.ki[:], labelX, l.e[:], t4[:])
	kj := xor32(&pad, &m.X)
	sk := sessionKeyHardened(&l.ki, &kj, &l.e, &m.X)
	clear(kj[:])
	defer clear(sk[:])
	tau := mac(sk[:], labelConfirmDevice, l.e[:], m.X[:], t3[:], t4[:])
	if !equal(tau[:], m.Tau[:]) {
		return nil, nil, ReasonBadM4
	}
	ti := mac(sk[:], labelConfirmUser, l.e[:], m.X[:])
	s, err := newSession(Hardened, roleUser, &sk, &l.e, l.cfg)
	if err != nil {
		return nil, nil, err
	}
	return s, (&M5{Profile: Hardened, Tau: ti}).Append(dst), nil
}

// Close abandons the login and wipes its secrets.
func (l *Login) Close() {
	l.state = loginDead
	l.wipe()
}

func (l *Login) wipe() {
	clear(l.tag[:])
	clear(l.beta[:])
	clear(l.ki[:])
}

// sessionKeyHardened is SK_ij = M(K_i || K_j, "tagauth/SK", E_i || X_ij).
func sessionKeyHardened(ki, kj, e, x *[Size]byte) SessionKey {
	var k [2 * Size]byte
	copy(k[:Size], ki[:])
	copy(k[Size:], kj[:])
	sk := SessionKey(mac(k[:], labelSK, e[:], x[:]))
	clear(k[:])
	return sk
}

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
	tag  [Size]byte
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
	tag     [Size]byte
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

// Login starts a login to device did (step 502 classic, section 6 card):
// it draws K_i (and, hardened, n_i), computes m1 and returns it with the
// state that Finish needs.
func (u *User) Login(did string) (*Login, []byte, error) {
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
	if l.profile == Hardened {
		err = l.cfg.random(m.Nonce[:])
	}
	if err == nil {
		err = l.cfg.random(l.ki[:])
	}
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	t1 := ts(m.T1)
	var ids [2 * (1 + MaxIDLen)]byte
	pair := id8(id8(ids[:0], l.id), l.did)
	if l.profile == Classic {
		l.beta = h(l.tag[:], t1[:])
		l.e = h(l.beta[:], pair)
	} else {
		var dbuf [1 + MaxIDLen]byte
		l.beta = mac(l.tag[:], labelBeta, id8(dbuf[:0], l.did), m.Nonce[:], t1[:])
		l.e = mac(l.beta[:], labelE, pair)
	}
	m.E = l.e
	m.Theta = xor32(&l.ki, &l.beta)
	return l, m.Append(nil), nil
}

// Finish checks m4 (step 510 classic, section 6 card) and derives the
// session. Under hardened it also returns m5 for the device; under classic
// m5 is nil. A message that fails a check leaves the login waiting, so that
// a forged m4 cannot cancel a genuine one still in flight. A second m4,
// once one has been accepted, is ReasonStepReplay (replayed).
func (l *Login) Finish(m4 []byte) (*Session, []byte, error) {
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
	t4 := ts(m.T4)
	var dbuf [1 + MaxIDLen]byte
	did := id8(dbuf[:0], l.did)
	var sk [Size]byte
	var m5 []byte
	if l.profile == Classic {
		gamma := h(l.tag[:], did)
		if !equal(gamma[:], m.Gamma[:]) {
			return nil, nil, ReasonBadGamma
		}
		pad := h(l.ki[:], t4[:])
		kj := xor32(&pad, &m.X)
		x := xor32(&l.ki, &kj)
		sk = h(x[:])
		clear(kj[:])
		clear(x[:])
	} else {
		if !fresh(m.T3, m.T4, w) {
			return nil, nil, staleError(ReasonStaleT3, m.T3, m.T4)
		}
		t3 := ts(m.T3)
		gamma := mac(l.tag[:], labelGamma, did, l.e[:], t3[:])
		if !equal(gamma[:], m.Gamma[:]) {
			return nil, nil, ReasonBadGamma
		}
		pad := mac(l.ki[:], labelX, l.e[:], t4[:])
		kj := xor32(&pad, &m.X)
		sk = sessionKeyHardened(&l.ki, &kj, &l.e, &m.X)
		clear(kj[:])
		tau := mac(sk[:], labelConfirmDevice, l.e[:], m.X[:], t3[:], t4[:])
		if !equal(tau[:], m.Tau[:]) {
			clear(sk[:])
			return nil, nil, ReasonBadM4
		}
		ti := mac(sk[:], labelConfirmUser, l.e[:], m.X[:])
		m5 = (&M5{Profile: Hardened, Tau: ti}).Append(nil)
	}
	s, err := newSession(l.profile, roleUser, &sk, &l.e, l.cfg)
	clear(sk[:])
	if err != nil {
		return nil, nil, err
	}
	l.state = loginDone
	l.wipe()
	return s, m5, nil
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
func sessionKeyHardened(ki, kj, e, x *[Size]byte) [Size]byte {
	var k [2 * Size]byte
	copy(k[:Size], ki[:])
	copy(k[Size:], kj[:])
	sk := mac(k[:], labelSK, e[:], x[:])
	clear(k[:])
	return sk
}

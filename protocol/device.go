package protocol

import (
	"context"
	"fmt"
	"sync"
)

// Device is the terminal device D_j: it holds its credential, relays a
// user's login to the gateway, checks the gateway's answer and derives the
// session key. It is safe for concurrent use; each login has its own
// DeviceLogin.
type Device struct {
	cred   DeviceCredential
	cfg    Config
	replay ReplayCache
}

// NewDevice returns the device role for cred. The replay cache remembers
// (ID_i, E_i) of accepted m1 for dT (spec section 5, step 504).
func NewDevice(cred DeviceCredential, replay ReplayCache, cfg Config) (*Device, error) {
	if err := cfg.check(true); err != nil {
		return nil, err
	}
	if !cred.Profile.Valid() {
		return nil, ReasonWrongProfile
	}
	if !ValidIdentity([]byte(cred.ID)) || (cred.Profile == Hardened && cred.KV == 0) {
		return nil, fmt.Errorf("device credential: %w", ReasonBadMessage)
	}
	if replay == nil {
		return nil, fmt.Errorf("tagauth: device needs a replay cache")
	}
	return &Device{cred: cred, cfg: cfg, replay: replay}, nil
}

// ID returns DID_j.
func (d *Device) ID() string { return d.cred.ID }

// Profile returns the device's profile.
func (d *Device) Profile() Profile { return d.cred.Profile }

// DeviceLogin is the device's state for one login, from m1 until the
// session is established, refused or expired.
type DeviceLogin struct {
	mu     sync.Mutex
	dev    *Device
	id     []byte
	e      [Size]byte
	sid    [SIDSize]byte
	theta  [Size]byte
	t1     uint64
	sk     SessionKey // hardened: between m4 and m5
	x      [Size]byte
	t4     uint64
	state  devState
	userID string
}

// devState is where a DeviceLogin stands.
type devState uint8

const (
	devWaitM3 devState = iota // m2 sent, waiting for the gateway's m3
	devWaitM5                 // hardened: m4 sent, waiting for the card's m5
	devDone                   // session established
	devDead                   // closed, expired or failed
)

var devStateNames = [...]string{
	devWaitM3: "wait-m3",
	devWaitM5: "wait-m5",
	devDone:   "done",
	devDead:   "dead",
}

func (s devState) String() string {
	if int(s) < len(devStateNames) {
		return devStateNames[s]
	}
	return fmt.Sprintf("devState(%d)", uint8(s))
}

// Start handles m1 (step 504): it checks T1, records (ID_i, E_i) in the
// replay cache and returns the pending login with m2 for the gateway
// appended to dst (nil for a fresh slice; a device reuses one buffer per
// request, as Gateway.Verify's callers do).
func (d *Device) Start(ctx context.Context, dst, m1 []byte) (*DeviceLogin, []byte, error) {
	if err := CheckProfile(d.cred.Profile, m1); err != nil {
		return nil, nil, err
	}
	m, err := ParseM1(m1)
	if err != nil {
		return nil, nil, err
	}
	return d.StartParsed(ctx, dst, m)
}

// StartParsed is Start for an m1 already parsed by ParseM1, for a caller
// that reads m1 before it decides to start (a device agent charges the
// claimed user's limits first), so that m1 is parsed once. m aliases the
// bytes it was parsed from, which must not change until it returns.
func (d *Device) StartParsed(ctx context.Context, dst []byte, m M1) (*DeviceLogin, []byte, error) {
	if m.Profile != d.cred.Profile {
		return nil, nil, ReasonWrongProfile
	}
	now := d.cfg.nowMs()
	w := d.cfg.window()
	if !fresh(m.T1, now, w) {
		return nil, nil, staleError(ReasonStaleT1, m.T1, now)
	}
	ok, err := d.replay.Insert(ctx, replayKey(replayDevice, m.ID, m.E[:]), m.T1+w, now)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ReasonCacheFull, err)
	}
	if !ok {
		return nil, nil, ReasonLoginReplay
	}
	did := []byte(d.cred.ID)
	m2 := M2{Profile: m.Profile, ID: m.ID, KV: m.KV, Nonce: m.Nonce, E: m.E, DID: did, KVDev: d.cred.KV, T1: m.T1, T2: now}
	if m.Profile == Classic {
		m2.KVDev = 0 // the classic wire has no key versions
		m2.I = h(d.cred.Tag[:], m.E[:])
	} else {
		var dbuf [1 + MaxIDLen]byte
		t2 := ts(now)
		m2.I = mac(d.cred.Tag[:], labelI, m.E[:], id8(dbuf[:0], did), t2[:])
	}
	l := &DeviceLogin{dev: d, id: append([]byte(nil), m.ID...), e: m.E, sid: sessionID(&m.E), theta: m.Theta, t1: m.T1, userID: string(m.ID)}
	return l, m2.Append(dst), nil
}

// UserID returns ID_i as claimed in m1. It is authenticated only once the
// session is established.
func (l *DeviceLogin) UserID() string { return l.userID }

// SID returns the sid of the session this login will establish (spec
// section 9), known from m1 on: the confirm request names its login by it
// (section 11), so a device finds the pending login from the sid in front
// of m5, whatever address m5 comes from.
func (l *DeviceLogin) SID() [SIDSize]byte { return l.sid }

// Respond handles the gateway's m3 (step 508): it checks T3 and that the
// unmasked beta_i reproduces E_i, which is what authenticates m3, draws K_j
// and returns m4 for the card, appended to dst (nil for a fresh slice).
// Under classic the session is established and returned; under hardened it
// is pending until Confirm. On an error the message is nil. A message that
// fails a check leaves the login as it was. A second m3, once one has been
// accepted, is ReasonStepReplay (replayed).
func (l *DeviceLogin) Respond(dst, m3 []byte) ([]byte, *Session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.dev
	if err := CheckProfile(d.cred.Profile, m3); err != nil {
		return nil, nil, err
	}
	m, err := ParseM3(m3)
	if err != nil {
		return nil, nil, err
	}
	switch l.state {
	case devWaitM3:
	case devWaitM5, devDone:
		return nil, nil, ReasonStepReplay
	default:
		return nil, nil, ErrState
	}
	now := d.cfg.nowMs()
	if !fresh(m.T3, now, d.cfg.window()) {
		return nil, nil, staleError(ReasonStaleT3, m.T3, now)
	}
	// One step per profile, as crypto/tls keeps one state machine per
	// version: the checks above are the profiles' common ground.
	if m.Profile == Classic {
		return l.respondClassic(dst, &m, now)
	}
	return l.respondHardened(dst, &m, now)
}

// respondClassic is step 508 under classic: beta_i = F xor h(Tag_j || T3)
// must give E_i = h(beta_i || ID_i || DID_j); SK = h(K_i xor K_j), and the
// session is established at m4.
func (l *DeviceLogin) respondClassic(dst []byte, m *M3, now uint64) ([]byte, *Session, error) {
	d := l.dev
	t3, t4 := ts(m.T3), ts(now)
	pad := h(d.cred.Tag[:], t3[:])
	beta := xor32(&m.F, &pad)
	defer clear(beta[:])
	var ids [2 * (1 + MaxIDLen)]byte
	e := h(beta[:], id8(id8(ids[:0], l.id), []byte(d.cred.ID)))
	if !equal(e[:], l.e[:]) {
		return nil, nil, ReasonBadM3
	}
	var kj [Size]byte
	if err := d.cfg.random(kj[:]); err != nil {
		return nil, nil, err
	}
	defer clear(kj[:])
	ki := xor32(&l.theta, &beta)
	defer clear(ki[:])
	out := M4{Profile: Classic, Gamma: m.Gamma, T3: m.T3, T4: now}
	xp := h(ki[:], t4[:])
	out.X = xor32(&xp, &kj)
	k := xor32(&ki, &kj)
	sk := SessionKey(h(k[:]))
	clear(k[:])
	defer clear(sk[:])
	s, err := newSession(Classic, roleDevice, &sk, &l.e, d.cfg)
	if err != nil {
		return nil, nil, err
	}
	l.state = devDone
	clear(l.theta[:])
	return out.Append(dst), s, nil
}

// respondHardened is step 508 under hardened: beta_i = F xor M(Tag_j, F,
// E_i || T3) must give E_i; m4 carries the device's key confirmation tau_j
// and the login waits for the card's tau_i in m5 (Confirm).
func (l *DeviceLogin) respondHardened(dst []byte, m *M3, now uint64) ([]byte, *Session, error) {
	d := l.dev
	t3, t4 := ts(m.T3), ts(now)
	pad := mac(d.cred.Tag[:], labelF, l.e[:], t3[:])
	beta := xor32(&m.F, &pad)
	defer clear(beta[:])
	var ids [2 * (1 + MaxIDLen)]byte
	e := mac(beta[:], labelE, id8(id8(ids[:0], l.id), []byte(d.cred.ID)))
	if !equal(e[:], l.e[:]) {
		return nil, nil, ReasonBadM3
	}
	var kj [Size]byte
	if err := d.cfg.random(kj[:]); err != nil {
		return nil, nil, err
	}
	defer clear(kj[:])
	ki := xor32(&l.theta, &beta)
	defer clear(ki[:])
	out := M4{Profile: Hardened, Gamma: m.Gamma, T3: m.T3, T4: now}
	xp := mac(ki[:], labelX, l.e[:], t4[:])
	out.X = xor32(&xp, &kj)
	sk := sessionKeyHardened(&ki, &kj, &l.e, &out.X)
	defer clear(sk[:])
	out.Tau = mac(sk[:], labelConfirmDevice, l.e[:], out.X[:], t3[:], t4[:])
	l.sk, l.x, l.t4 = sk, out.X, now
	l.state = devWaitM5
	clear(l.theta[:])
	return out.Append(dst), nil, nil
}

// Confirm handles m5 under hardened: it checks tau_i and only then returns
// the established session. A pending login lives at most dT after m4: an
// m5 after that, or after Close, is ReasonSessionExpired (rejected); a second
// m5 once one has been accepted is ReasonStepReplay (replayed). A wrong tau_i
// (ReasonBadM5) leaves the login pending.
func (l *DeviceLogin) Confirm(m5 []byte) (*Session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.dev
	if err := CheckProfile(d.cred.Profile, m5); err != nil {
		return nil, err
	}
	m, err := ParseM5(m5)
	if err != nil {
		return nil, err
	}
	switch l.state {
	case devWaitM5:
	case devDone:
		return nil, ReasonStepReplay
	case devDead:
		return nil, ReasonSessionExpired
	default:
		return nil, ErrState
	}
	now := d.cfg.nowMs()
	if now > l.t4+d.cfg.window() {
		l.closeLocked()
		return nil, ReasonSessionExpired
	}
	tau := mac(l.sk[:], labelConfirmUser, l.e[:], l.x[:])
	if !equal(tau[:], m.Tau[:]) {
		return nil, ReasonBadM5
	}
	s, err := newSession(Hardened, roleDevice, &l.sk, &l.e, d.cfg)
	if err != nil {
		return nil, err
	}
	l.state = devDone
	clear(l.sk[:])
	return s, nil
}

// Close abandons the login and wipes its secrets; for example when the
// gateway answers with an error instead of m3.
func (l *DeviceLogin) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked()
}

func (l *DeviceLogin) closeLocked() {
	l.state = devDead
	clear(l.theta[:])
	clear(l.sk[:])
}

package protocol

import (
	"context"
	"fmt"
)

// Gateway is the verifying party: it checks m2 against its master keys,
// registry and replay cache and answers m3. It keeps no per-login state and
// is safe for concurrent use.
type Gateway struct {
	profile Profile
	reg     Registry
	replay  ReplayCache
	cfg     Config
	tags    *tagCache
}

// NewGateway returns a gateway serving profile p. It needs no randomness:
// Config.Rand may be nil.
func NewGateway(p Profile, reg Registry, replay ReplayCache, cfg Config) (*Gateway, error) {
	if err := cfg.check(false); err != nil {
		return nil, err
	}
	if !p.Valid() {
		return nil, ReasonWrongProfile
	}
	if reg == nil || replay == nil {
		return nil, fmt.Errorf("tagauth: gateway needs a registry and a replay cache")
	}
	return &Gateway{profile: p, reg: reg, replay: replay, cfg: cfg, tags: newTagCache(defaultTagCache)}, nil
}

// Profile returns the profile the gateway serves.
func (g *Gateway) Profile() Profile { return g.profile }

// Verification describes a verify request for the audit log. Its slices
// alias the request bytes and are valid only as long as they are.
type Verification struct {
	Profile  Profile
	User     []byte // ID_i as claimed
	Device   []byte // DID_j as claimed
	KVUser   uint8
	KVDevice uint8
	T1, T2   uint64
	T3       uint64 // the gateway's now
}

// Verify handles m2 (step 506 classic, section 6 gateway) and appends its
// answer to dst: m3 on success, otherwise an error message whose code is
// CodeOf(err). The error carries the precise reason (errors.Is against the
// Err* reasons) for the audit log; the wire never does. On a valid request
// it allocates nothing.
func (g *Gateway) Verify(ctx context.Context, dst, m2 []byte) ([]byte, Verification, error) {
	if err := CheckProfile(g.profile, m2); err != nil {
		return AppendError(dst, ErrorProfile(m2), CodeOf(err)), Verification{}, err
	}
	m, err := ParseM2(m2)
	if err != nil {
		return AppendError(dst, ErrorProfile(m2), CodeOf(err)), Verification{}, err
	}
	return g.VerifyM2(ctx, dst, &m, nil)
}

// VerifyM2 is Verify for an m2 the caller has parsed already (with
// CheckProfile and ParseM2, which Verify calls), so that a gateway that
// reads m2 before verifying it (a rate limit per device, a lockout per
// user) parses it once. m must be of the gateway's profile. m's slices are
// read during the call only; the Verification returned aliases them.
//
// admit, when not nil, is the caller's last word: it is called once every
// check of the verify has passed (freshness, replay, standing, policy and
// both proofs) and before m3 is built. If it returns an error the login
// is refused with that error: the answer is the error message of
// CodeOf(err) (wrap ErrBusy or ErrRejected to choose it; other errors
// answer internal), and no m3, hence no session secret, is ever computed.
// A gateway uses it for what must hold before a login may succeed, such
// as a durable audit record. admit must not keep v's slices.
func (g *Gateway) VerifyM2(ctx context.Context, dst []byte, m *M2, admit func(v Verification) error) ([]byte, Verification, error) {
	v, m3, err := g.verify(ctx, m, admit)
	if err != nil {
		return AppendError(dst, m.Profile, CodeOf(err)), v, err
	}
	return m3.Append(dst), v, nil
}

func (g *Gateway) verify(ctx context.Context, m *M2, admit func(Verification) error) (Verification, M3, error) {
	if m.Profile != g.profile {
		return Verification{}, M3{}, ReasonWrongProfile
	}
	v := Verification{Profile: m.Profile, User: m.ID, Device: m.DID, KVUser: m.KV, KVDevice: m.KVDev, T1: m.T1, T2: m.T2}
	now := g.cfg.nowMs()
	v.T3 = now
	w := g.cfg.window()
	if !fresh(m.T2, now, w) {
		return v, M3{}, staleError(ReasonStaleT2, m.T2, now)
	}
	if !fresh(m.T1, now, w) {
		return v, M3{}, staleError(ReasonStaleT1, m.T1, now)
	}
	var key ReplayKey
	if m.Profile == Classic {
		t1 := ts(m.T1)
		key = replayKey(replayGatewayClassic, m.ID, t1[:])
	} else {
		key = replayKey(replayGatewayHardened, m.ID, m.Nonce[:])
	}
	fresh, err := g.replay.Insert(ctx, key, m.T1+w, now)
	if err != nil {
		return v, M3{}, fmt.Errorf("%w: %w", ReasonCacheFull, err)
	}
	if !fresh {
		return v, M3{}, ReasonLoginReplay
	}
	st, err := g.reg.Standing(ctx, m.ID, m.DID)
	if err != nil {
		return v, M3{}, fmt.Errorf("%w: %w", ReasonBusyStore, err)
	}
	switch {
	case st.User == Unknown:
		return v, M3{}, ReasonUnknownUser
	case st.User == Revoked:
		return v, M3{}, ReasonRevokedUser
	case st.Device == Unknown:
		return v, M3{}, ReasonUnknownDevice
	case st.Device == Revoked:
		return v, M3{}, ReasonRevokedDevice
	}
	kvi, kvj := m.KV, m.KVDev
	if m.Profile == Classic {
		kvi, kvj = ClassicKeyVersion, ClassicKeyVersion
	}
	ki, ok := g.reg.MasterKey(kvi)
	if !ok {
		return v, M3{}, ReasonUnknownKeyVersion
	}
	kj, ok := g.reg.MasterKey(kvj)
	if !ok {
		return v, M3{}, ReasonUnknownKeyVersion
	}
	if !st.Allowed {
		return v, M3{}, ReasonPolicyDenied
	}
	var m3 M3
	if m.Profile == Classic {
		m3, err = answerClassic(m, ki, kj, now, &v, admit)
	} else {
		m3, err = g.answerHardened(m, kvi, kvj, ki, kj, now, &v, admit)
	}
	return v, m3, err
}

// answerClassic recomputes the tags, checks E_i and I_j, asks admit and
// builds m3 (step 506, with the errata of spec section 5).
func answerClassic(m *M2, ki, kj *GatewayKey, now uint64, v *Verification, admit func(Verification) error) (M3, error) {
	tagI := userTag(Classic, ki, m.ID)
	tagJ := deviceTag(Classic, kj, m.DID)
	defer clear(tagI[:])
	defer clear(tagJ[:])
	var ids [2 * (1 + MaxIDLen)]byte
	pair := id8(id8(ids[:0], m.ID), m.DID)
	did := pair[1+len(m.ID):]
	t1, t3 := ts(m.T1), ts(now)
	// I_j first: once it holds, a genuine device relayed this E_i, so a
	// bad E_i is the user's (a wrong password) and may count towards a
	// lockout; anyone can send an m2 with a bad E_i, nobody without a
	// device's tag one with a good I_j.
	i := h(tagJ[:], m.E[:])
	if !equal(i[:], m.I[:]) {
		return M3{}, ReasonBadI
	}
	beta := h(tagI[:], t1[:])
	defer clear(beta[:])
	e := h(beta[:], pair)
	if !equal(e[:], m.E[:]) {
		return M3{}, ReasonBadE
	}
	if admit != nil {
		if err := admit(*v); err != nil {
			return M3{}, err
		}
	}
	pad := h(tagJ[:], t3[:])
	return M3{Profile: Classic, T3: now, F: xor32(&beta, &pad), Gamma: h(tagI[:], did)}, nil
}

// answerHardened is the hardened gateway step of spec section 6, with
// admit asked before m3 is built. The tags' HMAC states come from the tag
// cache.
func (g *Gateway) answerHardened(m *M2, kvi, kvj uint8, ki, kj *GatewayKey, now uint64, v *Verification, admit func(Verification) error) (M3, error) {
	x := getHasher()
	defer putHasher(x)
	tagI := g.tags.state(x, domainUser, kvi, ki, m.ID)
	tagJ := g.tags.state(x, domainDevice, kvj, kj, m.DID)
	var ids [2 * (1 + MaxIDLen)]byte
	pair := id8(id8(ids[:0], m.ID), m.DID)
	did := pair[1+len(m.ID):]
	t1, t2, t3 := ts(m.T1), ts(m.T2), ts(now)
	i := x.mac(tagJ, labelI, m.E[:], did, t2[:]) // first: see answerClassic
	if !equal(i[:], m.I[:]) {
		return M3{}, ReasonBadI
	}
	beta := x.mac(tagI, labelBeta, did, m.Nonce[:], t1[:])
	defer clear(beta[:])
	e := mac(beta[:], labelE, pair)
	if !equal(e[:], m.E[:]) {
		return M3{}, ReasonBadE
	}
	if admit != nil {
		if err := admit(*v); err != nil {
			return M3{}, err
		}
	}
	pad := x.mac(tagJ, labelF, m.E[:], t3[:])
	return M3{Profile: Hardened, T3: now, F: xor32(&beta, &pad), Gamma: x.mac(tagI, labelGamma, did, m.E[:], t3[:])}, nil
}

package protocol

import (
	"fmt"
)

// MasterKey is one version of the gateway's K_GTW.
type MasterKey struct {
	Version uint8 // 1..255; classic deployments use one version
	Key     GatewayKey
}

// userTag is Tag_i for a profile: h(id8(ID) || K) or M(K, "user-tag", id8(ID)).
func userTag(p Profile, k *GatewayKey, id []byte) UserTag {
	var buf [1 + MaxIDLen]byte
	enc := id8(buf[:0], id)
	if p == Classic {
		return h(enc, k[:])
	}
	return mac(k[:], labelUserTag, enc)
}

// deviceTag is Tag_j: identical to the user tag under classic (the namespace
// collision of spec section 8 item 4), separately labelled under hardened.
func deviceTag(p Profile, k *GatewayKey, did []byte) DeviceTag {
	var buf [1 + MaxIDLen]byte
	enc := id8(buf[:0], did)
	if p == Classic {
		return h(enc, k[:])
	}
	return mac(k[:], labelDeviceTag, enc)
}

// DeviceCredential is what a provisioned device holds: DID_j, Tag_j and
// kv_j. Tag is a secret shared only with the gateway.
type DeviceCredential struct {
	Profile Profile
	ID      string
	// KV is kv_j, the version of the master key Tag_j was made under. A
	// classic credential's is ClassicKeyVersion, the one key a classic
	// gateway has; the classic wire does not carry it, so a classic device
	// also accepts 0, which credentials made before spec 1.1 hold.
	KV  uint8
	Tag DeviceTag
}

// ProvisionDevice computes the credential of device did under master key mk
// (patent [0155]). Uniqueness of did is the registry's business.
func ProvisionDevice(p Profile, did string, mk MasterKey) (DeviceCredential, error) {
	if !p.Valid() {
		return DeviceCredential{}, ReasonWrongProfile
	}
	if !ValidIdentity([]byte(did)) || mk.Version == 0 {
		return DeviceCredential{}, fmt.Errorf("%w: device identity must be 1-64 bytes of UTF-8 without NUL and key version 1-255", ReasonBadMessage)
	}
	c := DeviceCredential{Profile: p, ID: did, KV: mk.Version, Tag: deviceTag(p, &mk.Key, []byte(did))}
	if p == Classic {
		c.KV = ClassicKeyVersion
	}
	return c, nil
}

// Card is the user's smart card SC_i: everything the user holds except the
// password. Alpha and R are secrets in the sense that, with the password,
// they give Tag_i; the card alone admits only offline guessing (spec
// section 8 item 3 and the fuzzy verifier of section 4).
type Card struct {
	Profile Profile
	ID      string
	Alpha   [Size]byte
	R       [Size]byte
	KV      uint8     // hardened
	Fuzzy   uint8     // hardened: v_i
	KDF     KDFParams // hardened
}

// Validate checks the card's fields, as read from an untrusted file.
func (c *Card) Validate() error {
	switch {
	case !c.Profile.Valid():
		return fmt.Errorf("card: %w", ReasonWrongProfile)
	case !ValidIdentity([]byte(c.ID)):
		return fmt.Errorf("card: %w: invalid identity", ReasonBadMessage)
	case c.Profile == Hardened && c.KV == 0:
		return fmt.Errorf("card: %w: key version 0", ReasonBadMessage)
	case c.Profile == Hardened && !c.KDF.Valid():
		return fmt.Errorf("card: %w: Argon2id parameters out of range", ReasonBadMessage)
	}
	return nil
}

// RegistrationRequest is m_reg = (ID_i, W_i, r_i, T_reg), plus the KDF
// parameters under hardened. It must travel only over a confidential,
// authenticated channel: W_i with alpha_i reveals Tag_i.
type RegistrationRequest struct {
	Profile Profile
	ID      string
	W       PasswordHash
	R       [Size]byte
	T       uint64 // ms since the Unix epoch
	KDF     KDFParams
}

// Wipe zeroes the secrets of the request.
func (r *RegistrationRequest) Wipe() {
	clear(r.W[:])
	clear(r.R[:])
}

// NewRegistrationRequest is the enroller's step 1 (FIG. 4): it draws r_i,
// computes W_i from the password (Argon2id under hardened: slow on purpose)
// and stamps the request with the current time.
func NewRegistrationRequest(p Profile, id, password string, kdf KDFParams, cfg Config) (RegistrationRequest, error) {
	if err := cfg.check(true); err != nil {
		return RegistrationRequest{}, err
	}
	if !p.Valid() {
		return RegistrationRequest{}, ReasonWrongProfile
	}
	if !ValidIdentity([]byte(id)) {
		return RegistrationRequest{}, fmt.Errorf("%w: identity must be 1-64 bytes of UTF-8 without NUL", ReasonBadMessage)
	}
	if p == Hardened && !kdf.Valid() {
		return RegistrationRequest{}, fmt.Errorf("%w: Argon2id parameters out of range", ReasonBadMessage)
	}
	if p == Classic {
		kdf = KDFParams{}
	}
	r := RegistrationRequest{Profile: p, ID: id, T: cfg.nowMs(), KDF: kdf}
	if err := cfg.random(r.R[:]); err != nil {
		return RegistrationRequest{}, err
	}
	r.W = passwordHash(p, password, &r.R, kdf)
	return r, nil
}

// IssueCard is the gateway's step 3 (FIG. 4): it checks the request and
// returns the card. The caller must first check that the identity is not
// taken (and, under classic, not a device identity) and must never store or
// log W_i or r_i. The card is issued under mk (the newest key version).
func IssueCard(req *RegistrationRequest, mk MasterKey, cfg Config) (Card, error) {
	if err := cfg.check(false); err != nil {
		return Card{}, err
	}
	if !req.Profile.Valid() {
		return Card{}, ReasonWrongProfile
	}
	if !ValidIdentity([]byte(req.ID)) || mk.Version == 0 {
		return Card{}, fmt.Errorf("%w: invalid identity or key version", ReasonBadMessage)
	}
	if req.Profile == Hardened && !req.KDF.Valid() {
		return Card{}, fmt.Errorf("%w: Argon2id parameters out of range", ReasonBadMessage)
	}
	if now := cfg.nowMs(); !fresh(req.T, now, cfg.window()) {
		return Card{}, staleError(ReasonStaleReg, req.T, now)
	}
	tag := userTag(req.Profile, &mk.Key, []byte(req.ID))
	defer clear(tag[:])
	c := Card{Profile: req.Profile, ID: req.ID, Alpha: xor32(&req.W, &tag), R: req.R}
	if req.Profile == Hardened {
		c.KV = mk.Version
		c.Fuzzy = fuzzyVerifier(&req.W)
		c.KDF = req.KDF
	}
	return c, nil
}

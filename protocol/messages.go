package protocol

import (
	"encoding/binary"

	"golang.org/x/crypto/cryptobyte"
)

// MsgType is the second byte of every message (spec section 7).
type MsgType uint8

// Message types.
const (
	TypeM1     MsgType = 0x01 // login request, card -> device
	TypeM2     MsgType = 0x02 // verify request, device -> gateway
	TypeM3     MsgType = 0x03 // verify response, gateway -> device
	TypeM4     MsgType = 0x04 // login response, device -> card
	TypeM5     MsgType = 0x05 // key confirmation, card -> device (hardened)
	TypeRecord MsgType = 0x10 // sealed channel record
	TypeError  MsgType = 0x7f // error
)

// Exact message sizes where no identity makes them vary.
const (
	sizeM3         = 2 + 2*Size + 8
	sizeM4Classic  = 2 + 2*Size + 8
	sizeM4Hardened = 2 + 3*Size + 16
	sizeM5         = 2 + Size
	sizeError      = 3
)

// M1 is the login request (ID_i, [kv_i, n_i,] E_i, theta_i, T1).
// Fields marked hardened are zero and absent from the wire under Classic.
type M1 struct {
	Profile Profile
	ID      []byte // aliases the parsed input
	KV      uint8  // hardened
	Nonce   [NonceSize]byte
	E       [Size]byte
	Theta   [Size]byte
	T1      uint64
}

// M2 is the verify request the device sends to the gateway.
type M2 struct {
	Profile Profile
	ID      []byte // aliases the parsed input
	KV      uint8  // hardened
	Nonce   [NonceSize]byte
	E       [Size]byte
	DID     []byte // aliases the parsed input
	KVDev   uint8  // hardened
	I       [Size]byte
	T1, T2  uint64
}

// M3 is the gateway's verify response (F_ij, gamma_i, T3).
type M3 struct {
	Profile Profile
	F       [Size]byte
	Gamma   [Size]byte
	T3      uint64
}

// M4 is the device's login response (X_ij, gamma_i, [T3,] T4, [tau_j]).
type M4 struct {
	Profile Profile
	X       [Size]byte
	Gamma   [Size]byte
	T3      uint64 // hardened
	T4      uint64
	Tau     [Size]byte // hardened
}

// M5 is the card's key confirmation tau_i (hardened only).
type M5 struct {
	Profile Profile
	Tau     [Size]byte
}

// Append appends the wire form of m to dst.
func (m *M1) Append(dst []byte) []byte {
	dst = append(dst, byte(m.Profile), byte(TypeM1))
	dst = id8(dst, m.ID)
	if m.Profile == Hardened {
		dst = append(dst, m.KV)
		dst = append(dst, m.Nonce[:]...)
	}
	dst = append(dst, m.E[:]...)
	dst = append(dst, m.Theta[:]...)
	return binary.BigEndian.AppendUint64(dst, m.T1)
}

// Append appends the wire form of m to dst.
func (m *M2) Append(dst []byte) []byte {
	dst = append(dst, byte(m.Profile), byte(TypeM2))
	dst = id8(dst, m.ID)
	if m.Profile == Hardened {
		dst = append(dst, m.KV)
		dst = append(dst, m.Nonce[:]...)
	}
	dst = append(dst, m.E[:]...)
	dst = id8(dst, m.DID)
	if m.Profile == Hardened {
		dst = append(dst, m.KVDev)
	}
	dst = append(dst, m.I[:]...)
	dst = binary.BigEndian.AppendUint64(dst, m.T1)
	return binary.BigEndian.AppendUint64(dst, m.T2)
}

// Append appends the wire form of m to dst.
func (m *M3) Append(dst []byte) []byte {
	dst = append(dst, byte(m.Profile), byte(TypeM3))
	dst = append(dst, m.F[:]...)
	dst = append(dst, m.Gamma[:]...)
	return binary.BigEndian.AppendUint64(dst, m.T3)
}

// Append appends the wire form of m to dst.
func (m *M4) Append(dst []byte) []byte {
	dst = append(dst, byte(m.Profile), byte(TypeM4))
	dst = append(dst, m.X[:]...)
	dst = append(dst, m.Gamma[:]...)
	if m.Profile == Hardened {
		dst = binary.BigEndian.AppendUint64(dst, m.T3)
	}
	dst = binary.BigEndian.AppendUint64(dst, m.T4)
	if m.Profile == Hardened {
		dst = append(dst, m.Tau[:]...)
	}
	return dst
}

// Append appends the wire form of m to dst.
func (m *M5) Append(dst []byte) []byte {
	dst = append(dst, byte(m.Profile), byte(TypeM5))
	return append(dst, m.Tau[:]...)
}

// AppendError appends an error message answering a message of profile p
// (0 when the profile byte could not be read) with wire code c. Use
// [ErrorProfile] to get p from the request.
func AppendError(dst []byte, p Profile, c Code) []byte {
	return append(dst, byte(p), byte(TypeError), byte(c))
}

// ErrorProfile is the profile byte of the error message that answers req
// (spec section 7): req's first byte when it names a profile (0x01 or
// 0x02), and 0x00 when req is empty or its first byte names none.
func ErrorProfile(req []byte) Profile {
	if len(req) > 0 && Profile(req[0]).Valid() {
		return Profile(req[0])
	}
	return 0
}

// CheckProfile makes the first two checks of spec section 7, which a
// receiver of profile p makes on every message at every endpoint, records
// included, before it reads anything else: an empty message is malformed
// ([ReasonBadMessage]), and a first byte other than p is unsupported_profile
// ([ReasonWrongProfile]) whatever follows, so that a truncated message of the
// other profile gets the same answer as a whole one. Every role of this
// package makes these checks itself; transports call CheckProfile before
// they look into a message of their own (to read an identity for a log,
// or a sid).
func CheckProfile(p Profile, msg []byte) error {
	if len(msg) == 0 {
		return ReasonBadMessage
	}
	if Profile(msg[0]) != p {
		return ReasonWrongProfile
	}
	return nil
}

// AppendConfirmPayload appends the payload of the confirm request of spec
// section 11 to dst: sid || m5, where sid is the sid of the login's session
// (section 9; [Session.SID] on the card, [DeviceLogin.SID] on the device),
// which names the pending login whatever address m5 comes from.
func AppendConfirmPayload(dst []byte, sid [SIDSize]byte, m5 []byte) []byte {
	return append(append(dst, sid[:]...), m5...)
}

// SplitConfirmPayload splits a confirm request's payload into the sid and
// m5 (which aliases payload). A payload shorter than 9 bytes is malformed
// (spec section 11: answered with profile byte 0x00); m5 itself is
// checked by [DeviceLogin.Confirm].
func SplitConfirmPayload(payload []byte) ([SIDSize]byte, []byte, error) {
	var sid [SIDSize]byte
	if len(payload) < SIDSize+1 {
		return sid, nil, ReasonBadMessage
	}
	copy(sid[:], payload)
	return sid, payload[SIDSize:], nil
}

// Header reads the profile and type bytes of a message without parsing the
// rest. It fails only when b is shorter than two bytes.
func Header(b []byte) (Profile, MsgType, error) {
	if len(b) < 2 {
		return 0, 0, ReasonBadMessage
	}
	return Profile(b[0]), MsgType(b[1]), nil
}

// start checks the header of b against a wanted type and returns the
// profile and the field bytes. An unknown profile is unsupported_profile,
// anything else wrong is malformed.
func start(b []byte, t MsgType) (Profile, cryptobyte.String, error) {
	if len(b) < 1 {
		return 0, nil, ReasonBadMessage
	}
	p := Profile(b[0])
	if !p.Valid() {
		return p, nil, ReasonWrongProfile
	}
	if len(b) < 2 || MsgType(b[1]) != t {
		return p, nil, ReasonBadMessage
	}
	return p, cryptobyte.String(b[2:]), nil
}

func readID(s *cryptobyte.String, out *[]byte) bool {
	var id cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&id) || !ValidIdentity(id) {
		return false
	}
	*out = id
	return true
}

func readKV(s *cryptobyte.String, out *uint8) bool {
	return s.ReadUint8(out) && *out != 0
}

// ParseM1 decodes a login request. It accepts exactly the encoding Append
// produces: no trailing bytes, valid identity, non-zero key version.
func ParseM1(b []byte) (M1, error) {
	var m M1
	p, s, err := start(b, TypeM1)
	m.Profile = p
	if err != nil {
		return m, err
	}
	ok := readID(&s, &m.ID)
	if p == Hardened {
		ok = ok && readKV(&s, &m.KV) && s.CopyBytes(m.Nonce[:])
	}
	ok = ok && s.CopyBytes(m.E[:]) && s.CopyBytes(m.Theta[:]) && s.ReadUint64(&m.T1) && s.Empty()
	if !ok {
		return M1{Profile: p}, ReasonBadMessage
	}
	return m, nil
}

// ParseM2 decodes a verify request.
func ParseM2(b []byte) (M2, error) {
	var m M2
	p, s, err := start(b, TypeM2)
	m.Profile = p
	if err != nil {
		return m, err
	}
	ok := readID(&s, &m.ID)
	if p == Hardened {
		ok = ok && readKV(&s, &m.KV) && s.CopyBytes(m.Nonce[:])
	}
	ok = ok && s.CopyBytes(m.E[:]) && readID(&s, &m.DID)
	if p == Hardened {
		ok = ok && readKV(&s, &m.KVDev)
	}
	ok = ok && s.CopyBytes(m.I[:]) && s.ReadUint64(&m.T1) && s.ReadUint64(&m.T2) && s.Empty()
	if !ok {
		return M2{Profile: p}, ReasonBadMessage
	}
	return m, nil
}

// ParseM3 decodes a verify response.
func ParseM3(b []byte) (M3, error) {
	var m M3
	p, s, err := start(b, TypeM3)
	m.Profile = p
	if err != nil {
		return m, err
	}
	if !(s.CopyBytes(m.F[:]) && s.CopyBytes(m.Gamma[:]) && s.ReadUint64(&m.T3) && s.Empty()) {
		return M3{Profile: p}, ReasonBadMessage
	}
	return m, nil
}

// ParseM4 decodes a login response.
func ParseM4(b []byte) (M4, error) {
	var m M4
	p, s, err := start(b, TypeM4)
	m.Profile = p
	if err != nil {
		return m, err
	}
	ok := s.CopyBytes(m.X[:]) && s.CopyBytes(m.Gamma[:])
	if p == Hardened {
		ok = ok && s.ReadUint64(&m.T3)
	}
	ok = ok && s.ReadUint64(&m.T4)
	if p == Hardened {
		ok = ok && s.CopyBytes(m.Tau[:])
	}
	if !ok || !s.Empty() {
		return M4{Profile: p}, ReasonBadMessage
	}
	return m, nil
}

// ParseM5 decodes a key confirmation. Classic has no m5: a classic m5 is
// malformed.
func ParseM5(b []byte) (M5, error) {
	var m M5
	p, s, err := start(b, TypeM5)
	m.Profile = p
	if err != nil {
		return m, err
	}
	if p != Hardened || !s.CopyBytes(m.Tau[:]) || !s.Empty() {
		return M5{Profile: p}, ReasonBadMessage
	}
	return m, nil
}

// ParseError decodes an error message and returns the profile byte it
// carries (0x00 allowed) and its code. Unknown codes are malformed.
func ParseError(b []byte) (Profile, Code, error) {
	if len(b) != sizeError || MsgType(b[1]) != TypeError {
		return 0, 0, ReasonBadMessage
	}
	p, c := Profile(b[0]), Code(b[2])
	if (p != 0 && !p.Valid()) || !c.Valid() {
		return 0, 0, ReasonBadMessage
	}
	return p, c, nil
}

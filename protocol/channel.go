package protocol

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

type role uint8

const (
	roleUser role = iota
	roleDevice
)

// Channel key derivation inputs (spec section 9): raw ASCII info strings.
const (
	infoUserToDevice = "tagauth/channel user->device"
	infoDeviceToUser = "tagauth/channel device->user"
)

// recordHeader is profile || 0x10 || sid || seq.
const recordHeader = 2 + SIDSize + 8

// RecordOverhead is what sealing adds to a plaintext.
const RecordOverhead = recordHeader + chacha20poly1305.Overhead

// Session is an established channel between a card and a device, keyed by
// SK_ij. Each direction numbers its records from 1 and the receiver accepts
// only increasing numbers. A session is safe for concurrent use.
type Session struct {
	mu       sync.Mutex
	profile  Profile
	sid      [SIDSize]byte
	send     cipher.AEAD
	recv     cipher.AEAD
	sendSeq  uint64 // last sequence number sealed
	recvSeq  uint64 // last sequence number accepted
	cfg      Config
	created  time.Time
	lastUsed time.Time
	closed   bool
	fp       [Size]byte
	// nonce and hdr are scratch under mu: passed to the AEAD interface
	// they would escape, and allocate, if they lived on the stack.
	nonce [chacha20poly1305.NonceSize]byte
	hdr   [recordHeader]byte
}

// ChannelKeys are the derived per-direction keys and sid, exposed for test
// vectors and tools.
type ChannelKeys struct {
	UserToDevice [Size]byte
	DeviceToUser [Size]byte
	SID          [SIDSize]byte
}

// DeriveChannelKeys computes k_ud, k_du and sid from SK_ij and E_i.
func DeriveChannelKeys(sk *SessionKey, e *[Size]byte) (ChannelKeys, error) {
	var k ChannelKeys
	ud, err := hkdf.Key(sha256.New, sk[:], e[:], infoUserToDevice, Size)
	if err != nil {
		return k, err
	}
	du, err := hkdf.Key(sha256.New, sk[:], e[:], infoDeviceToUser, Size)
	if err != nil {
		return k, err
	}
	copy(k.UserToDevice[:], ud)
	copy(k.DeviceToUser[:], du)
	clear(ud)
	clear(du)
	k.SID = sessionID(e)
	return k, nil
}

// sessionID is sid = h(lbl("tagauth/sid") || E_i)[0:8] (spec section 9).
func sessionID(e *[Size]byte) [SIDSize]byte {
	var sid [SIDSize]byte
	s := h(lbl(labelSID), e[:])
	copy(sid[:], s[:SIDSize])
	return sid
}

func newSession(p Profile, r role, sk *SessionKey, e *[Size]byte, cfg Config) (*Session, error) {
	k, err := DeriveChannelKeys(sk, e)
	if err != nil {
		return nil, err
	}
	defer clear(k.UserToDevice[:])
	defer clear(k.DeviceToUser[:])
	ud, err := chacha20poly1305.New(k.UserToDevice[:])
	if err != nil {
		return nil, err
	}
	du, err := chacha20poly1305.New(k.DeviceToUser[:])
	if err != nil {
		return nil, err
	}
	now := cfg.Now()
	s := &Session{profile: p, sid: k.SID, cfg: cfg, created: now, lastUsed: now}
	s.fp = h(lbl("tagauth/fingerprint"), sk[:])
	if r == roleUser {
		s.send, s.recv = ud, du
	} else {
		s.send, s.recv = du, ud
	}
	return s, nil
}

// SID returns the session identifier that prefixes every record.
func (s *Session) SID() [SIDSize]byte { return s.sid }

// Profile returns the profile the session was agreed under.
func (s *Session) Profile() Profile { return s.profile }

// Fingerprint returns a value that both ends compute alike and that reveals
// nothing about the key: SHA-256 of a label and SK_ij. Show its prefix to
// people; never show the key.
func (s *Session) Fingerprint() [Size]byte { return s.fp }

// SessionID reads the sid of a record without opening it, so that a
// receiver of profile p can find the session a record belongs to. It makes
// the first checks of spec sections 7 and 9 in their order: empty ->
// ReasonBadMessage; a first byte other than p -> ReasonWrongProfile, whatever
// follows; shorter than RecordOverhead (34 bytes) or not a record ->
// ReasonBadMessage. A sid that names no session is the caller's to refuse,
// as ErrRejected, before [Session.Open] makes the remaining checks.
func SessionID(p Profile, record []byte) ([SIDSize]byte, error) {
	var sid [SIDSize]byte
	if err := CheckProfile(p, record); err != nil {
		return sid, err
	}
	if len(record) < RecordOverhead || MsgType(record[1]) != TypeRecord {
		return sid, ReasonBadMessage
	}
	copy(sid[:], record[2:2+SIDSize])
	return sid, nil
}

func (s *Session) expired(now time.Time) bool {
	return now.Sub(s.lastUsed) > s.cfg.idle() || now.Sub(s.created) > s.cfg.life()
}

// Seal encrypts plaintext as the next record of this side and appends it to
// dst.
func (s *Session) Seal(dst, plaintext []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	if s.closed || s.expired(now) {
		return nil, ReasonSessionExpired
	}
	if s.sendSeq == ^uint64(0) {
		return nil, ReasonSessionExpired
	}
	s.sendSeq++
	s.lastUsed = now
	s.hdr = s.header(s.sendSeq)
	binary.BigEndian.PutUint64(s.nonce[4:], s.sendSeq)
	dst = append(dst, s.hdr[:]...)
	return s.send.Seal(dst, s.nonce[:], plaintext, s.hdr[:]), nil
}

// Open authenticates and decrypts a record from the other side and appends
// the plaintext to dst. It checks in the order of spec sections 7 and 9:
// the first checks of [SessionID]; then a closed or expired session
// (ReasonSessionExpired) or another sid (ReasonBadRecord), both rejected; a tag
// that fails (ReasonBadRecord, also for a record shortened or extended by a
// byte); and last a seq not greater than the last accepted
// (ReasonRecordReplay, replayed), so that only a record that authenticates
// is ever called a replay. A record that fails leaves the session
// unchanged.
func (s *Session) Open(dst, record []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := SessionID(s.profile, record); err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	if s.closed || s.expired(now) {
		return nil, ReasonSessionExpired
	}
	if !equal(record[2:2+SIDSize], s.sid[:]) {
		return nil, ReasonBadRecord
	}
	seq := binary.BigEndian.Uint64(record[2+SIDSize : recordHeader])
	binary.BigEndian.PutUint64(s.nonce[4:], seq)
	out, err := s.recv.Open(dst, s.nonce[:], record[recordHeader:], record[:recordHeader])
	if err != nil {
		return nil, ReasonBadRecord
	}
	if seq <= s.recvSeq {
		clear(out[len(dst):])
		return nil, ReasonRecordReplay
	}
	s.recvSeq = seq
	s.lastUsed = now
	return out, nil
}

// Expired reports whether the session has passed its idle time or maximum
// life, by the injected clock.
func (s *Session) Expired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || s.expired(s.cfg.Now())
}

// Close ends the session; later Seal and Open fail. The AEAD key schedules
// are dropped for the collector, and the fingerprint cleared.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.send, s.recv = nil, nil
	clear(s.fp[:])
}

func (s *Session) header(seq uint64) [recordHeader]byte {
	var b [recordHeader]byte
	b[0] = byte(s.profile)
	b[1] = byte(TypeRecord)
	copy(b[2:], s.sid[:])
	binary.BigEndian.PutUint64(b[2+SIDSize:], seq)
	return b
}

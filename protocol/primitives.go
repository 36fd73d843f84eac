package protocol

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/text/unicode/norm"
)

// Size is the length of every hash output, tag, key, pad and secret of the
// protocol (spec section 2).
const Size = 32

// NonceSize is the length of the hardened login nonce n_i.
const NonceSize = 16

// SIDSize is the length of a session identifier on the channel.
const SIDSize = 8

// MaxIDLen is the longest identity, in bytes, that the wire format carries.
const MaxIDLen = 64

// maxMsg bounds the hash and HMAC inputs built on the stack: the longest is
// the classic E_i, 32 + 2*(1+64) bytes.
const maxMsg = 256

// h is SHA-256 over the concatenation of parts. Parts are copied into a stack
// buffer so that the hot path allocates nothing.
func h(parts ...[]byte) [Size]byte {
	var buf [maxMsg]byte
	b := buf[:0]
	for _, p := range parts {
		b = append(b, p...)
	}
	return sha256.Sum256(b)
}

// hmacBlock is SHA-256's block size, which HMAC pads keys to.
const hmacBlock = 64

// mac computes M(k, s, x) = HMAC-SHA256(k, lbl(s) || x) for keys of at most
// one block (all keys in the protocol are 32 or 64 bytes). It is the HMAC of
// RFC 2104 written over sha256.Sum256 with stack buffers, because crypto/hmac
// allocates two digests per call and the gateway computes seven of these per
// verify; TestMACMatchesCryptoHMAC holds it equal to crypto/hmac.
func mac(key []byte, label string, parts ...[]byte) [Size]byte {
	if len(key) > hmacBlock {
		panic("protocol: mac key longer than one block")
	}
	var inner [hmacBlock + maxMsg]byte
	var outer [hmacBlock + Size]byte
	copy(inner[:hmacBlock], ipad[:])
	copy(outer[:hmacBlock], opad[:])
	subtle.XORBytes(inner[:len(key)], key, ipad[:len(key)])
	subtle.XORBytes(outer[:len(key)], key, opad[:len(key)])
	b := inner[:hmacBlock]
	b = append(b, byte(len(label)))
	b = append(b, label...)
	for _, p := range parts {
		b = append(b, p...)
	}
	ih := sha256.Sum256(b)
	copy(outer[hmacBlock:], ih[:])
	return sha256.Sum256(outer[:])
}

// ipad and opad are HMAC's pad blocks: a zero-padded key XORed with them
// starts the inner and outer hash.
var ipad, opad = padBlock(0x36), padBlock(0x5c)

func padBlock(c byte) (b [hmacBlock]byte) {
	for i := range b {
		b[i] = c
	}
	return b
}

// xor32 returns a ^ b for two 32-byte strings, whichever secret types
// they are: the protocol's masks XOR one kind of secret with another.
func xor32[A, B ~[Size]byte](a *A, b *B) [Size]byte {
	var out [Size]byte
	subtle.XORBytes(out[:], (*a)[:], (*b)[:])
	return out
}

// equal compares secret-derived values in constant time.
func equal(a, b []byte) bool {
	return subtle.ConstantTimeCompare(a, b) == 1
}

// ts encodes a millisecond timestamp as 8 big-endian bytes.
func ts(t uint64) [8]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], t)
	return b
}

// id8 appends the encoding of an identity: one length byte, then its bytes.
// The caller has validated the identity.
func id8(dst, id []byte) []byte {
	dst = append(dst, byte(len(id)))
	return append(dst, id...)
}

// lbl encodes a domain-separation label.
func lbl(s string) []byte {
	return append([]byte{byte(len(s))}, s...)
}

// ValidIdentity reports whether id is a well-formed identity: 1 to 64 bytes
// of UTF-8 with no NUL. Identities are compared as bytes, never normalised.
func ValidIdentity(id []byte) bool {
	if len(id) < 1 || len(id) > MaxIDLen || !utf8.Valid(id) {
		return false
	}
	for _, c := range id {
		if c == 0 {
			return false
		}
	}
	return true
}

// normPassword returns the NFC form of a password, the bytes that both
// profiles feed to their password function.
func normPassword(pw string) []byte {
	return norm.NFC.Bytes([]byte(pw))
}

// KDFParams are the Argon2id parameters of a hardened card.
type KDFParams struct {
	Time      uint32 // passes, 1..64
	MemoryKiB uint32 // memory, 8*Threads..1048576 KiB
	Threads   uint8  // lanes, 1..16
}

// DefaultKDF is the hardened default: t=2, m=19456 KiB, p=1 (spec section 4).
var DefaultKDF = KDFParams{Time: 2, MemoryKiB: 19456, Threads: 1}

// Valid reports whether p lies inside the ranges the spec allows, so that a
// card file cannot make a client spend unbounded memory or time.
func (p KDFParams) Valid() bool {
	return p.Time >= 1 && p.Time <= 64 &&
		p.Threads >= 1 && p.Threads <= 16 &&
		p.MemoryKiB >= 8*uint32(p.Threads) && p.MemoryKiB <= 1048576
}

// passwordHash computes W_i for a profile: SHA-256(r || PW) for classic,
// Argon2id for hardened.
func passwordHash(p Profile, pw string, r *[Size]byte, kdf KDFParams) PasswordHash {
	b := normPassword(pw)
	defer clear(b)
	if p == Classic {
		buf := make([]byte, 0, Size+len(b))
		buf = append(append(buf, r[:]...), b...)
		defer clear(buf)
		return sha256.Sum256(buf)
	}
	var w [Size]byte
	k := argon2.IDKey(b, r[:], kdf.Time, kdf.MemoryKiB, kdf.Threads, Size)
	copy(w[:], k)
	clear(k)
	return w
}

// fuzzyVerifier is v_i = M(W_i, "tagauth/fuzzy", "")[0].
func fuzzyVerifier(w *PasswordHash) byte {
	v := mac(w[:], labelFuzzy)
	return v[0]
}

// Labels of the hardened profile (spec section 6).
const (
	labelUserTag       = "tagauth/user-tag"
	labelDeviceTag     = "tagauth/device-tag"
	labelFuzzy         = "tagauth/fuzzy"
	labelBeta          = "tagauth/beta"
	labelE             = "tagauth/E"
	labelI             = "tagauth/I"
	labelF             = "tagauth/F"
	labelGamma         = "tagauth/gamma"
	labelX             = "tagauth/X"
	labelSK            = "tagauth/SK"
	labelConfirmDevice = "tagauth/confirm-device"
	labelConfirmUser   = "tagauth/confirm-user"
	labelSID           = "tagauth/sid"
)

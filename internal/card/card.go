// Package card reads and writes the user's card file: the smart card SC_i
// of the protocol (identity, alpha_i, r_i and, hardened, the key version,
// the fuzzy verifier and the Argon2id parameters), sealed with the user's
// password so that a copied card file alone is useless without it.
//
// # Using it
//
// Enrolment gets a [protocol.Card] from the gateway, seals it and writes it:
//
//	data, err := card.Seal(c, password, rand.Reader)
//	err = card.SaveNew(path, data) // refuses to overwrite an existing card
//
// A login reads it back and opens it with the same password:
//
//	data, err := card.Load(path)
//	c, err := card.Open(data, password)
//	u, err := protocol.Unlock(c, password, cfg)
//
// Open fails in one of two ways, and callers should tell the user which:
// [ErrCorrupt] (the file is damaged, truncated or not a card file: restore
// it from a backup or enrol again) or [ErrWrongPassword] (the password is
// wrong, or someone altered the sealed part of the file: the two cannot be
// told apart, by design of an AEAD). errors.Is(err,
// protocol.ReasonWrongPassword) also holds for the second, so a client can
// handle a wrong password the same way whether the seal or the card's fuzzy
// verifier caught it.
//
// # Format (version 1)
//
//	header = "TAGAUTH-CARD\x00" (13) || format version 0x01 (1) || profile (1)
//	         || Argon2id t (1) || m in KiB (4, big-endian) || p (1)
//	         || salt (16) || nonce (12)                           49 bytes
//	key    = Argon2id(NFC(password), salt, t, m, p, 32 bytes)
//	body   = id8(ID_i) || alpha_i (32) || r_i (32) || kv_i (1) || v_i (1)
//	         || card t (1) || card m in KiB (4, big-endian) || card p (1)
//	file   = header || ChaCha20-Poly1305(key, nonce, body, aad = header)
//
// The header's Argon2id parameters are those the file was sealed with: the
// card's own for a hardened card (so opening the file costs what unlocking
// the card costs anyway), [protocol.DefaultKDF] for a classic card, whose
// own password function is a single SHA-256. Open checks them against
// [protocol.KDFParams.Valid] before it derives any key, so that a hostile
// file cannot make the client allocate gigabytes or run for minutes beyond
// what the spec allows a card. The body is parsed strictly (no trailing
// bytes) and then checked with [protocol.Card.Validate]. The salt and the
// nonce are fresh for every Seal, so sealing the same card twice gives two
// unrelated files.
//
// # What the seal buys, and what it costs
//
// Without the seal, a card file holds alpha_i and r_i in clear. Under
// classic that lets a thief test password guesses offline at the speed of
// SHA-256 once they also observe one login (spec section 8, item 3); under
// hardened, the fuzzy verifier v_i narrows the candidates to 1/256 with the
// card alone.
//
// The seal is itself a password verifier: whoever copies the file can test
// a guess by running one Argon2id and one AEAD open. That is a deliberate
// trade. Under hardened it is exactly the cost the protocol already
// concedes to a card thief who has observed one login (one Argon2id per
// guess, with the card's own parameters), and without such an observation
// the thief now learns nothing of alpha_i, r_i or the identity until the
// password falls. Under classic it raises the cost of guessing from the file
// from one SHA-256 to one Argon2id with the default parameters. Either way,
// a strong password is what protects a stolen card; the seal makes sure a
// copied file is never worth more than a stolen card and one observed
// login.
package card

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/text/unicode/norm"

	"github.com/tagauth/tagauth/protocol"
)

// ErrCorrupt is returned (wrapped with a detail) when a card file is
// damaged, truncated, not a card file at all, or of a format this version
// does not read. Nothing the password could change would make it open.
var ErrCorrupt = errors.New("card file is corrupt or truncated")

// ErrWrongPassword is returned when the sealed body does not authenticate
// under the key derived from the password: the password is wrong, or the
// file was altered after it was sealed. errors.Is(err,
// protocol.ReasonWrongPassword) holds for it.
var ErrWrongPassword error = wrongPassword{}

type wrongPassword struct{}

func (wrongPassword) Error() string {
	return "wrong password for the card file, or the card file was altered"
}

// Unwrap lets callers treat a failed seal like a failed fuzzy verifier.
func (wrongPassword) Unwrap() error { return protocol.ReasonWrongPassword }

// Layout of version 1. The body bounds follow from the 1..64-byte identity,
// so that any other length is refused before a key is derived.
const (
	magic         = "TAGAUTH-CARD\x00"
	formatVersion = 0x01
	saltSize      = 16
	nonceSize     = chacha20poly1305.NonceSize
	overhead      = chacha20poly1305.Overhead

	offVersion = len(magic)
	offProfile = offVersion + 1
	offT       = offProfile + 1
	offM       = offT + 1
	offP       = offM + 4
	offSalt    = offP + 1
	offNonce   = offSalt + saltSize
	headerSize = offNonce + nonceSize // 49

	// bodyFixed is the body without the identity's bytes: id length, alpha,
	// r, kv, fuzzy, t, m, p.
	bodyFixed = 1 + protocol.Size + protocol.Size + 1 + 1 + 1 + 4 + 1
	minBody   = bodyFixed + 1
	maxBody   = bodyFixed + protocol.MaxIDLen

	// maxFileSize is the largest card file: Load refuses to read more.
	maxFileSize = headerSize + maxBody + overhead
)

// Seal encrypts c under a key derived from password and returns the card
// file. It draws the salt and the nonce from rand (pass crypto/rand.Reader).
// The key is Argon2id with the card's own parameters for a hardened card
// and protocol.DefaultKDF for a classic one, so sealing takes as long as
// unlocking a hardened card.
func Seal(c protocol.Card, password string, rand io.Reader) ([]byte, error) {
	kdf := protocol.DefaultKDF
	if c.Profile == protocol.Hardened {
		kdf = c.KDF
	}
	return seal(c, password, rand, kdf)
}

// seal is Seal with the file's Argon2id parameters chosen by the caller:
// tests and the fuzz seeds use tiny ones for classic cards.
func seal(c protocol.Card, password string, rand io.Reader, kdf protocol.KDFParams) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("card: refusing to seal an invalid card: %w", err)
	}
	if c.KDF.Time > 0xff {
		// Only a classic card can get here (Validate bounds hardened ones):
		// its KDF is unused and should be zero.
		return nil, fmt.Errorf("card: refusing to seal a card whose Argon2id time %d does not fit the format", c.KDF.Time)
	}
	if !kdf.Valid() {
		return nil, fmt.Errorf("card: Argon2id parameters t=%d m=%d KiB p=%d are outside the allowed range", kdf.Time, kdf.MemoryKiB, kdf.Threads)
	}
	if rand == nil {
		return nil, errors.New("card: Seal needs a source of randomness")
	}

	var hdr [headerSize]byte
	copy(hdr[:], magic)
	hdr[offVersion] = formatVersion
	hdr[offProfile] = byte(c.Profile)
	hdr[offT] = byte(kdf.Time) // Valid bounds it to 64
	hdr[offM] = byte(kdf.MemoryKiB >> 24)
	hdr[offM+1] = byte(kdf.MemoryKiB >> 16)
	hdr[offM+2] = byte(kdf.MemoryKiB >> 8)
	hdr[offM+3] = byte(kdf.MemoryKiB)
	hdr[offP] = kdf.Threads
	if _, err := io.ReadFull(rand, hdr[offSalt:headerSize]); err != nil {
		return nil, fmt.Errorf("card: reading randomness: %w", err)
	}

	key := deriveKey(password, hdr[offSalt:offNonce], kdf)
	defer clear(key)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, fmt.Errorf("card: %w", err)
	}

	var bodyBuf [maxBody]byte
	defer clear(bodyBuf[:])
	body := appendBody(bodyBuf[:0], &c)

	out := make([]byte, 0, headerSize+len(body)+overhead)
	out = append(out, hdr[:]...)
	// The AAD is the header array, not out's prefix: AEAD forbids dst and
	// additionalData to overlap.
	return aead.Seal(out, hdr[offNonce:headerSize], body, hdr[:]), nil
}

// Open checks and decrypts a card file. It returns an error wrapping
// ErrCorrupt when the file cannot be a card file sealed by Seal, and
// ErrWrongPassword when the password does not open it. Hostile Argon2id
// parameters in the header are refused (ErrCorrupt) before any key is
// derived.
func Open(data []byte, password string) (protocol.Card, error) {
	return open(data, password, protocol.KDFParams.Valid)
}

// open is Open with the acceptable Argon2id parameters given by the
// caller. Open passes the spec's range; the fuzz target and the bit-flip
// test pass a narrower one so that a mutated header cannot make one
// iteration run a 1 GiB Argon2id. A refusal takes the same path either way.
func open(data []byte, password string, allowed func(protocol.KDFParams) bool) (protocol.Card, error) {
	if len(data) < headerSize {
		return protocol.Card{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorrupt, len(data), headerSize)
	}
	if string(data[:len(magic)]) != magic {
		return protocol.Card{}, fmt.Errorf("%w: not a tagauth card file", ErrCorrupt)
	}
	if v := data[offVersion]; v != formatVersion {
		return protocol.Card{}, fmt.Errorf("%w: card format version %d is not one this program reads (want %d)", ErrCorrupt, v, formatVersion)
	}
	p := protocol.Profile(data[offProfile])
	if !p.Valid() {
		return protocol.Card{}, fmt.Errorf("%w: unknown profile byte 0x%02x", ErrCorrupt, data[offProfile])
	}
	kdf := protocol.KDFParams{
		Time:      uint32(data[offT]),
		MemoryKiB: uint32(data[offM])<<24 | uint32(data[offM+1])<<16 | uint32(data[offM+2])<<8 | uint32(data[offM+3]),
		Threads:   data[offP],
	}
	if !allowed(kdf) {
		return protocol.Card{}, fmt.Errorf("%w: Argon2id parameters t=%d m=%d KiB p=%d are outside the allowed range (refused before deriving a key)", ErrCorrupt, kdf.Time, kdf.MemoryKiB, kdf.Threads)
	}
	ct := data[headerSize:]
	if len(ct) < minBody+overhead || len(ct) > maxBody+overhead {
		return protocol.Card{}, fmt.Errorf("%w: sealed body is %d bytes, want %d to %d", ErrCorrupt, len(ct), minBody+overhead, maxBody+overhead)
	}

	key := deriveKey(password, data[offSalt:offNonce], kdf)
	defer clear(key)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return protocol.Card{}, fmt.Errorf("card: %w", err)
	}
	var bodyBuf [maxBody]byte
	defer clear(bodyBuf[:])
	body, err := aead.Open(bodyBuf[:0], data[offNonce:headerSize], ct, data[:headerSize])
	if err != nil {
		return protocol.Card{}, ErrWrongPassword
	}

	c, ok := parseBody(body)
	if !ok {
		return protocol.Card{}, fmt.Errorf("%w: sealed card body is malformed", ErrCorrupt)
	}
	c.Profile = p
	if err := c.Validate(); err != nil {
		return protocol.Card{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return c, nil
}

// deriveKey is the file key: Argon2id over the NFC form of the password,
// the same normalisation the protocol applies, so that a password typed on
// another keyboard opens the file too.
func deriveKey(password string, salt []byte, kdf protocol.KDFParams) []byte {
	pw := norm.NFC.Bytes([]byte(password))
	defer clear(pw)
	return argon2.IDKey(pw, salt, kdf.Time, kdf.MemoryKiB, kdf.Threads, chacha20poly1305.KeySize)
}

// appendBody appends the card body of the format (without the profile,
// which the header carries).
func appendBody(dst []byte, c *protocol.Card) []byte {
	dst = append(dst, byte(len(c.ID)))
	dst = append(dst, c.ID...)
	dst = append(dst, c.Alpha[:]...)
	dst = append(dst, c.R[:]...)
	dst = append(dst, c.KV, c.Fuzzy, byte(c.KDF.Time))
	dst = append(dst, byte(c.KDF.MemoryKiB>>24), byte(c.KDF.MemoryKiB>>16), byte(c.KDF.MemoryKiB>>8), byte(c.KDF.MemoryKiB))
	return append(dst, c.KDF.Threads)
}

// parseBody reads a card body, refusing short input and trailing bytes.
func parseBody(body []byte) (protocol.Card, bool) {
	var c protocol.Card
	var id cryptobyte.String
	var t uint8
	s := cryptobyte.String(body)
	if !s.ReadUint8LengthPrefixed(&id) ||
		!s.CopyBytes(c.Alpha[:]) ||
		!s.CopyBytes(c.R[:]) ||
		!s.ReadUint8(&c.KV) ||
		!s.ReadUint8(&c.Fuzzy) ||
		!s.ReadUint8(&t) ||
		!s.ReadUint32(&c.KDF.MemoryKiB) ||
		!s.ReadUint8(&c.KDF.Threads) ||
		!s.Empty() {
		return protocol.Card{}, false
	}
	c.ID = string(id)
	c.KDF.Time = uint32(t)
	return c, true
}

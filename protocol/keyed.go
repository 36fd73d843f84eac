package protocol

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding"
	"hash"
	"sync"
)

// The gateway's verify computes seven HMACs, four of them under keys that
// repeat across logins: Tag_i (beta, gamma) and Tag_j (I, F), themselves
// HMACs under K_GTW. HMAC's first step for a key is to hash one block of
// key^ipad and one of key^opad; keyState keeps those two SHA-256 states so
// that a repeated key costs two compressions per HMAC instead of four. The
// states are the digest's own marshalled form (encoding.BinaryAppender),
// restored with UnmarshalBinary, so the arithmetic is crypto/sha256's.

// stateSize is the length of a marshalled SHA-256 state.
const stateSize = 108

type keyState struct {
	inner, outer [stateSize]byte
}

// hasher is per-goroutine scratch: one digest, reused, and a message
// buffer. Digests are interfaces, so the buffers they read live here, on
// the heap once, rather than escaping from each call's stack.
type hasher struct {
	d   hash.Hash
	u   encoding.BinaryUnmarshaler
	a   encoding.BinaryAppender
	msg [hmacBlock + maxMsg]byte
	sum [Size]byte
}

var hashers = sync.Pool{New: func() any {
	d := sha256.New()
	return &hasher{d: d, u: d.(encoding.BinaryUnmarshaler), a: d.(encoding.BinaryAppender)}
}}

func getHasher() *hasher  { return hashers.Get().(*hasher) }
func putHasher(x *hasher) { hashers.Put(x) }

// setKey fills ks with the HMAC states of key (at most one block).
func (x *hasher) setKey(ks *keyState, key []byte) {
	pad := x.msg[:hmacBlock]
	for i, p := range [2]*[hmacBlock]byte{&ipad, &opad} {
		copy(pad, p[:])
		subtle.XORBytes(pad[:len(key)], key, p[:len(key)])
		x.d.Reset()
		x.d.Write(pad)
		dst := &ks.inner
		if i == 1 {
			dst = &ks.outer
		}
		st, err := x.a.AppendBinary(dst[:0])
		if err != nil || len(st) != stateSize {
			panic("protocol: unexpected SHA-256 state size")
		}
	}
	clear(pad)
}

// mac is M(k, s, x) for a key whose states are in ks.
func (x *hasher) mac(ks *keyState, label string, parts ...[]byte) [Size]byte {
	b := x.msg[:0]
	b = append(b, byte(len(label)))
	b = append(b, label...)
	for _, p := range parts {
		b = append(b, p...)
	}
	if err := x.u.UnmarshalBinary(ks.inner[:]); err != nil {
		panic("protocol: restoring SHA-256 state: " + err.Error())
	}
	x.d.Write(b)
	ih := x.d.Sum(x.sum[:0])
	if err := x.u.UnmarshalBinary(ks.outer[:]); err != nil {
		panic("protocol: restoring SHA-256 state: " + err.Error())
	}
	x.d.Write(ih)
	var out [Size]byte
	copy(out[:], x.d.Sum(x.sum[:0]))
	return out
}

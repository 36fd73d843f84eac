// Package echo is tagauth's one implementation of stateless return-
// routability challenges, the scheme of RFC 9175's Echo option: a server
// that has not heard from a requester lately answers with a value that
// only a requester receiving where it claims to be can send back. The
// CoAP device agent keys values by the client's IP address
// (internal/device); the MQTT binding keys them by the requester's name,
// its reply topic's client identifier (internal/mqttbind).
//
// A value is one byte of a minute counter and a truncated HMAC-SHA256,
// under a secret drawn at start, of a label, the full counter and the
// key. It is valid during its minute and the next, so a requester has at
// least a minute to answer; the MAC covers the full counter, so a value
// does not come back to life when its byte wraps. Keys that answered are
// kept in a bounded Table, so that a returning requester skips the extra
// round trip.
package echo

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

const (
	label  = "tagauth/echo-v1"
	bucket = time.Minute
	macLen = 8 // bytes of HMAC: 2^-64 odds for a blind guess
	// Size is the length of a value.
	Size = 1 + macLen
	// MaxKey bounds a key: an IPv6 address is 16 bytes, an MQTT client
	// identifier at most 23 (MQTT 5 section 3.1.3.1) but brokers allow
	// more.
	MaxKey = 256
)

// Minter mints and checks values. It is safe for concurrent use.
type Minter struct {
	secret [32]byte
}

// NewMinter returns a Minter with a fresh secret from the system's
// generator (never a scripted one: the secret must be unpredictable even
// when tests script the protocol's randomness).
func NewMinter() (*Minter, error) {
	m := new(Minter)
	if _, err := rand.Read(m.secret[:]); err != nil {
		return nil, fmt.Errorf("echo: drawing the secret: %w", err)
	}
	return m, nil
}

func (m *Minter) mac(dst []byte, minute uint64, key []byte) []byte {
	h := hmac.New(sha256.New, m.secret[:])
	var b [len(label) + 8]byte
	n := copy(b[:], label)
	binary.BigEndian.PutUint64(b[n:], minute)
	h.Write(b[:])
	h.Write(key)
	var sum [sha256.Size]byte
	return append(dst, h.Sum(sum[:0])[:macLen]...)
}

func minuteOf(now time.Time) uint64 { return uint64(now.Unix()) / uint64(bucket/time.Second) }

// Mint appends a fresh value for key to dst.
func (m *Minter) Mint(dst, key []byte, now time.Time) []byte {
	mi := minuteOf(now)
	return m.mac(append(dst, byte(mi)), mi, key)
}

// Valid reports whether v is a value minted for key during this minute or
// the previous one.
func (m *Minter) Valid(v, key []byte, now time.Time) bool {
	if len(v) != Size {
		return false
	}
	cur := minuteOf(now)
	var buf [Size]byte
	for _, mi := range [2]uint64{cur, cur - 1} {
		if byte(mi) != v[0] {
			continue
		}
		if hmac.Equal(m.mac(append(buf[:0], byte(mi)), mi, key), v) {
			return true
		}
	}
	return false
}

// Table remembers the keys that answered a challenge, each for a time to
// live, at most its size: the oldest verification is forgotten first. A
// forgotten key costs its requester one more round trip, nothing else. It
// is safe for concurrent use.
type Table[K comparable] struct {
	mu   sync.Mutex
	ttl  time.Duration
	at   map[K]time.Time
	ring []K // insertion order
	head int
}

// NewTable returns a table of at most size keys (at least one), each
// remembered for ttl.
func NewTable[K comparable](size int, ttl time.Duration) *Table[K] {
	size = max(size, 1)
	return &Table[K]{ttl: ttl, at: make(map[K]time.Time, size), ring: make([]K, 0, size)}
}

// Has reports whether k answered less than ttl before now.
func (t *Table[K]) Has(k K, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.at[k]
	return ok && now.Sub(at) < t.ttl
}

// Add records that k answered at now.
func (t *Table[K]) Add(k K, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.at[k]; ok {
		// Renewed in its slot: the ring still bounds the table.
		t.at[k] = now
		return
	}
	if len(t.ring) < cap(t.ring) {
		t.ring = append(t.ring, k)
	} else {
		delete(t.at, t.ring[t.head])
		t.ring[t.head] = k
		t.head = (t.head + 1) % len(t.ring)
	}
	t.at[k] = now
}

// Len returns the number of keys remembered, expired ones included.
func (t *Table[K]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.at)
}

package mqttbind

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// Echo challenges (binding extension, docs/ARCHITECTURE.md): the same
// stateless scheme as RFC 9175's Echo option, keyed by the requester's
// name (its reply topic's client identifier) instead of an IP address.
// A value is a timestamp and a MAC over (name, timestamp) under a key
// that lives in memory only, so a value minted for one name is worthless
// for another and expires with EchoValid.
const (
	// EchoValid is how long a challenge may be answered.
	EchoValid = 30 * time.Second
	// VerifiedFor is how long a verified name needs no new challenge.
	VerifiedFor = 10 * time.Minute
	// DefaultVerified bounds the table of verified names.
	DefaultVerified = 100000

	echoTime = 8
	echoMAC  = 16
	echoSize = echoTime + echoMAC
)

// Echoer mints and checks Echo values and remembers the names that
// answered one. It is safe for concurrent use.
type Echoer struct {
	key [32]byte
	max int

	mu       sync.Mutex
	verified map[string]time.Time // name -> verified until
}

// NewEchoer returns an Echoer with a fresh random key that remembers at
// most maxVerified names (DefaultVerified when <= 0).
func NewEchoer(maxVerified int) (*Echoer, error) {
	if maxVerified <= 0 {
		maxVerified = DefaultVerified
	}
	e := &Echoer{max: maxVerified, verified: make(map[string]time.Time)}
	if _, err := rand.Read(e.key[:]); err != nil {
		return nil, fmt.Errorf("echo key: %w", err)
	}
	return e, nil
}

func (e *Echoer) mac(dst []byte, name string, ts []byte) []byte {
	m := hmac.New(sha256.New, e.key[:])
	m.Write(ts)
	m.Write([]byte(name))
	return m.Sum(dst)[:len(dst)+echoMAC]
}

// Mint returns a challenge for name at now, as the hex text a user
// property carries.
func (e *Echoer) Mint(name string, now time.Time) string {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, echoSize+sha256.Size), uint64(now.UnixMilli()))
	v = e.mac(v, name, v[:echoTime])
	return hex.EncodeToString(v)
}

// Valid reports whether v is a challenge minted for name less than
// EchoValid before now (and not after it).
func (e *Echoer) Valid(v, name string, now time.Time) bool {
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != echoSize {
		return false
	}
	ts := time.UnixMilli(int64(binary.BigEndian.Uint64(b[:echoTime])))
	if ts.After(now) || now.Sub(ts) > EchoValid {
		return false
	}
	return hmac.Equal(e.mac(nil, name, b[:echoTime]), b[echoTime:])
}

// Verified reports whether name answered a challenge within VerifiedFor.
func (e *Echoer) Verified(name string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	until, ok := e.verified[name]
	return ok && now.Before(until)
}

// Remember records that name answered a challenge at now. When the table
// is full and nothing in it has expired, name is not remembered: it is
// challenged again next time, which costs a round trip and nothing else.
func (e *Echoer) Remember(name string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.verified) >= e.max {
		for k, until := range e.verified {
			if !now.Before(until) {
				delete(e.verified, k)
			}
		}
		if len(e.verified) >= e.max {
			return
		}
	}
	e.verified[name] = now.Add(VerifiedFor)
}

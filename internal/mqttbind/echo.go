package mqttbind

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/tagauth/tagauth/internal/echo"
)

// Echo challenges (binding extension, docs/ARCHITECTURE.md): the scheme
// of RFC 9175's Echo option (package echo, which the CoAP device agent
// uses too), keyed by the requester's name (its reply topic's client
// identifier) instead of an IP address, so a value minted for one name is
// worthless for another. A value rides in a user property as hex text.
const (
	// VerifiedFor is how long a verified name needs no new challenge.
	VerifiedFor = 10 * time.Minute
	// DefaultVerified bounds the table of verified names.
	DefaultVerified = 100000
)

// Echoer mints and checks Echo values and remembers the names that
// answered one. A value may be answered during the minute it was minted
// in and the next. It is safe for concurrent use.
type Echoer struct {
	m        *echo.Minter
	verified *echo.Table[string]
}

// NewEchoer returns an Echoer with a fresh random key that remembers at
// most maxVerified names (DefaultVerified when <= 0); past that the
// oldest verification is forgotten, which costs its requester one more
// round trip.
func NewEchoer(maxVerified int) (*Echoer, error) {
	if maxVerified <= 0 {
		maxVerified = DefaultVerified
	}
	m, err := echo.NewMinter()
	if err != nil {
		return nil, fmt.Errorf("mqttbind: %w", err)
	}
	return &Echoer{m: m, verified: echo.NewTable[string](maxVerified, VerifiedFor)}, nil
}

// Mint returns a challenge for name at now, as the hex text a user
// property carries.
func (e *Echoer) Mint(name string, now time.Time) string {
	var b [echo.Size]byte
	return hex.EncodeToString(e.m.Mint(b[:0], []byte(name), now))
}

// Valid reports whether v is a challenge minted for name during this
// minute or the previous one.
func (e *Echoer) Valid(v, name string, now time.Time) bool {
	if len(v) != 2*echo.Size {
		return false
	}
	var b [echo.Size]byte
	if _, err := hex.Decode(b[:], []byte(v)); err != nil {
		return false
	}
	return e.m.Valid(b[:], []byte(name), now)
}

// Verified reports whether name answered a challenge within VerifiedFor.
func (e *Echoer) Verified(name string, now time.Time) bool { return e.verified.Has(name, now) }

// Remember records that name answered a challenge at now.
func (e *Echoer) Remember(name string, now time.Time) { e.verified.Add(name, now) }

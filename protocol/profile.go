package protocol

import (
	"fmt"
	"io"
	"time"
)

// SpecVersion is the version of the specification (PROTOCOL.md) that this
// package implements, for programs to show. Version 1.1 changes no formula
// and no message of version 1: it fixes the order of the first checks, adds
// rejection vectors and makes the CoAP confirm request name its login.
const SpecVersion = "1.1"

// Profile selects the protocol variant. It is the first byte of every message.
type Profile uint8

const (
	// Classic is the patent's protocol exactly (EP 4 412 152 A1, FIG. 4 and
	// FIG. 5). It has known weaknesses (spec section 8) and is never the
	// default.
	Classic Profile = 0x01
	// Hardened adds session binding, domain separation, a nonce, key
	// confirmation and Argon2id. It is the default.
	Hardened Profile = 0x02
)

// String returns "classic", "hardened" or a hex form for other bytes.
func (p Profile) String() string {
	switch p {
	case Classic:
		return "classic"
	case Hardened:
		return "hardened"
	}
	return fmt.Sprintf("profile(0x%02x)", uint8(p))
}

// Valid reports whether p is a profile this package implements.
func (p Profile) Valid() bool { return p == Classic || p == Hardened }

// ParseProfile maps "classic" or "hardened" to a Profile.
func ParseProfile(s string) (Profile, error) {
	switch s {
	case "classic":
		return Classic, nil
	case "hardened", "":
		return Hardened, nil
	}
	return 0, fmt.Errorf("tagauth: unknown profile %q (want classic or hardened)", s)
}

// Defaults of spec sections 7 and 9.
const (
	DefaultWindow      = 10 * time.Second
	DefaultSessionIdle = 5 * time.Minute
	DefaultSessionLife = time.Hour
)

// Config is what every role needs from its environment. The package reads no
// clock and no randomness of its own: tests inject fixed ones, and programs
// pass time.Now and crypto/rand.Reader.
type Config struct {
	// Now returns the current time. Required.
	Now func() time.Time
	// Rand is the source of K_i, K_j and n_i. Required for the card and the
	// device; the gateway draws nothing. Read fully with io.ReadFull.
	Rand io.Reader
	// Window is dT, the freshness window. Zero means DefaultWindow.
	Window time.Duration
	// SessionIdle and SessionLife bound an established channel. Zero means
	// the defaults.
	SessionIdle time.Duration
	SessionLife time.Duration
}

func (c *Config) check(needRand bool) error {
	if c.Now == nil || (needRand && c.Rand == nil) {
		return ErrConfig
	}
	return nil
}

func (c *Config) window() uint64 {
	if c.Window <= 0 {
		return uint64(DefaultWindow / time.Millisecond)
	}
	return uint64(c.Window / time.Millisecond)
}

func (c *Config) idle() time.Duration {
	if c.SessionIdle <= 0 {
		return DefaultSessionIdle
	}
	return c.SessionIdle
}

func (c *Config) life() time.Duration {
	if c.SessionLife <= 0 {
		return DefaultSessionLife
	}
	return c.SessionLife
}

// nowMs is the clock as milliseconds since the Unix epoch. A clock before
// 1970 reads as 0, which no timestamp will be fresh against.
func (c *Config) nowMs() uint64 {
	ms := c.Now().UnixMilli()
	if ms < 0 {
		return 0
	}
	return uint64(ms)
}

// fresh reports |t - now| <= window without overflow.
func fresh(t, now, window uint64) bool {
	if t >= now {
		return t-now <= window
	}
	return now-t <= window
}

func (c *Config) random(dst []byte) error {
	if _, err := io.ReadFull(c.Rand, dst); err != nil {
		return fmt.Errorf("tagauth: reading randomness: %w", err)
	}
	return nil
}

package protocol

import "context"

// ReplayKeySize is the size of a replay-cache key: a domain byte, id8(ID_i)
// zero-padded to 65 bytes, and a 32-byte login discriminator.
const ReplayKeySize = 1 + 1 + MaxIDLen + Size

// ReplayKey identifies one login to a replay cache. Keys of different
// parties and profiles never collide: the first byte says whose key it is.
type ReplayKey [ReplayKeySize]byte

// Replay-key domains.
const (
	replayGatewayClassic  = 0x01 // (ID_i, T1)
	replayGatewayHardened = 0x02 // (ID_i, n_i)
	replayDevice          = 0x03 // (ID_i, E_i)
)

func replayKey(domain byte, id, disc []byte) ReplayKey {
	var k ReplayKey
	k[0] = domain
	id8(k[1:1], id)
	copy(k[1+1+MaxIDLen:], disc)
	return k
}

// ReplayCache remembers logins already seen. The gateway and the device
// both use one. Implementations must make Insert atomic across every
// process that shares the cache: two concurrent Inserts of one key must not
// both report fresh (a check-then-insert cache lets a replay through).
type ReplayCache interface {
	// Insert records key until the time expires (ms since the Unix epoch)
	// unless it is already recorded and not expired at now. It reports
	// whether the key was fresh. When the cache cannot record the key
	// (full, or its backing service is down) it returns an error; the caller
	// then refuses the login rather than accept it unchecked.
	Insert(ctx context.Context, key ReplayKey, expires, now uint64) (fresh bool, err error)
}

// IdentityState is what the registry knows of an identity.
type IdentityState uint8

// Identity states.
const (
	Unknown IdentityState = iota
	Active
	Revoked
)

// Standing is the registry's answer about one (user, device) pair.
type Standing struct {
	User    IdentityState
	Device  IdentityState
	Allowed bool // the policy lets the user log in to the device
}

// Registry is what the gateway must know to verify a login. Implementations
// serve it from memory on the hot path; an error makes the verify fail
// closed with busy.
type Registry interface {
	// Standing reports the state of user and device and whether policy
	// allows the pair. The slices alias the request: do not keep them.
	Standing(ctx context.Context, user, device []byte) (Standing, error)
	// MasterKey returns K_GTW of version kv, or false if the version is
	// unknown or retired.
	MasterKey(kv uint8) (*GatewayKey, bool)
}

// ClassicKeyVersion is the master-key version that classic cards and
// credentials use: the classic wire carries no key version, so a classic
// deployment has exactly one key, stored as version 1.
const ClassicKeyVersion = 1

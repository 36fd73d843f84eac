package protocol

// Each long-lived secret of the protocol has its own type, as tailscale's
// types/key does, so that a swapped argument (a device tag where the master
// key belongs, the session key where E_i belongs) does not compile. They are
// all 32-byte strings underneath; converting one into another takes an
// explicit conversion, which only the code that loads a secret from a file
// or a database should need.

// GatewayKey is K_GTW, the gateway's master secret for one key version.
// Every user and device tag is derived from it.
type GatewayKey [Size]byte

// UserTag is Tag_i, the user's long-term secret: what the card's Alpha
// hides under the password hash.
type UserTag [Size]byte

// DeviceTag is Tag_j, the device's long-term secret, shared only with the
// gateway.
type DeviceTag [Size]byte

// PasswordHash is W_i, the hash of the password and the card's salt R_i.
type PasswordHash [Size]byte

// SessionKey is SK, the key a login agrees on; the channel keys are derived
// from it.
type SessionKey [Size]byte

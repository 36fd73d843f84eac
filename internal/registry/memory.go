// Package registry holds the gateway's in-memory registry: which users and
// devices exist, which are revoked, which master keys are live and which
// users may log in to which devices. It answers protocol.Registry from
// memory, so the verify hot path takes one read lock and allocates nothing.
package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tagauth/tagauth/protocol"
)

// Errors of registry updates.
var (
	ErrExists    = errors.New("registry: identity already registered")
	ErrNamespace = errors.New("registry: classic profile: user and device identities share one namespace")
	ErrNotFound  = errors.New("registry: no such identity")
)

// Memory is a protocol.Registry held in memory. The zero value is not
// ready: use NewMemory. It is safe for concurrent use.
type Memory struct {
	mu      sync.RWMutex
	profile protocol.Profile
	users   map[string]protocol.IdentityState
	devices map[string]protocol.IdentityState
	keys    map[uint8]*protocol.GatewayKey
	allow   map[[2]string]bool
	// groups maps a device to its policy group (absent: no group) and
	// grants holds (user, group) pairs, AllGroups included: see groups.go.
	groups map[string]string
	grants map[[2]string]bool
	// allowAll lets every active user log in to every active device.
	allowAll bool
}

// NewMemory returns an empty registry for a profile. With allowAll, policy
// admits every pair; otherwise only pairs added with Allow.
func NewMemory(p protocol.Profile, allowAll bool) *Memory {
	return &Memory{
		profile:  p,
		users:    map[string]protocol.IdentityState{},
		devices:  map[string]protocol.IdentityState{},
		keys:     map[uint8]*protocol.GatewayKey{},
		allow:    map[[2]string]bool{},
		groups:   map[string]string{},
		grants:   map[[2]string]bool{},
		allowAll: allowAll,
	}
}

// AddKey installs master key mk.
func (r *Memory) AddKey(mk protocol.MasterKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := mk.Key
	r.keys[mk.Version] = &k
}

// RetireKey removes a key version: logins under it are refused.
func (r *Memory) RetireKey(kv uint8) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.keys, kv)
}

// AddUser registers a user identity. Under classic a user may not take a
// device's identity (their tags would be equal).
func (r *Memory) AddUser(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.users[id]; ok {
		return fmt.Errorf("%w: user", ErrExists)
	}
	if _, ok := r.devices[id]; ok && r.profile == protocol.Classic {
		return ErrNamespace
	}
	r.users[id] = protocol.Active
	return nil
}

// AddDevice registers a device identity, under the same namespace rule,
// in no group (only AllGroups grants reach it).
func (r *Memory) AddDevice(id string) error { return r.AddDeviceInGroup(id, "") }

// RevokeUser marks a user revoked; it takes effect on the next verify.
func (r *Memory) RevokeUser(id string) error { return r.revoke(false, id) }

// RevokeDevice marks a device revoked.
func (r *Memory) RevokeDevice(id string) error { return r.revoke(true, id) }

func (r *Memory) revoke(device bool, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The map is picked under the lock: Load replaces both maps.
	m := r.users
	if device {
		m = r.devices
	}
	if _, ok := m[id]; !ok {
		return ErrNotFound
	}
	m[id] = protocol.Revoked
	return nil
}

// Allow lets user log in to device.
func (r *Memory) Allow(user, device string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.allow[[2]string{user, device}] = true
}

// Standing implements protocol.Registry.
func (r *Memory) Standing(_ context.Context, user, device []byte) (protocol.Standing, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return protocol.Standing{
		User:    r.users[string(user)],
		Device:  r.devices[string(device)],
		Allowed: r.allowAll || r.allow[[2]string{string(user), string(device)}] || r.granted(user, device),
	}, nil
}

// MasterKey implements protocol.Registry.
func (r *Memory) MasterKey(kv uint8) (*protocol.GatewayKey, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.keys[kv]
	return k, ok
}

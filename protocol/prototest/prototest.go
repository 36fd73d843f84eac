// Package prototest provides in-memory implementations of the stores the
// protocol roles need, protocol.Registry and protocol.ReplayCache, for tests
// and examples, as net/http/httptest does for servers. They keep the
// protocol module free of the daemons' dependencies: the gateway's real
// registry and replay cache live in the tagauth module.
//
// Both are safe for concurrent use, and neither is bounded: they are not
// meant for production.
package prototest

import (
	"context"
	"errors"
	"sync"

	"github.com/tagauth/tagauth/protocol"
)

// ErrNamespace is returned when a classic identity would be both a user and
// a device: under classic their tags would be equal (spec section 8).
var ErrNamespace = errors.New("prototest: identity already used by the other role")

// ErrNotFound is returned when revoking an identity that was never added.
var ErrNotFound = errors.New("prototest: no such identity")

// Registry is a protocol.Registry in memory. Use NewRegistry.
type Registry struct {
	mu       sync.RWMutex
	profile  protocol.Profile
	allowAll bool
	users    map[string]protocol.IdentityState
	devices  map[string]protocol.IdentityState
	keys     map[uint8]*protocol.GatewayKey
	allow    map[[2]string]bool
}

// NewRegistry returns an empty registry for a profile. With allowAll,
// policy admits every pair; otherwise only pairs added with Allow.
func NewRegistry(p protocol.Profile, allowAll bool) *Registry {
	return &Registry{
		profile:  p,
		allowAll: allowAll,
		users:    map[string]protocol.IdentityState{},
		devices:  map[string]protocol.IdentityState{},
		keys:     map[uint8]*protocol.GatewayKey{},
		allow:    map[[2]string]bool{},
	}
}

// AddKey installs a master key version. A new object is stored each time,
// so a replaced version is seen as another key by the gateway's tag cache.
func (r *Registry) AddKey(mk protocol.MasterKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := mk.Key
	r.keys[mk.Version] = &k
}

// RetireKey removes a key version: logins under it are refused.
func (r *Registry) RetireKey(kv uint8) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.keys, kv)
}

// AddUser registers a user identity.
func (r *Registry) AddUser(id string) error { return r.add(r.users, r.devices, id) }

// AddDevice registers a device identity.
func (r *Registry) AddDevice(id string) error { return r.add(r.devices, r.users, id) }

func (r *Registry) add(m, other map[string]protocol.IdentityState, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := other[id]; ok && r.profile == protocol.Classic {
		return ErrNamespace
	}
	m[id] = protocol.Active
	return nil
}

// RevokeUser marks a user revoked.
func (r *Registry) RevokeUser(id string) error { return r.revoke(r.users, id) }

// RevokeDevice marks a device revoked.
func (r *Registry) RevokeDevice(id string) error { return r.revoke(r.devices, id) }

func (r *Registry) revoke(m map[string]protocol.IdentityState, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := m[id]; !ok {
		return ErrNotFound
	}
	m[id] = protocol.Revoked
	return nil
}

// Allow lets user log in to device.
func (r *Registry) Allow(user, device string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.allow[[2]string{user, device}] = true
}

// Standing implements protocol.Registry.
func (r *Registry) Standing(_ context.Context, user, device []byte) (protocol.Standing, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return protocol.Standing{
		User:    r.users[string(user)],
		Device:  r.devices[string(device)],
		Allowed: r.allowAll || r.allow[[2]string{string(user), string(device)}],
	}, nil
}

// MasterKey implements protocol.Registry.
func (r *Registry) MasterKey(kv uint8) (*protocol.GatewayKey, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.keys[kv]
	return k, ok
}

// ReplayCache is a protocol.ReplayCache in memory: a key is refused until
// the time it was inserted with has passed. The zero value is ready to use.
type ReplayCache struct {
	mu sync.Mutex
	m  map[protocol.ReplayKey]uint64
}

// Insert implements protocol.ReplayCache.
func (c *ReplayCache) Insert(_ context.Context, key protocol.ReplayKey, expires, now uint64) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.m[key]; ok && now <= exp {
		return false, nil
	}
	if c.m == nil {
		c.m = map[protocol.ReplayKey]uint64{}
	}
	c.m[key] = expires
	return true, nil
}

package registry

import (
	"fmt"

	"github.com/tagauth/tagauth/protocol"
)

// AllGroups as a grant's group lets the user log in to every device,
// whatever its group (store.AllGroups has the same value).
const AllGroups = "*"

// Device groups and grants are the policy that a gateway persists: a device
// belongs to at most one group, and a grant (user, group) lets the user log
// in to every device of the group. Allow's (user, device) pairs and
// NewMemory's allowAll still apply; Standing allows a pair when any of the
// three does.

// AddDeviceInGroup registers a device identity in a policy group ("" for
// none), under the namespace rule of AddDevice.
func (r *Memory) AddDeviceInGroup(id, group string) error {
	if group == AllGroups {
		return fmt.Errorf("registry: group %q is reserved for grants", AllGroups)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.devices[id]; ok {
		return fmt.Errorf("%w: device", ErrExists)
	}
	if _, ok := r.users[id]; ok && r.profile == protocol.Classic {
		return ErrNamespace
	}
	r.devices[id] = protocol.Active
	if group != "" {
		r.groups[id] = group
	}
	return nil
}

// Grant lets user log in to every device of group (AllGroups: every
// device). Neither needs to exist yet. Granting twice changes nothing.
func (r *Memory) Grant(user, group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.grants[[2]string{user, group}] = true
}

// Ungrant removes a grant; it takes effect on the next verify. Removing a
// grant that does not exist changes nothing.
func (r *Memory) Ungrant(user, group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.grants, [2]string{user, group})
}

// UserState reports what the registry knows of a user id.
func (r *Memory) UserState(id string) protocol.IdentityState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.users[id]
}

// DeviceState reports what the registry knows of a device id.
func (r *Memory) DeviceState(id string) protocol.IdentityState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.devices[id]
}

// Entry is one identity for Load.
type Entry struct {
	ID      string
	Revoked bool
	Group   string // devices only: the policy group, "" for none
}

// GrantEntry is one grant for Load.
type GrantEntry struct {
	User  string
	Group string
}

// Load replaces every user, device, group and grant with the given ones,
// atomically: a concurrent Standing sees either the old content or the new,
// never a mix. It is how a gateway fills the registry from its store at
// start (and, with a shared store, after a change made elsewhere). Master
// keys and Allow pairs do not come from the store and are kept.
//
// Load refuses, and changes nothing, on a duplicate id, an invalid group
// or, under classic, a user id equal to a device id: the store keeps the
// same rules, so any of these means the data is damaged.
func (r *Memory) Load(users, devices []Entry, grants []GrantEntry) error {
	nu := make(map[string]protocol.IdentityState, len(users))
	nd := make(map[string]protocol.IdentityState, len(devices))
	ng := make(map[string]string)
	gr := make(map[[2]string]bool, len(grants))
	for _, u := range users {
		if _, ok := nu[u.ID]; ok {
			return fmt.Errorf("%w: user %q twice", ErrExists, u.ID)
		}
		nu[u.ID] = state(u.Revoked)
	}
	for _, d := range devices {
		if _, ok := nd[d.ID]; ok {
			return fmt.Errorf("%w: device %q twice", ErrExists, d.ID)
		}
		if _, ok := nu[d.ID]; ok && r.profile == protocol.Classic {
			return fmt.Errorf("%w: %q", ErrNamespace, d.ID)
		}
		if d.Group == AllGroups {
			return fmt.Errorf("registry: device %q in reserved group %q", d.ID, AllGroups)
		}
		nd[d.ID] = state(d.Revoked)
		if d.Group != "" {
			ng[d.ID] = d.Group
		}
	}
	for _, g := range grants {
		gr[[2]string{g.User, g.Group}] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.users, r.devices, r.groups, r.grants = nu, nd, ng, gr
	return nil
}

func state(revoked bool) protocol.IdentityState {
	if revoked {
		return protocol.Revoked
	}
	return protocol.Active
}

// granted reports whether a grant lets user log in to device. The caller
// holds r.mu. Map lookups keyed by string(b) conversions, also inside an
// array key, do not allocate.
func (r *Memory) granted(user, device []byte) bool {
	if len(r.grants) == 0 {
		return false
	}
	if r.grants[[2]string{string(user), AllGroups}] {
		return true
	}
	g, ok := r.groups[string(device)]
	return ok && r.grants[[2]string{string(user), g}]
}

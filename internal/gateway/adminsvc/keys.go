package adminsvc

import (
	"context"
	"fmt"
	"slices"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/store"
)

const maxHoldersShown = 5

// HoldersOf counts the active holders of key version v in a snapshot of
// the store; sanitize makes their ids safe to print.
func HoldersOf(snap store.Snapshot, v uint8, sanitize func([]byte) string) adminapi.KeyHolders {
	h := adminapi.KeyHolders{Version: v}
	for _, u := range snap.Users {
		if !u.Revoked && u.KV == v {
			h.Users++
			if len(h.SomeUsers) < maxHoldersShown {
				h.SomeUsers = append(h.SomeUsers, sanitize([]byte(u.ID)))
			}
		}
	}
	for _, d := range snap.Devices {
		if !d.Revoked && d.KV == v {
			h.Devices++
			if len(h.SomeDevices) < maxHoldersShown {
				h.SomeDevices = append(h.SomeDevices, sanitize([]byte(d.ID)))
			}
		}
	}
	return h
}

// RetireCheck refuses to retire a version with active holders unless
// force; the error (ErrKeyInUse) says who they are and what to do.
func RetireCheck(h adminapi.KeyHolders, force bool) error {
	if !h.Any() || force {
		return nil
	}
	return fmt.Errorf("%w: master key version %d is held by %s: retiring it would refuse them all from the next login on. "+
		"Re-enrol those users and re-provision those devices (they get the newest version), or revoke them; or retire anyway with --force",
		ErrKeyInUse, h.Version, h)
}

// snapshot reads the whole registry from the store.
func (s *Service) snapshot(ctx context.Context) (store.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	snap, err := s.c.Store.Snapshot(ctx)
	if err != nil {
		return snap, s.storeError("reading the registry", err)
	}
	return snap, nil
}

// newestOf is the version new cards and credentials use: the last.
func newestOf(ks []KeyVersion) uint8 {
	if len(ks) == 0 {
		return 0
	}
	return ks[len(ks)-1].Version
}

func (s *Service) newestVersion() uint8 { return newestOf(s.c.Keys.Versions()) }

// Keys lists the live master-key versions and how many active users and
// devices each has.
func (s *Service) Keys(ctx context.Context) (adminapi.KeyList, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return adminapi.KeyList{}, err
	}
	users, devices := map[uint8]int{}, map[uint8]int{}
	for _, u := range snap.Users {
		if !u.Revoked {
			users[u.KV]++
		}
	}
	for _, d := range snap.Devices {
		if !d.Revoked {
			devices[d.KV]++
		}
	}
	ks := s.c.Keys.Versions()
	newest := newestOf(ks)
	out := adminapi.KeyList{Profile: s.c.Profile.String(), Keys: make([]adminapi.KeyInfo, len(ks))}
	for i, k := range ks {
		out.Keys[i] = adminapi.KeyInfo{Version: k.Version, Created: k.Created.UTC(), Newest: k.Version == newest,
			Users: users[k.Version], Devices: devices[k.Version]}
	}
	return out, nil
}

// RotateKey adds a master-key version; new cards and credentials use it.
func (s *Service) RotateKey(ctx context.Context) (adminapi.KeyChange, error) {
	v, err := s.c.Keys.Rotate(ctx, s.now())
	if err != nil {
		return adminapi.KeyChange{}, failWith(Conflict, err, "rotate: %v", err)
	}
	return adminapi.KeyChange{Version: v, Newest: s.newestVersion()}, nil
}

// RetireKey removes a master-key version: every card and credential under
// it is refused from the next login on. A version that active users or
// devices hold is refused (ErrKeyInUse) unless force.
func (s *Service) RetireKey(ctx context.Context, v uint8, force bool) (adminapi.KeyChange, error) {
	if !slices.ContainsFunc(s.c.Keys.Versions(), func(k KeyVersion) bool { return k.Version == v }) {
		return adminapi.KeyChange{}, fail(NotFound, "no live master key version %d", v)
	}
	snap, err := s.snapshot(ctx)
	if err != nil {
		return adminapi.KeyChange{}, err
	}
	held := HoldersOf(snap, v, s.c.SanitizeID)
	if err := RetireCheck(held, force); err != nil {
		return adminapi.KeyChange{}, failWith(Conflict, err, "retire: %v", err)
	}
	if err := s.c.Keys.Retire(ctx, v); err != nil {
		return adminapi.KeyChange{}, failWith(Conflict, err, "retire: %v", err)
	}
	kc := adminapi.KeyChange{Version: v, Newest: s.newestVersion()}
	if held.Any() {
		kc.HeldBy = &held
	}
	return kc, nil
}

package registry_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/protocol"
)

// TestGroupGrants: a grant on a group reaches exactly the devices of that
// group, "*" reaches every device (grouped or not), and Ungrant takes
// effect at once.
func TestGroupGrants(t *testing.T) {
	r := registry.NewMemory(protocol.Hardened, false)
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := r.AddUser(u); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range [][2]string{{"a1", "plant-a"}, {"a2", "plant-a"}, {"b1", "plant-b"}, {"loose", ""}} {
		if err := r.AddDeviceInGroup(d[0], d[1]); err != nil {
			t.Fatal(err)
		}
	}
	r.Grant("alice", "plant-a")
	r.Grant("bob", registry.AllGroups)
	r.Grant("alice", "plant-a") // twice: no change
	want := map[[2]string]bool{
		{"alice", "a1"}: true, {"alice", "a2"}: true, {"alice", "b1"}: false, {"alice", "loose"}: false,
		{"bob", "a1"}: true, {"bob", "b1"}: true, {"bob", "loose"}: true,
		{"carol", "a1"}: false, {"carol", "loose"}: false,
		// A group name is not a device name.
		{"alice", "plant-a"}: false,
	}
	for pair, ok := range want {
		if got := standing(t, r, pair[0], pair[1]).Allowed; got != ok {
			t.Errorf("%v allowed = %v, want %v", pair, got, ok)
		}
	}
	r.Ungrant("alice", "plant-a")
	if standing(t, r, "alice", "a1").Allowed {
		t.Error("alice still allowed on a1 after Ungrant")
	}
	r.Ungrant("nobody", "nothing") // harmless
	// Pairs from Allow still count next to grants.
	r.Allow("carol", "b1")
	if !standing(t, r, "carol", "b1").Allowed || standing(t, r, "carol", "a1").Allowed {
		t.Error("Allow pair not honoured next to grants")
	}
	if err := r.AddDeviceInGroup("x", registry.AllGroups); err == nil {
		t.Error("device accepted in the reserved group *")
	}
	if err := r.AddDeviceInGroup("a1", "plant-b"); !errors.Is(err, registry.ErrExists) {
		t.Errorf("re-adding a1 in another group: %v", err)
	}
	if st := r.UserState("alice"); st != protocol.Active {
		t.Errorf("UserState(alice) = %v", st)
	}
	if st := r.DeviceState("nope"); st != protocol.Unknown {
		t.Errorf("DeviceState(nope) = %v", st)
	}
}

func TestClassicNamespaceInGroup(t *testing.T) {
	r := registry.NewMemory(protocol.Classic, false)
	if err := r.AddUser("x"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddDeviceInGroup("x", "g"); !errors.Is(err, registry.ErrNamespace) {
		t.Errorf("classic device in group over a user id: %v", err)
	}
}

// TestLoad: Load replaces identities, groups and grants, keeps keys and
// Allow pairs, and refuses damaged content without changing anything.
func TestLoad(t *testing.T) {
	r := registry.NewMemory(protocol.Classic, false)
	r.AddKey(protocol.MasterKey{Version: 1})
	if err := r.AddUser("old"); err != nil {
		t.Fatal(err)
	}
	r.Allow("pair-user", "pair-dev")
	err := r.Load(
		[]registry.Entry{{ID: "alice"}, {ID: "mallory", Revoked: true}},
		[]registry.Entry{{ID: "d1", Group: "g"}, {ID: "d2", Revoked: true}},
		[]registry.GrantEntry{{User: "alice", Group: "g"}, {User: "mallory", Group: registry.AllGroups}})
	if err != nil {
		t.Fatal(err)
	}
	if st := r.UserState("old"); st != protocol.Unknown {
		t.Errorf("user from before Load survived: %v", st)
	}
	if st := standing(t, r, "alice", "d1"); st.User != protocol.Active || st.Device != protocol.Active || !st.Allowed {
		t.Errorf("alice on d1: %+v", st)
	}
	if st := standing(t, r, "mallory", "d2"); st.User != protocol.Revoked || st.Device != protocol.Revoked || !st.Allowed {
		t.Errorf("mallory on d2: %+v", st)
	}
	if !standing(t, r, "pair-user", "pair-dev").Allowed {
		t.Error("Allow pair lost by Load")
	}
	if _, ok := r.MasterKey(1); !ok {
		t.Error("key lost by Load")
	}
	// Damaged content: nothing changes.
	bad := []struct {
		name    string
		u, d    []registry.Entry
		wantErr error
	}{
		{"duplicate user", []registry.Entry{{ID: "u"}, {ID: "u"}}, nil, registry.ErrExists},
		{"duplicate device", nil, []registry.Entry{{ID: "d"}, {ID: "d"}}, registry.ErrExists},
		{"classic namespace", []registry.Entry{{ID: "x"}}, []registry.Entry{{ID: "x"}}, registry.ErrNamespace},
		{"reserved group", nil, []registry.Entry{{ID: "d", Group: "*"}}, nil},
	}
	for _, c := range bad {
		err := r.Load(c.u, c.d, nil)
		if err == nil || (c.wantErr != nil && !errors.Is(err, c.wantErr)) {
			t.Errorf("%s: Load = %v, want %v", c.name, err, c.wantErr)
		}
		if r.UserState("alice") != protocol.Active || r.DeviceState("d1") != protocol.Active {
			t.Fatalf("%s: refused Load changed the registry", c.name)
		}
	}
	// Revocation after Load reaches the new maps.
	if err := r.RevokeUser("alice"); err != nil {
		t.Fatal(err)
	}
	if err := r.RevokeDevice("d1"); err != nil {
		t.Fatal(err)
	}
	if st := standing(t, r, "alice", "d1"); st.User != protocol.Revoked || st.Device != protocol.Revoked {
		t.Errorf("after revoke: %+v", st)
	}
}

// TestStandingAllocs: the verify hot path allocates nothing, also with
// grants and groups to look up.
func TestStandingAllocs(t *testing.T) {
	r := registry.NewMemory(protocol.Hardened, false)
	if err := r.AddUser("alice"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddDeviceInGroup("d1", "g"); err != nil {
		t.Fatal(err)
	}
	r.Grant("alice", "g")
	r.Grant("bob", registry.AllGroups)
	user, dev := []byte("alice"), []byte("d1")
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		st, _ := r.Standing(ctx, user, dev)
		if !st.Allowed {
			t.Fatal("not allowed")
		}
	})
	if allocs != 0 {
		t.Errorf("Standing allocates %.1f times per call", allocs)
	}
}

// TestLoadConcurrent: Load, grants and lookups from many goroutines (run
// with -race); every Standing sees one whole content.
func TestLoadConcurrent(t *testing.T) {
	r := registry.NewMemory(protocol.Hardened, false)
	a := []registry.Entry{{ID: "u"}}
	b := []registry.Entry{{ID: "u", Revoked: true}}
	d := []registry.Entry{{ID: "d", Group: "g"}}
	g := []registry.GrantEntry{{User: "u", Group: "g"}}
	if err := r.Load(a, d, g); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				users := a
				if (i+j)%2 == 0 {
					users = b
				}
				if err := r.Load(users, d, g); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			for range 200 {
				st, _ := r.Standing(context.Background(), []byte("u"), []byte("d"))
				if st.User == protocol.Unknown || st.Device != protocol.Active || !st.Allowed {
					t.Errorf("saw a partial load: %+v", st)
					return
				}
			}
		})
		wg.Go(func() {
			for range 200 {
				r.Grant("v", "g")
				r.Ungrant("v", "g")
			}
		})
	}
	wg.Wait()
}

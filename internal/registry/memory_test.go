package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/protocol"
)

var _ protocol.Registry = (*registry.Memory)(nil)

func standing(t *testing.T, r *registry.Memory, user, device string) protocol.Standing {
	t.Helper()
	st, err := r.Standing(context.Background(), []byte(user), []byte(device))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestIdentities(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		r := registry.NewMemory(p, true)
		if st := standing(t, r, "alice", "sensor-7"); st.User != protocol.Unknown || st.Device != protocol.Unknown {
			t.Fatalf("%v: empty registry knows %+v", p, st)
		}
		if err := r.AddUser("alice"); err != nil {
			t.Fatal(err)
		}
		if err := r.AddDevice("sensor-7"); err != nil {
			t.Fatal(err)
		}
		if st := standing(t, r, "alice", "sensor-7"); st.User != protocol.Active || st.Device != protocol.Active || !st.Allowed {
			t.Fatalf("%v: after add: %+v", p, st)
		}
		// Identities are bytes: no case folding, no normalisation.
		if st := standing(t, r, "Alice", "sensor-7 "); st.User != protocol.Unknown || st.Device != protocol.Unknown {
			t.Fatalf("%v: near-miss identities matched: %+v", p, st)
		}
		if err := r.AddUser("alice"); !errors.Is(err, registry.ErrExists) {
			t.Errorf("%v: second AddUser: %v", p, err)
		}
		if err := r.AddDevice("sensor-7"); !errors.Is(err, registry.ErrExists) {
			t.Errorf("%v: second AddDevice: %v", p, err)
		}

		if err := r.RevokeUser("alice"); err != nil {
			t.Fatal(err)
		}
		if st := standing(t, r, "alice", "sensor-7"); st.User != protocol.Revoked || st.Device != protocol.Active {
			t.Fatalf("%v: after RevokeUser: %+v", p, st)
		}
		if err := r.RevokeDevice("sensor-7"); err != nil {
			t.Fatal(err)
		}
		if st := standing(t, r, "alice", "sensor-7"); st.Device != protocol.Revoked {
			t.Fatalf("%v: after RevokeDevice: %+v", p, st)
		}
		// A revoked identity stays taken.
		if err := r.AddUser("alice"); !errors.Is(err, registry.ErrExists) {
			t.Errorf("%v: re-adding a revoked user: %v", p, err)
		}
		if err := r.RevokeUser("bob"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%v: revoke unknown user: %v", p, err)
		}
		if err := r.RevokeDevice("ghost"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%v: revoke unknown device: %v", p, err)
		}
		// Users and devices are separate tables: revoking "sensor-7" as a
		// user finds nothing.
		if err := r.RevokeUser("sensor-7"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%v: revoke a device id as a user: %v", p, err)
		}
	}
}

// TestClassicNamespace: under classic a user identity equal to a device
// identity would give the user the device's tag (spec section 4), so each
// is refused if the other exists; hardened allows it.
func TestClassicNamespace(t *testing.T) {
	r := registry.NewMemory(protocol.Classic, true)
	if err := r.AddDevice("x"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddUser("x"); !errors.Is(err, registry.ErrNamespace) {
		t.Errorf("classic user over a device id: %v", err)
	}
	if err := r.AddUser("y"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddDevice("y"); !errors.Is(err, registry.ErrNamespace) {
		t.Errorf("classic device over a user id: %v", err)
	}
	// Revocation does not free the name.
	if err := r.RevokeDevice("x"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddUser("x"); !errors.Is(err, registry.ErrNamespace) {
		t.Errorf("classic user over a revoked device id: %v", err)
	}
	if st := standing(t, r, "x", "y"); st.User != protocol.Unknown || st.Device != protocol.Unknown {
		t.Errorf("refused adds left state: %+v", st)
	}

	h := registry.NewMemory(protocol.Hardened, true)
	if err := h.AddDevice("x"); err != nil {
		t.Fatal(err)
	}
	if err := h.AddUser("x"); err != nil {
		t.Errorf("hardened user equal to a device id: %v", err)
	}
	if err := h.AddUser("y"); err != nil {
		t.Fatal(err)
	}
	if err := h.AddDevice("y"); err != nil {
		t.Errorf("hardened device equal to a user id: %v", err)
	}
	if st := standing(t, h, "x", "x"); st.User != protocol.Active || st.Device != protocol.Active {
		t.Errorf("hardened equal ids: %+v", st)
	}
}

func TestPolicy(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		r := registry.NewMemory(p, false)
		for _, u := range []string{"alice", "bob"} {
			if err := r.AddUser(u); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range []string{"d1", "d2"} {
			if err := r.AddDevice(d); err != nil {
				t.Fatal(err)
			}
		}
		if standing(t, r, "alice", "d1").Allowed {
			t.Fatalf("%v: allowed before any Allow", p)
		}
		r.Allow("alice", "d1")
		want := map[[2]string]bool{{"alice", "d1"}: true, {"alice", "d2"}: false, {"bob", "d1"}: false, {"bob", "d2"}: false}
		for pair, ok := range want {
			if got := standing(t, r, pair[0], pair[1]).Allowed; got != ok {
				t.Errorf("%v: %v allowed = %v, want %v", p, pair, got, ok)
			}
		}
		// The pair is ordered: (user, device), not a set.
		if standing(t, r, "d1", "alice").Allowed {
			t.Errorf("%v: reversed pair allowed", p)
		}
		// Policy is independent of standing: a revoked user stays allowed
		// by policy and is refused by its state.
		if err := r.RevokeUser("alice"); err != nil {
			t.Fatal(err)
		}
		if st := standing(t, r, "alice", "d1"); !st.Allowed || st.User != protocol.Revoked {
			t.Errorf("%v: revoked and allowed: %+v", p, st)
		}

		all := registry.NewMemory(p, true)
		if !standing(t, all, "anyone", "anything").Allowed {
			t.Errorf("%v: allowAll did not allow", p)
		}
	}
}

func TestKeys(t *testing.T) {
	r := registry.NewMemory(protocol.Hardened, true)
	if _, ok := r.MasterKey(1); ok {
		t.Fatal("empty registry has key 1")
	}
	k1 := protocol.MasterKey{Version: 1}
	k1.Key[0] = 0x11
	k2 := protocol.MasterKey{Version: 2}
	k2.Key[0] = 0x22
	r.AddKey(k1)
	r.AddKey(k2)
	k1.Key[0] = 0xff // the registry keeps its own copy
	got, ok := r.MasterKey(1)
	if !ok || got[0] != 0x11 {
		t.Fatalf("key 1: %v %x", ok, got[:1])
	}
	if got, ok := r.MasterKey(2); !ok || got[0] != 0x22 {
		t.Fatalf("key 2: %v", ok)
	}
	if _, ok := r.MasterKey(3); ok {
		t.Fatal("unknown version 3 found")
	}
	r.RetireKey(1)
	if _, ok := r.MasterKey(1); ok {
		t.Fatal("retired key still served")
	}
	if _, ok := r.MasterKey(2); !ok {
		t.Fatal("retiring 1 removed 2")
	}
	r.RetireKey(9) // retiring an unknown version is harmless
	// Re-adding a version replaces it.
	k2.Key[0] = 0x23
	r.AddKey(k2)
	if got, _ := r.MasterKey(2); got[0] != 0x23 {
		t.Fatalf("replaced key 2 reads %x", got[:1])
	}
}

// TestConcurrentUse: updates and lookups from many goroutines (run with
// -race).
func TestConcurrentUse(t *testing.T) {
	r := registry.NewMemory(protocol.Hardened, false)
	r.AddKey(protocol.MasterKey{Version: 1})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := fmt.Sprintf("u%d-%d", g, i)
				if err := r.AddUser(id); err != nil {
					t.Error(err)
				}
				r.Allow(id, "d")
				if i%2 == 0 {
					if err := r.RevokeUser(id); err != nil {
						t.Error(err)
					}
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 200 {
				if _, err := r.Standing(context.Background(), []byte(fmt.Sprintf("u%d-%d", g, i)), []byte("d")); err != nil {
					t.Error(err)
				}
				r.MasterKey(1)
			}
		}()
	}
	wg.Wait()
	for g := range 8 {
		for i := range 200 {
			st := standing(t, r, fmt.Sprintf("u%d-%d", g, i), "d")
			want := protocol.Active
			if i%2 == 0 {
				want = protocol.Revoked
			}
			if st.User != want || !st.Allowed {
				t.Fatalf("u%d-%d: %+v", g, i, st)
			}
		}
	}
}

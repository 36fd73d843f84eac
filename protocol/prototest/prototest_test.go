package prototest

import (
	"context"
	"errors"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// The replay cache refuses a key until its expiry has passed, as the
// protocol's ReplayCache contract asks (insert-if-absent, kept until
// T1 + dT).
func TestReplayCacheExpiry(t *testing.T) {
	var c ReplayCache
	ctx := context.Background()
	k := protocol.ReplayKey{1, 2, 3}
	for _, tc := range []struct {
		expires, now uint64
		want         bool
	}{
		{100, 10, true},  // first sight
		{100, 50, false}, // replay within the window
		{100, 100, false},
		{300, 101, true}, // the old entry has expired
		{300, 200, false},
	} {
		got, err := c.Insert(ctx, k, tc.expires, tc.now)
		if err != nil || got != tc.want {
			t.Fatalf("Insert(expires %d, now %d) = %v, %v; want %v", tc.expires, tc.now, got, err, tc.want)
		}
	}
}

// Under classic a user may not take a device's identity, nor a device a
// user's; under hardened the two namespaces are separate.
func TestRegistryNamespace(t *testing.T) {
	r := NewRegistry(protocol.Classic, true)
	if err := r.AddDevice("x"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddUser("x"); !errors.Is(err, ErrNamespace) {
		t.Fatalf("classic AddUser of a device's identity: %v, want ErrNamespace", err)
	}
	h := NewRegistry(protocol.Hardened, true)
	if err := h.AddDevice("x"); err != nil {
		t.Fatal(err)
	}
	if err := h.AddUser("x"); err != nil {
		t.Fatalf("hardened AddUser: %v", err)
	}
	if err := h.RevokeUser("nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking an unknown user: %v, want ErrNotFound", err)
	}
}

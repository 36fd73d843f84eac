package gateway_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/protocol"
)

// TestSingleGatewayFollowsItsStore: a single gateway is a replica set of
// one: a write to its embedded store that did not go through the admin
// API reaches the registry through the store's change feed, and
// ExpectChange lets the writer wait for it.
func TestSingleGatewayFollowsItsStore(t *testing.T) {
	// The store lives outside the data directory, so that the test keeps
	// a handle on it (datadir.go refuses a store without a key file).
	st, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Store = st
	tg := startGateway(t, cfg)
	card := tg.enrol("alice")
	cred := tg.provision("sensor-7", "plant-a")
	tg.grant("alice", "plant-a")
	tg.mustLogin(card, cred)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := tg.g.ExpectChange(store.Change{Kind: store.ChangeUser, ID: "alice"})
	if err := st.RevokeUser(ctx, "alice", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(ctx); err != nil {
		t.Fatalf("waiting for the revocation to reach the registry: %v", err)
	}
	tg.mustRefuse(card, cred, protocol.ReasonRevokedUser.Name())

	// A change nobody makes is never reported applied.
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	w = tg.g.ExpectChange(store.Change{Kind: store.ChangeDevice, ID: "never-made"})
	if err := w.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for a change nobody made: %v, want the deadline", err)
	}
}

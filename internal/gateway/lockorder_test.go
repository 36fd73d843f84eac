package gateway_test

import (
	"encoding/hex"
	"testing"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/protocol"
)

// TestLockComesAfterFirstChecksAndFreshness: a locked user's m2 of the
// other profile is unsupported_profile and a stale one stale_timestamp,
// the answers any user's would get (spec section 7: the first checks, then
// freshness before registry and policy). Answered rejected, they would
// tell anyone who can send a datagram, without a key, which users are
// locked (and so exist).
func TestLockComesAfterFirstChecksAndFreshness(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Lockout = smartPolicy
	tg := startGateway(t, cfg)
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	addr := tg.g.CoAPPublic()
	// Forged logins without a Source until the unverified class is locked.
	for range smartPolicy.UnfamiliarFailures {
		postFrom(t, addr, tg.m2For(badE(alice), cred, nil), nil)
	}
	if code, out := postFrom(t, addr, tg.m2For(alice, cred, nil), nil); code != coap.Unauthorized || string(out) != string(rejectedWire) {
		t.Fatalf("alice's correct login while locked: %v %x, want 4.01 rejected", code, out)
	}
	for _, tc := range []struct {
		name   string
		tamper func(*protocol.M2)
		code   coap.Code
		want   string
	}{
		{"classic m2", func(m *protocol.M2) { m.Profile = protocol.Classic }, coap.BadRequest, "017f02"},
		{"stale m2", func(m *protocol.M2) { m.T1, m.T2 = 1_000, 1_000 }, coap.Unauthorized, "027f03"},
	} {
		code, out := postFrom(t, addr, tg.m2For(alice, cred, tc.tamper), nil)
		if got := hex.EncodeToString(out); code != tc.code || got != tc.want {
			t.Errorf("locked user, %s: %v %s, want %v %s", tc.name, code, got, tc.code, tc.want)
		}
	}
}

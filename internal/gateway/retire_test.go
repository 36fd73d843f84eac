package gateway_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// TestRetireInUse: POST /v1/keys/N/retire refuses (409) a version that
// active users or devices hold, naming them; revoked ones do not count;
// force=1 retires it and answers who was affected.
func TestRetireInUse(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	tg.enrol("alice")
	tg.provision("d1", "")
	tg.provision("d2", "")
	var kc adminapi.KeyChange
	tg.call(http.MethodPost, "/v1/keys/rotate", nil, &kc)
	e := tg.callErr(http.MethodPost, "/v1/keys/1/retire", tg.token, nil, http.StatusConflict)
	if !strings.Contains(e.Message, "1 active user (alice) and 2 active devices (d1, d2)") || !strings.Contains(e.Message, "--force") {
		t.Fatalf("409 message %q", e.Message)
	}
	if vs := tg.g.KeyVersions(); !slices.Equal(vs, []uint8{1, 2}) {
		t.Fatalf("versions %v after a refused retire", vs)
	}
	tg.call(http.MethodPost, "/v1/users/alice/revoke", nil, nil)
	tg.call(http.MethodPost, "/v1/devices/d2/revoke", nil, nil)
	e = tg.callErr(http.MethodPost, "/v1/keys/1/retire", tg.token, nil, http.StatusConflict)
	if !strings.Contains(e.Message, "0 active users and 1 active device (d1)") {
		t.Fatalf("409 message after revocations %q", e.Message)
	}
	kc = adminapi.KeyChange{}
	tg.call(http.MethodPost, "/v1/keys/1/retire?force=1", nil, &kc)
	if kc.HeldBy == nil || kc.HeldBy.Devices != 1 || !slices.Equal(kc.HeldBy.SomeDevices, []string{"d1"}) {
		t.Fatalf("forced retire answered %+v", kc)
	}
	if vs := tg.g.KeyVersions(); !slices.Equal(vs, []uint8{2}) {
		t.Fatalf("versions %v after a forced retire", vs)
	}
}

// TestHoldersOf: counts are complete, the ids shown are a few, sanitized.
func TestHoldersOf(t *testing.T) {
	var snap store.Snapshot
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g\x1b[31m"} {
		snap.Users = append(snap.Users, store.User{ID: id, KV: 3})
	}
	snap.Users = append(snap.Users, store.User{ID: "old", KV: 2}, store.User{ID: "gone", KV: 3, Revoked: true})
	h := adminsvc.HoldersOf(snap, 3, auditjson.SanitizeID)
	if h.Users != 7 || h.Devices != 0 || len(h.SomeUsers) != 5 {
		t.Fatalf("%+v", h)
	}
	if s := h.String(); s != "7 active users (a, b, c, d, e, ...) and 0 active devices" {
		t.Errorf("String() = %q", s)
	}
	if err := adminsvc.RetireCheck(h, false); err == nil {
		t.Error("held version not refused")
	}
	if err := adminsvc.RetireCheck(h, true); err != nil {
		t.Errorf("forced: %v", err)
	}
	if err := adminsvc.RetireCheck(adminsvc.HoldersOf(snap, 9, auditjson.SanitizeID), false); err != nil {
		t.Errorf("unheld version: %v", err)
	}
	for _, id := range adminsvc.HoldersOf(store.Snapshot{Users: []store.User{{ID: "g\x1b[31m", KV: 1}}}, 1, auditjson.SanitizeID).SomeUsers {
		if strings.ContainsRune(id, 0x1b) {
			t.Errorf("unsanitized id %q", id)
		}
	}
}

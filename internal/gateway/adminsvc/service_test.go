package adminsvc_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc/adminsvctest"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

var testKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// registerRequest is a user's m_reg for id with code.
func registerRequest(t *testing.T, p protocol.Profile, id, code string) adminapi.RegisterRequest {
	t.Helper()
	req, err := protocol.NewRegistrationRequest(p, id, "pw", testKDF, protocol.Config{Now: time.Now, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	return adminapi.RegisterRequest{Code: code, Profile: p.String(), ID: id, W: hex.EncodeToString(req.W[:]),
		R: hex.EncodeToString(req.R[:]), T: req.T, KDF: adminapi.KDF{T: testKDF.Time, MKiB: testKDF.MemoryKiB, P: testKDF.Threads}}
}

func wantKind(t *testing.T, what string, err error, k adminsvc.Kind) {
	t.Helper()
	if err == nil || adminsvc.KindOf(err) != k {
		t.Fatalf("%s: %v (kind %v), want kind %v", what, err, adminsvc.KindOf(err), k)
	}
}

var ctx = context.Background()

func TestEnrolAndRegister(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	code, err := h.Svc.EnrolCode(ctx, "10.0.0.1:1", adminapi.EnrolCodeRequest{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if rec := h.Audit.Last(); rec.Kind != adminapi.KindEnrol || rec.Reason != "code issued" || rec.Source != "10.0.0.1:1" {
		t.Fatalf("audit of the code: %+v", rec)
	}
	// Case and separators do not matter.
	card, err := h.Svc.Register(ctx, "10.0.0.2:2", registerRequest(t, protocol.Hardened, "alice", strings.ToLower(strings.ReplaceAll(code.Code, "-", ""))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := card.Card(); err != nil || card.ID != "alice" {
		t.Fatalf("card %+v: %v", card, err)
	}
	if h.Reg.UserState("alice") != protocol.Active {
		t.Fatal("the registry was not told of the new user")
	}
	if rec := h.Audit.Last(); rec.Reason != "registered" || rec.User != "alice" || rec.KVUser != 1 {
		t.Fatalf("audit of the registration: %+v", rec)
	}
	// The code is used up.
	_, err = h.Svc.Register(ctx, "x", registerRequest(t, protocol.Hardened, "alice", code.Code))
	wantKind(t, "second registration", err, adminsvc.Conflict)
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("second registration: %v, want store.ErrExists", err)
	}
}

func TestRegisterRefusals(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	_, err := h.Svc.Register(ctx, "x", registerRequest(t, protocol.Hardened, "bob", "AAAA-BBBB"))
	wantKind(t, "unknown code", err, adminsvc.CodeRejected)
	_, err = h.Svc.Register(ctx, "x", registerRequest(t, protocol.Hardened, "bob", ""))
	wantKind(t, "no code", err, adminsvc.CodeRejected)
	_, err = h.Svc.Register(ctx, "x", registerRequest(t, protocol.Classic, "bob", "AAAA"))
	wantKind(t, "other profile", err, adminsvc.Invalid)
	if r := h.Audit.RefusedRecords(); len(r) != 3 || r[2].Reason != "profile mismatch" {
		t.Fatalf("refusals audited: %+v", r)
	}

	code, err := h.Svc.EnrolCode(ctx, "x", adminapi.EnrolCodeRequest{User: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Svc.Register(ctx, "x", registerRequest(t, protocol.Hardened, "dave", code.Code))
	wantKind(t, "code of another user", err, adminsvc.Forbidden)
	// ... and the code is now used up.
	_, err = h.Svc.Register(ctx, "x", registerRequest(t, protocol.Hardened, "carol", code.Code))
	wantKind(t, "used code", err, adminsvc.CodeRejected)

	_, err = h.Svc.EnrolCode(ctx, "x", adminapi.EnrolCodeRequest{User: "erin", TTLs: -1})
	wantKind(t, "negative ttl", err, adminsvc.Invalid)
	_, err = h.Svc.EnrolCode(ctx, "x", adminapi.EnrolCodeRequest{User: ""})
	wantKind(t, "empty user", err, adminsvc.Invalid)
}

// TestClassicNamespace: one id cannot be a user and a device under
// classic. The registry answers early; when it lags behind, the store
// refuses in its transaction, and the service says so the same way.
func TestClassicNamespace(t *testing.T) {
	h := adminsvctest.New(t, protocol.Classic)
	cred, err := h.Svc.Provision(ctx, "x", adminapi.DeviceRequest{ID: "x", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := credfile.Unmarshal(cred)
	if err != nil || c.ID != "x" || c.Gateway != "127.0.0.1:5683" || c.KV != protocol.ClassicKeyVersion {
		t.Fatalf("credential %+v: %v", c, err)
	}
	_, err = h.Svc.EnrolCode(ctx, "x", adminapi.EnrolCodeRequest{User: "x"})
	wantKind(t, "user code for a device id", err, adminsvc.Conflict)
	if !errors.Is(err, store.ErrNamespace) || !strings.Contains(err.Error(), "share one namespace") {
		t.Fatalf("user code for a device id: %v", err)
	}

	h.SetLag(true) // the registry lags: the store decides
	if _, err := h.Svc.Provision(ctx, "x", adminapi.DeviceRequest{ID: "y"}); err != nil {
		t.Fatal(err)
	}
	code, err := h.Svc.EnrolCode(ctx, "x", adminapi.EnrolCodeRequest{User: "y"})
	if err != nil {
		t.Fatalf("the lagging registry refused early: %v", err)
	}
	_, err = h.Svc.Register(ctx, "x", registerRequest(t, protocol.Classic, "y", code.Code))
	wantKind(t, "store's namespace refusal", err, adminsvc.Conflict)
	if !errors.Is(err, store.ErrNamespace) {
		t.Fatalf("store's namespace refusal: %v", err)
	}
	if r := h.Audit.RefusedRecords()[len(h.Audit.RefusedRecords())-1]; r.Reason != "store refused" {
		t.Fatalf("store's refusal audited as %+v", r)
	}
}

// TestAuditDownRefuses: an action whose record cannot be kept is not
// taken.
func TestAuditDownRefuses(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	h.Audit.SetDown(errors.New("disk full"))
	_, err := h.Svc.Provision(ctx, "x", adminapi.DeviceRequest{ID: "d"})
	wantKind(t, "provision with the audit down", err, adminsvc.Unavailable)
	devs, err := h.Svc.Devices(ctx)
	if err != nil || len(devs.Devices) != 0 {
		t.Fatalf("devices after a refused provisioning: %+v %v", devs, err)
	}
	wantKind(t, "grant", h.Svc.Grant(ctx, "x", adminapi.Grant{User: "u", Group: "g"}), adminsvc.Unavailable)
}

func TestRevokeAndPolicy(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	_, err := h.Svc.RevokeUser(ctx, "x", "nobody")
	wantKind(t, "revoke unknown user", err, adminsvc.NotFound)
	if _, err := h.Svc.Provision(ctx, "x", adminapi.DeviceRequest{ID: "d", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	rv, err := h.Svc.RevokeDevice(ctx, "10.0.0.9:9", "d")
	if err != nil || rv.ID != "d" || !rv.RevokedAt.Equal(h.Now) {
		t.Fatalf("revoke: %+v %v", rv, err)
	}
	if h.Reg.DeviceState("d") != protocol.Revoked {
		t.Fatal("the registry still has the device active")
	}
	if rec := h.Audit.Last(); rec.Kind != adminapi.KindRevoke || rec.Device != "d" || rec.Source != "10.0.0.9:9" {
		t.Fatalf("audit of the revocation: %+v", rec)
	}
	_, err = h.Svc.Provision(ctx, "x", adminapi.DeviceRequest{ID: "d"})
	wantKind(t, "provision a revoked id", err, adminsvc.Conflict)

	if err := h.Svc.Grant(ctx, "x", adminapi.Grant{User: "u", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	gl, err := h.Svc.Grants(ctx)
	if err != nil || len(gl.Grants) != 1 || gl.Grants[0] != (adminapi.Grant{User: "u", Group: "g"}) {
		t.Fatalf("grants: %+v %v", gl, err)
	}
	if err := h.Svc.Ungrant(ctx, "x", adminapi.Grant{User: "u", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	wantKind(t, "ungrant twice", h.Svc.Ungrant(ctx, "x", adminapi.Grant{User: "u", Group: "g"}), adminsvc.NotFound)
	want := []adminsvc.Op{adminsvc.AddDevice, adminsvc.RevokeDevice, adminsvc.Grant, adminsvc.Ungrant}
	var got []adminsvc.Op
	for _, c := range h.Applied() {
		got = append(got, c.Op)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("changes applied: %v, want %v", got, want)
	}
}

func TestKeys(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	if _, err := h.Svc.Provision(ctx, "x", adminapi.DeviceRequest{ID: "d1"}); err != nil {
		t.Fatal(err)
	}
	kc, err := h.Svc.RotateKey(ctx)
	if err != nil || kc.Version != 2 || kc.Newest != 2 {
		t.Fatalf("rotate: %+v %v", kc, err)
	}
	kl, err := h.Svc.Keys(ctx)
	if err != nil || len(kl.Keys) != 2 || kl.Keys[0].Devices != 1 || kl.Keys[0].Newest || !kl.Keys[1].Newest {
		t.Fatalf("keys: %+v %v", kl, err)
	}
	_, err = h.Svc.RetireKey(ctx, 1, false)
	wantKind(t, "retire a held version", err, adminsvc.Conflict)
	if !errors.Is(err, adminsvc.ErrKeyInUse) || !strings.Contains(err.Error(), "1 active device (d1)") {
		t.Fatalf("retire a held version: %v", err)
	}
	_, err = h.Svc.RetireKey(ctx, 9, true)
	wantKind(t, "retire an unknown version", err, adminsvc.NotFound)
	kc, err = h.Svc.RetireKey(ctx, 1, true)
	if err != nil || kc.HeldBy == nil || kc.HeldBy.Devices != 1 || kc.Newest != 2 {
		t.Fatalf("forced retire: %+v %v", kc, err)
	}
	if info := h.Svc.Info(); !slices.Equal(info.KeyVersions, []int{2}) || info.Profile != "hardened" {
		t.Fatalf("info: %+v", info)
	}
}

func TestAuditQuery(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	for i := range 5 {
		h.Store.AppendAudit(ctx, store.AuditRecord{Time: h.Now, Kind: adminapi.KindVerify, Outcome: adminapi.OutcomeRefused,
			User: "u", Count: uint32(i + 2)})
	}
	asc, err := h.Svc.Audit(ctx, adminapi.AuditQuery{Limit: 2})
	if err != nil || len(asc.Records) != 2 || asc.Next != asc.Records[1].Seq || asc.Records[0].Count != 2 {
		t.Fatalf("oldest first: %+v %v", asc, err)
	}
	desc, err := h.Svc.Audit(ctx, adminapi.AuditQuery{Newest: true, Limit: 2})
	if err != nil || len(desc.Records) != 2 || desc.Records[0].Count != 6 || desc.Records[0].Seq <= desc.Records[1].Seq {
		t.Fatalf("newest first: %+v %v", desc, err)
	}
	more, err := h.Svc.Audit(ctx, adminapi.AuditQuery{Newest: true, Before: desc.Next})
	if err != nil || len(more.Records) != 3 || more.Records[0].Count != 4 {
		t.Fatalf("newest first, next page: %+v %v", more, err)
	}
	_, err = h.Svc.Audit(ctx, adminapi.AuditQuery{Newest: true, After: 1})
	wantKind(t, "after with newest", err, adminsvc.Invalid)
	_, err = h.Svc.Audit(ctx, adminapi.AuditQuery{Before: 1})
	wantKind(t, "before with oldest", err, adminsvc.Invalid)
}

func TestUnlockAndLocks(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	_, err := h.Svc.Unlock(ctx, "x", "nobody")
	wantKind(t, "unlock unknown user", err, adminsvc.NotFound)
	h.Reg.AddUser("alice")
	key := lockout.UnfamiliarKey("alice")
	if err := h.Locks.Lock(ctx, key, h.Now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	ll, err := h.Svc.Locks(ctx)
	if err != nil || ll.Policy != "test policy" || len(ll.Locks) != 1 || ll.Locks[0].User != "alice" {
		t.Fatalf("locks: %+v %v", ll, err)
	}
	un, err := h.Svc.Unlock(ctx, "10.0.0.3:3", "alice")
	if err != nil || !un.WasLocked {
		t.Fatalf("unlock: %+v %v", un, err)
	}
	if rec := h.Audit.Last(); rec.Kind != adminapi.KindLockout || rec.Detail != "lock lifted; failures cleared" {
		t.Fatalf("audit of the unlock: %+v", rec)
	}
}

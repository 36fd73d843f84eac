package adminsvc_test

import (
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc/adminsvctest"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// TestTokensService: a token is made once, found by its hash with its
// role, its last use written at most once a minute; a revoked one is not
// found; nothing is made while the audit is down.
func TestTokensService(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	admin := adminsvc.WithCaller(ctx, adminsvc.Caller{Token: adminapi.BootstrapTokenName, Role: adminapi.RoleAdmin})
	nt, err := h.Svc.CreateToken(admin, "10.0.0.1:1", adminapi.TokenRequest{Name: "ops", Role: adminapi.RoleOperator})
	if err != nil {
		t.Fatal(err)
	}
	if len(nt.Token) != 64 || nt.Role != adminapi.RoleOperator || !nt.Created.Equal(h.Now) {
		t.Fatalf("new token %+v", nt)
	}
	if rec := h.Audit.Last(); rec.Kind != adminapi.KindToken || rec.Detail != "token ops, role operator; by token bootstrap" || rec.Source != "10.0.0.1:1" {
		t.Fatalf("audit of the creation: %+v", rec)
	}
	sum := sha256.Sum256([]byte(nt.Token))
	lastUsed := func() time.Time {
		t.Helper()
		list, err := h.Svc.Tokens(ctx)
		if err != nil || len(list.Tokens) != 1 {
			t.Fatalf("Tokens: %+v %v", list, err)
		}
		return list.Tokens[0].LastUsed
	}
	c, ok, err := h.Svc.AuthenticateHash(ctx, sum)
	if err != nil || !ok || c != (adminsvc.Caller{Token: "ops", Role: adminapi.RoleOperator}) {
		t.Fatalf("AuthenticateHash: %+v %v %v", c, ok, err)
	}
	first := h.Now
	if got := lastUsed(); !got.Equal(first) {
		t.Fatalf("last used %v, want %v", got, first)
	}
	h.Now = h.Now.Add(30 * time.Second)
	h.Svc.AuthenticateHash(ctx, sum)
	if got := lastUsed(); !got.Equal(first) {
		t.Fatalf("last used %v after 30 s, want it kept at %v (one write a minute)", got, first)
	}
	h.Now = h.Now.Add(time.Minute)
	h.Svc.AuthenticateHash(ctx, sum)
	if got := lastUsed(); !got.Equal(h.Now) {
		t.Fatalf("last used %v after 90 s, want %v", got, h.Now)
	}
	if _, ok, err := h.Svc.AuthenticateHash(ctx, sha256.Sum256([]byte(nt.Token+"x"))); ok || err != nil {
		t.Fatalf("another token: %v %v", ok, err)
	}

	// The audit down: nothing is made or revoked.
	h.Audit.SetDown(errors.New("disk full"))
	_, err = h.Svc.CreateToken(admin, "", adminapi.TokenRequest{Name: "later", Role: adminapi.RoleAuditor})
	wantKind(t, "create with the audit down", err, adminsvc.Unavailable)
	_, err = h.Svc.RevokeToken(admin, "", "ops")
	wantKind(t, "revoke with the audit down", err, adminsvc.Unavailable)
	h.Audit.SetDown(nil)
	if list, _ := h.Svc.Tokens(ctx); len(list.Tokens) != 1 {
		t.Fatalf("tokens after refusals: %+v", list)
	}

	if _, err := h.Svc.RevokeToken(admin, "", "ops"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := h.Svc.AuthenticateHash(ctx, sum); ok {
		t.Fatal("a revoked token is still found")
	}
	if _, err := h.Store.(store.Tokens).TokenByHash(ctx, sum); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the store still has the revoked token: %v", err)
	}
}

// TestByCaller: the records of actions name the caller's token; a record
// without a caller is unchanged.
func TestByCaller(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	ops := adminsvc.WithCaller(ctx, adminsvc.Caller{Token: "night-shift", Role: adminapi.RoleOperator})
	if err := h.Svc.Grant(ops, "", adminapi.Grant{User: "alice", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	if rec := h.Audit.Last(); rec.Detail != "group g; by token night-shift" {
		t.Fatalf("grant record %+v", rec)
	}
	if err := h.Svc.Grant(ctx, "", adminapi.Grant{User: "bob", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	if rec := h.Audit.Last(); rec.Detail != "group g" {
		t.Fatalf("grant record without a caller %+v", rec)
	}
	if rec := adminsvc.ByCaller(ops, store.AuditRecord{}); rec.Detail != "by token night-shift" {
		t.Fatalf("ByCaller of an empty detail: %q", rec.Detail)
	}
}

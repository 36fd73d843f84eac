package gateway_test

import (
	"net/http"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// TestReplicasShareTokens: a token created on one replica is accepted by
// another at once (no cache to wait for), with its role, and a token
// revoked on one is refused by the other at its next request.
func TestReplicasShareTokens(t *testing.T) {
	c := newCluster(t)
	a := c.start("r0")
	b := c.start("r1")
	ops := a.newToken("ops", adminapi.RoleOperator)
	if code, body := rawStatus(t, b, http.MethodGet, adminapi.PathUsers, ops); code != http.StatusOK {
		t.Fatalf("operator's token made on r0, on r1: %d %s", code, body)
	}
	b.callErr(http.MethodGet, adminapi.PathAudit, ops, nil, http.StatusForbidden)

	var list adminapi.TokenList
	b.call(http.MethodGet, adminapi.PathTokens, nil, &list)
	if len(list.Tokens) != 1 || list.Tokens[0].Name != "ops" || list.Tokens[0].LastUsed.IsZero() {
		t.Fatalf("tokens on r1: %+v", list)
	}
	b.call(http.MethodPost, adminapi.PathTokensRevoke, adminapi.TokenName{Name: "ops"}, nil)
	a.callErr(http.MethodGet, adminapi.PathUsers, ops, nil, http.StatusUnauthorized)
}

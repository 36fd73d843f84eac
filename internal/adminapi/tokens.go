package adminapi

import (
	"context"
	"net/http"
	"time"
)

// Admin roles, as Kerberos' kadm5.acl: each admin token has one role, and
// each admin route and console action admits some roles only (the table
// is internal/gateway's routeRoles; docs/OPERATIONS.md shows it).

// Role is what an admin token may do.
type Role string

// Roles.
const (
	// RoleAdmin may do everything, tokens and backups included.
	RoleAdmin Role = "admin"
	// RoleOperator runs the fleet: enrolment codes, provisioning, grants,
	// revocation, unlocking, and the lists those need (users, devices,
	// grants, locks). Not keys, audit, tokens or backups.
	RoleOperator Role = "operator"
	// RoleAuditor reads the audit log, the statistics and the metrics,
	// and nothing else.
	RoleAuditor Role = "auditor"
)

// Roles are the roles a token may be given, most powerful first.
var Roles = []Role{RoleAdmin, RoleOperator, RoleAuditor}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return r == RoleAdmin || r == RoleOperator || r == RoleAuditor }

// BootstrapTokenName is the name under which the audit shows the
// gateway's own admin token (DATA/admin-token or TAGAUTH_ADMIN_TOKEN),
// which has the admin role and is not in the store. No stored token may
// take the name.
const BootstrapTokenName = "bootstrap"

// KindToken is the audit kind of a token created or revoked.
const KindToken = "token"

// Token routes (admin only).
const (
	PathTokens       = "/v1/tokens"        // GET: TokenList; POST TokenRequest: NewToken
	PathTokensRevoke = "/v1/tokens/revoke" // POST TokenName: TokenRevoked
)

// TokenRequest is POST /v1/tokens.
type TokenRequest struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// NewToken is a token just created. Token is the bearer token itself,
// sent this once: the gateway keeps only its hash.
type NewToken struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Token   string    `json:"token"`
	Created time.Time `json:"created"`
}

// TokenInfo is one token in GET /v1/tokens, without the token.
type TokenInfo struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
	// LastUsed is when the token last authorized a request, to about a
	// minute; zero (absent) when never.
	LastUsed time.Time `json:"last_used,omitzero"`
}

// TokenList is GET /v1/tokens, sorted by name.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// TokenName is POST /v1/tokens/revoke's body.
type TokenName struct {
	Name string `json:"name"`
}

// TokenRevoked is the answer to a revocation: the token is refused from
// now on, by every replica.
type TokenRevoked struct {
	Name      string    `json:"name"`
	RevokedAt time.Time `json:"revoked_at"`
}

// CreateToken is POST /v1/tokens. The answer holds the new token, which
// cannot be read again.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (NewToken, error) {
	var out NewToken
	return out, c.do(ctx, http.MethodPost, PathTokens, req, &out)
}

// Tokens is GET /v1/tokens.
func (c *Client) Tokens(ctx context.Context) (TokenList, error) {
	var out TokenList
	return out, c.do(ctx, http.MethodGet, PathTokens, nil, &out)
}

// RevokeToken is POST /v1/tokens/revoke.
func (c *Client) RevokeToken(ctx context.Context, name string) (TokenRevoked, error) {
	var out TokenRevoked
	return out, c.do(ctx, http.MethodPost, PathTokensRevoke, TokenName{Name: name}, &out)
}

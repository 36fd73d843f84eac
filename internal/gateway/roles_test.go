package gateway_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/protocol"
)

// newToken creates a stored token with the gateway's own admin token.
func (tg *testGW) newToken(name string, role adminapi.Role) string {
	tg.t.Helper()
	var nt adminapi.NewToken
	tg.call(http.MethodPost, adminapi.PathTokens, adminapi.TokenRequest{Name: name, Role: role}, &nt)
	if nt.Name != name || nt.Role != role || len(nt.Token) != 64 {
		tg.t.Fatalf("created token %+v", nt)
	}
	return nt.Token
}

// rawStatus sends method path with token (none when empty) and a JSON
// body of "{}" for the methods that carry one.
func rawStatus(t *testing.T, tg *testGW, method, path, token string) (int, string) {
	t.Helper()
	var body io.Reader
	if method != http.MethodGet {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, tg.url(path), body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tg.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// concrete fills a route pattern's wildcards with values that name
// nothing, so that an admitted request is refused by the service (404,
// 400), never carried out on something that exists.
func concrete(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = strings.NewReplacer("{id}", "nobody", "{version}", "200", "{$}", "").Replace(path)
	return method, path
}

// The roles' powers as docs/OPERATIONS.md states them, written out here
// independently of the gateway's table, so that a wrong entry there fails
// TestRouteRoles. An admin may use everything.
var (
	operatorMay = []string{
		"GET /v1/status", "POST /v1/enrol-codes", "POST /v1/devices", "POST /v1/devices/batch", "GET /v1/devices", "GET /v1/users", "GET /v1/grants",
		"POST /v1/grants", "DELETE /v1/grants", "GET /v1/locks",
		"POST /v1/users/{id}/revoke", "POST /v1/devices/{id}/revoke", "POST /v1/users/revoke", "POST /v1/devices/revoke",
		"POST /v1/users/{id}/unlock", "POST /v1/users/unlock",
		"GET /console/users", "POST /console/users/enrol-code", "GET /console/users/revoke", "POST /console/users/revoke",
		"POST /console/users/unlock", "GET /console/devices", "POST /console/devices/provision", "POST /console/devices/batch", "POST /console/devices/credential",
		"GET /console/devices/revoke", "POST /console/devices/revoke", "GET /console/policy", "POST /console/policy/grant",
		"POST /console/policy/ungrant", "POST /console/logout",
	}
	auditorMay = []string{"GET /v1/status", "GET /v1/audit", "GET /v1/stats", "GET /metrics", "GET /console/audit", "POST /console/logout"}
)

func mayUse(role adminapi.Role, route string) bool {
	switch role {
	case adminapi.RoleAdmin:
		return true
	case adminapi.RoleOperator:
		return slices.Contains(operatorMay, route)
	case adminapi.RoleAuditor:
		return slices.Contains(auditorMay, route)
	}
	return false
}

// TestRouteRoles is the table of roles, checked exhaustively: every route
// the admin port serves and every console action has an entry (a new one
// without fails here), no entry is stale, and for every route or action
// and every role the gateway admits exactly the roles that mayUse says and
// answers the others 403; without a token, 401.
func TestRouteRoles(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	table := gateway.RouteRoles()
	tokens := []struct {
		name, token string
		role        adminapi.Role
	}{
		{adminapi.BootstrapTokenName, tg.token, adminapi.RoleAdmin},
		{"admin2", tg.newToken("admin2", adminapi.RoleAdmin), adminapi.RoleAdmin},
		{"ops", tg.newToken("ops", adminapi.RoleOperator), adminapi.RoleOperator},
		{"audit", tg.newToken("audit", adminapi.RoleAuditor), adminapi.RoleAuditor},
	}

	routes := gateway.AdminRoutes(tg.g)
	actions := gateway.ConsoleActions(tg.g)
	if len(routes) < 20 || len(actions) < 20 {
		t.Fatalf("recorded %d routes and %d console actions: the recorder missed some", len(routes), len(actions))
	}
	for _, r := range routes {
		_, inTable := table[r]
		if public := gateway.IsPublicRoute(r); inTable == public {
			t.Errorf("route %q: in the table of roles %v, public %v: want exactly one", r, inTable, public)
		}
	}
	for _, a := range actions {
		if _, ok := table[a]; !ok {
			t.Errorf("console action %q has no entry in the table of roles", a)
		}
	}
	for k := range table {
		if !slices.Contains(routes, k) && !slices.Contains(actions, k) {
			t.Errorf("table of roles entry %q is no route or console action", k)
		}
	}

	for _, r := range routes {
		if gateway.IsPublicRoute(r) {
			continue
		}
		method, path := concrete(r)
		if code, body := rawStatus(t, tg, method, path, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d %s", r, code, body)
		}
		// The admin tokens come first: a success of theirs clears the
		// source's count of wrong tokens, which the request without one
		// has just raised.
		for _, tk := range tokens {
			code, body := rawStatus(t, tg, method, path, tk.token)
			want := mayUse(tk.role, r)
			switch {
			case want && (code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusTooManyRequests):
				t.Errorf("%s with %s's token (%s): %d %s, want admitted", r, tk.name, tk.role, code, body)
			case !want && code != http.StatusForbidden:
				t.Errorf("%s with %s's token (%s): %d %s, want 403", r, tk.name, tk.role, code, body)
			case !want && !strings.Contains(body, string(tk.role)):
				t.Errorf("%s with %s's token: the refusal does not name the role: %s", r, tk.name, body)
			}
		}
	}

	// The console, one session per token. Logging out ends the session,
	// so it is tried last.
	slices.SortStableFunc(actions, func(a, b string) int {
		return boolCmp(strings.HasSuffix(a, "/logout"), strings.HasSuffix(b, "/logout"))
	})
	for _, tk := range tokens {
		c := newConsoleClient(tg)
		if resp := c.login(tk.token); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("console login with %s's token: %d", tk.name, resp.StatusCode)
		}
		for _, a := range actions {
			method, path := concrete(a)
			var form url.Values
			if method == http.MethodPost {
				form = url.Values{"csrf": {c.csrf}}
			}
			resp, page := c.do(method, path, form, "")
			want := mayUse(tk.role, a)
			switch {
			case want && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
				t.Errorf("console %s as %s (%s): %d, want admitted\n%s", a, tk.name, tk.role, resp.StatusCode, page)
			case !want && resp.StatusCode != http.StatusForbidden:
				t.Errorf("console %s as %s (%s): %d, want 403", a, tk.name, tk.role, resp.StatusCode)
			}
		}
	}
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// TestTokens: tokens are created, listed and revoked by an admin; the
// store keeps only their hashes; the audit names the token that acted;
// a revoked token is refused at once, console sessions included; and the
// bootstrap token cannot be replaced or revoked through the API.
func TestTokens(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	ops := tg.newToken("ops-1", adminapi.RoleOperator)

	// The operator works, and the audit says who did it.
	if err := adminapi.DoJSON(context.Background(), tg.hc, http.MethodPost, tg.url(adminapi.PathDevices), ops,
		adminapi.DeviceRequest{ID: "dev-1", Group: "g"}, nil); err != nil {
		t.Fatalf("provision with the operator's token: %v", err)
	}
	if rec := tg.lastAudit(adminapi.KindProvision); rec.Device != "dev-1" || rec.Detail != "group g; by token ops-1" {
		t.Fatalf("provision record %+v: want the operator's token named", rec)
	}
	tg.grant("alice", "g") // with the bootstrap token
	if rec := tg.lastAudit(adminapi.KindPolicy); !strings.HasSuffix(rec.Detail, "; by token "+adminapi.BootstrapTokenName) {
		t.Fatalf("grant record %+v: want the bootstrap token named", rec)
	}
	if rec := tg.lastAudit(adminapi.KindToken); rec.Reason != "token created" || rec.Detail != "token ops-1, role operator; by token bootstrap" {
		t.Fatalf("token record %+v", rec)
	}

	// A key rotated by a second admin names it too (the key file's reload
	// writes that record).
	root := tg.newToken("root-2", adminapi.RoleAdmin)
	if err := adminapi.DoJSON(context.Background(), tg.hc, http.MethodPost, tg.url(adminapi.PathKeysRotate), root, nil, nil); err != nil {
		t.Fatalf("rotate with a second admin's token: %v", err)
	}
	if rec := tg.lastAudit(adminapi.KindKey); rec.Reason != "added" || !strings.HasSuffix(rec.Detail, "; by token root-2") {
		t.Fatalf("key record %+v: want the second admin's token named", rec)
	}
	tg.call(http.MethodPost, adminapi.PathTokensRevoke, adminapi.TokenName{Name: "root-2"}, nil)

	// Listed, with its last use; never the token.
	var list adminapi.TokenList
	tg.call(http.MethodGet, adminapi.PathTokens, nil, &list)
	if len(list.Tokens) != 1 || list.Tokens[0].Name != "ops-1" || list.Tokens[0].Role != adminapi.RoleOperator || list.Tokens[0].LastUsed.IsZero() {
		t.Fatalf("token list %+v", list)
	}

	// Refusals: a taken name, the bootstrap's name, a bad role or name.
	tg.callErr(http.MethodPost, adminapi.PathTokens, tg.token, adminapi.TokenRequest{Name: "ops-1", Role: adminapi.RoleAuditor}, http.StatusConflict)
	tg.callErr(http.MethodPost, adminapi.PathTokens, tg.token, adminapi.TokenRequest{Name: adminapi.BootstrapTokenName, Role: adminapi.RoleAdmin}, http.StatusBadRequest)
	tg.callErr(http.MethodPost, adminapi.PathTokens, tg.token, adminapi.TokenRequest{Name: "x", Role: "root"}, http.StatusBadRequest)
	tg.callErr(http.MethodPost, adminapi.PathTokens, tg.token, adminapi.TokenRequest{Name: "a b", Role: adminapi.RoleAuditor}, http.StatusBadRequest)
	tg.callErr(http.MethodPost, adminapi.PathTokensRevoke, tg.token, adminapi.TokenName{Name: adminapi.BootstrapTokenName}, http.StatusBadRequest)
	tg.callErr(http.MethodPost, adminapi.PathTokensRevoke, tg.token, adminapi.TokenName{Name: "nobody"}, http.StatusNotFound)
	// An operator cannot make itself an admin.
	tg.callErr(http.MethodPost, adminapi.PathTokens, ops, adminapi.TokenRequest{Name: "mine", Role: adminapi.RoleAdmin}, http.StatusForbidden)

	// The store holds the hash, not the token.
	db, err := os.ReadFile(filepath.Join(tg.dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(db, []byte(ops)) {
		t.Fatal("the store file holds the token itself")
	}

	// A console session of the token ends when it is revoked.
	c := newConsoleClient(tg)
	c.login(ops)
	if resp, _ := c.do(http.MethodGet, "/console/users", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("console users as operator: %d", resp.StatusCode)
	}
	var rv adminapi.TokenRevoked
	tg.call(http.MethodPost, adminapi.PathTokensRevoke, adminapi.TokenName{Name: "ops-1"}, &rv)
	if rv.Name != "ops-1" || rv.RevokedAt.IsZero() {
		t.Fatalf("revoked %+v", rv)
	}
	tg.callErr(http.MethodGet, adminapi.PathUsers, ops, nil, http.StatusUnauthorized)
	if resp, _ := c.do(http.MethodGet, "/console/users", nil, ""); resp.StatusCode == http.StatusOK {
		t.Fatal("console session of a revoked token still served")
	}
	if rec := tg.lastAudit(adminapi.KindToken); rec.Reason != "token revoked" || rec.Detail != "token ops-1; by token bootstrap" {
		t.Fatalf("revocation record %+v", rec)
	}
	tg.call(http.MethodGet, adminapi.PathTokens, nil, &list)
	if len(list.Tokens) != 0 {
		t.Fatalf("tokens after revocation: %+v", list)
	}
}

// TestTokenBackoffAllTokens: the backoff on wrong tokens holds every
// token: once a source has guessed, even a valid operator's token waits,
// and an operator's or auditor's success does not clear the count (so
// its holder cannot guess an admin token between its own requests).
func TestTokenBackoffAllTokens(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Now = func() time.Time { return time.Unix(1_900_000_000, 0) } // still
	tg := startGateway(t, cfg)
	ops := tg.newToken("ops", adminapi.RoleOperator)
	users := tg.url(adminapi.PathUsers)
	guesser := clientFrom(tg, "127.0.0.1")
	for i := range 6 {
		if code, _ := httpStatus(t, guesser, users, ops); code != http.StatusOK {
			t.Fatalf("operator %d: %d", i+1, code)
		}
		if code, _ := httpStatus(t, guesser, users, "guess-guess-guess-"+string(rune('a'+i))); code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i+1, code)
		}
	}
	if code, _ := httpStatus(t, guesser, users, "guess-guess-guess-z"); code != http.StatusTooManyRequests {
		t.Fatalf("seventh wrong token, operator requests in between: %d, want 429", code)
	}
	if code, _ := httpStatus(t, guesser, users, ops); code != http.StatusTooManyRequests {
		t.Fatalf("the operator's token while its source waits: %d, want 429", code)
	}
}

// TestConsoleTokens: an admin creates a token in the console and sees it
// once; the list shows it and revokes it; an operator's console shows
// only the operator's pages and lands on Users.
func TestConsoleTokens(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	admin := newConsoleClient(tg)
	admin.login(tg.token)
	_, page := admin.do(http.MethodGet, "/console/tokens", nil, "")
	if !strings.Contains(page, "No tokens yet") {
		t.Fatalf("tokens page before any:\n%s", page)
	}
	resp, page := admin.do(http.MethodPost, "/console/tokens/create", url.Values{"csrf": {admin.csrf}, "name": {"ops"}, "role": {"operator"}}, "")
	m := regexp.MustCompile(`<p class="secret" id="token">([0-9a-f]{64})</p>`).FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("create: %d\n%s", resp.StatusCode, page)
	}
	if _, page = admin.do(http.MethodGet, "/console/tokens", nil, ""); strings.Contains(page, m[1]) || !strings.Contains(page, "<td>ops</td><td>operator</td>") {
		t.Fatalf("tokens page after creation (the token must not be shown again):\n%s", page)
	}

	ops := newConsoleClient(tg)
	if resp := ops.loginTo(m[1], "/console/"); resp.Header.Get("Location") != "/console/users" {
		t.Fatalf("operator's landing: %q", resp.Header.Get("Location"))
	}
	_, page = ops.do(http.MethodGet, "/console/users", nil, "")
	for _, link := range []string{`href="/console/users"`, `href="/console/devices"`, `href="/console/policy"`} {
		if !strings.Contains(page, link) {
			t.Errorf("operator's nav lacks %s", link)
		}
	}
	for _, link := range []string{`href="/console/keys"`, `href="/console/audit"`, `href="/console/tokens"`, `href="/console/"`} {
		if strings.Contains(page, link) {
			t.Errorf("operator's nav shows %s", link)
		}
	}

	resp, _ = admin.do(http.MethodPost, "/console/tokens/revoke", url.Values{"csrf": {admin.csrf}, "name": {"ops"}}, "")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if _, page = admin.do(http.MethodGet, "/console/tokens", nil, ""); !strings.Contains(page, "Revoked token ops") || strings.Contains(page, "<td>ops</td>") {
		t.Fatalf("tokens page after revocation:\n%s", page)
	}
	if resp, _ := ops.do(http.MethodGet, "/console/users", nil, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the revoked operator's session: %d", resp.StatusCode)
	}
}

// loginTo is login with the page to go to after it.
func (c *consoleClient) loginTo(token, next string) *http.Response {
	c.t.Helper()
	_, page := c.do(http.MethodGet, "/console/login", nil, "")
	m := regexp.MustCompile(`name="nonce" value="([0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		c.t.Fatalf("login page without a nonce:\n%s", page)
	}
	resp, _ := c.do(http.MethodPost, "/console/login", url.Values{"nonce": {m[1]}, "token": {token}, "next": {next}}, "")
	return resp
}

package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
)

// Admin roles (as Kerberos' kadm5.acl). routeRoles is the one place that
// says which roles may use each admin API route and each console action:
// auth (below) checks it for every API route, and the console asks
// allowed for every action before running it. A route that is not in the
// table is refused to every token, and TestRouteRoles fails until it is
// added, so a new route cannot be left open by mistake.

// roleMetrics is the Prometheus scraper's token (Config.MetricsToken): not
// a role a token can be given, and accepted only where the table names it.
const roleMetrics adminapi.Role = "metrics"

var (
	admins    = []adminapi.Role{adminapi.RoleAdmin}
	operators = []adminapi.Role{adminapi.RoleAdmin, adminapi.RoleOperator}
	auditors  = []adminapi.Role{adminapi.RoleAdmin, adminapi.RoleAuditor}
	everyone  = []adminapi.Role{adminapi.RoleAdmin, adminapi.RoleOperator, adminapi.RoleAuditor}
	anyRole   = []adminapi.Role{adminapi.RoleAdmin, adminapi.RoleOperator, adminapi.RoleAuditor}
)

// routeRoles maps an admin API route (its ServeMux pattern) or a console
// action ("METHOD /console/path") to the roles that may use it.
var routeRoles = map[string][]adminapi.Role{
	// The admin API.
	"POST " + adminapi.PathEnrolCodes:      operators,
	"POST " + adminapi.PathDevices:         operators,
	"POST " + adminapi.PathDevicesBatch:    operators,
	"POST " + adminapi.PatternUserRevoke:   operators,
	"POST " + adminapi.PatternDeviceRevoke: operators,
	"POST " + adminapi.PathUsersRevoke:     operators,
	"POST " + adminapi.PathDevicesRevoke:   operators,
	"POST " + adminapi.PathGrants:          operators,
	"DELETE " + adminapi.PathGrants:        operators,
	"GET " + adminapi.PathUsers:            operators,
	"GET " + adminapi.PathDevices:          operators,
	"GET " + adminapi.PathGrants:           operators,
	"POST " + adminapi.PatternUserUnlock:   operators,
	"POST " + adminapi.PathUsersUnlock:     operators,
	"GET " + adminapi.PathLocks:            operators,
	"GET " + adminapi.PathAudit:            auditors,
	"GET " + adminapi.PathStats:            auditors,
	"GET " + adminapi.PathStatus:           everyone,
	"GET " + adminapi.PathMetrics:          append(slices.Clone(auditors), roleMetrics),
	"GET " + adminapi.PathKeys:             admins,
	"POST " + adminapi.PathKeysRotate:      admins,
	"POST " + adminapi.PatternKeyRetire:    admins,
	"POST " + adminapi.PathBackup:          admins, // the archive holds the key file
	"GET " + adminapi.PathTokens:           admins,
	"POST " + adminapi.PathTokens:          admins,
	"POST " + adminapi.PathTokensRevoke:    admins,

	// The console's actions (internal/gateway/console).
	"GET /console/":                    admins, // the overview shows keys, audit and the fleet
	"GET /console/users":               operators,
	"POST /console/users/enrol-code":   operators,
	"GET /console/users/revoke":        operators,
	"POST /console/users/revoke":       operators,
	"POST /console/users/unlock":       operators,
	"GET /console/devices":             operators,
	"POST /console/devices/provision":  operators,
	"POST /console/devices/batch":      operators,
	"POST /console/devices/credential": operators,
	"GET /console/devices/revoke":      operators,
	"POST /console/devices/revoke":     operators,
	"GET /console/policy":              operators,
	"POST /console/policy/grant":       operators,
	"POST /console/policy/ungrant":     operators,
	"GET /console/keys":                admins,
	"POST /console/keys/rotate":        admins,
	"GET /console/keys/retire":         admins,
	"POST /console/keys/retire":        admins,
	"GET /console/audit":               auditors,
	"GET /console/tokens":              admins,
	"POST /console/tokens/create":      admins,
	"POST /console/tokens/revoke":      admins,
	"POST /console/logout":             anyRole,
}

// publicRoutes need no token: what a user enrolling or a client pinning
// the certificate reads, and the console's mount (which logs in and then
// checks each action itself) with its redirects.
var publicRoutes = map[string]bool{
	"GET " + adminapi.PathInfo:      true,
	"POST " + adminapi.PathRegister: true,
	adminapi.PathConsole:            true,
	"GET /console":                  true,
	"GET /{$}":                      true,
}

// allowed reports whether role may use route (a pattern or console action
// of routeRoles).
func allowed(role adminapi.Role, route string) bool {
	return slices.Contains(routeRoles[route], role)
}

// rolesOf words the roles a route admits, for a refusal.
func rolesOf(route string) string {
	var out []string
	for _, r := range routeRoles[route] {
		if r != roleMetrics {
			out = append(out, string(r))
		}
	}
	if len(out) == 0 {
		return "no token (the route has no entry in the role table)"
	}
	return "a token with role " + strings.Join(out, " or ")
}

// bootstrapCaller is the gateway's own admin token, DATA/admin-token or
// TAGAUTH_ADMIN_TOKEN: an admin, outside the store.
var bootstrapCaller = adminsvc.Caller{Token: adminapi.BootstrapTokenName, Role: adminapi.RoleAdmin}

// tokenAuth authenticates the admin port's bearer tokens and checks their
// role against routeRoles: the one place the admin API, the metrics route
// and the console ask who is calling.
type tokenAuth struct {
	bootstrap  [sha256.Size]byte // DATA/admin-token or TAGAUTH_ADMIN_TOKEN
	metrics    [sha256.Size]byte // the metrics token, when hasMetrics
	hasMetrics bool
	svc        *adminsvc.Service // the stored tokens
	backoff    *tokenGuard       // adminguard.go: per-source backoff
	now        func() time.Time
}

// callerOf finds who holds the token whose SHA-256 is sum: the bootstrap
// admin token, the metrics token where route admits it, or a stored
// token. ok is false for a token nobody holds; err is a store failure.
func (ta *tokenAuth) callerOf(ctx context.Context, sum [sha256.Size]byte, route string) (c adminsvc.Caller, ok bool, err error) {
	if subtle.ConstantTimeCompare(sum[:], ta.bootstrap[:]) == 1 {
		return bootstrapCaller, true, nil
	}
	if ta.hasMetrics && allowed(roleMetrics, route) &&
		subtle.ConstantTimeCompare(sum[:], ta.metrics[:]) == 1 {
		return adminsvc.Caller{Token: "metrics", Role: roleMetrics}, true, nil
	}
	return ta.svc.AuthenticateHash(ctx, sum)
}

// identify checks a request's token for route behind the per-source
// backoff (adminguard.go), which every token shares: a positive wait
// means the token was not checked. Only an admin clears the source's
// count of wrong tokens: a weaker token (an auditor's, the metrics
// token) would otherwise let its holder guess an admin token between
// its own requests without ever waiting.
func (ta *tokenAuth) identify(r *http.Request, tok, route string) (c adminsvc.Caller, ok bool, wait time.Duration, err error) {
	tg := ta.backoff
	src, now := sourceOf(r.RemoteAddr), ta.now()
	if wait := tg.wait(src, now); wait > 0 {
		return c, false, wait, nil
	}
	sum := sha256.Sum256([]byte(tok))
	if tok != "" {
		c, ok, err = ta.callerOf(r.Context(), sum, route)
	}
	switch {
	case err != nil:
		return c, false, 0, err
	case !ok:
		tg.failed(src, auditjson.SanitizeID([]byte(r.URL.Path)), now)
	case c.Role == adminapi.RoleAdmin:
		tg.succeeded(src)
	}
	return c, ok, 0, nil
}

// auth admits the requests whose bearer token's role may use the route
// (r.Pattern, set by the mux) and passes the caller on in the request's
// context, for the audit. Wrong tokens get 401 (and the backoff), a
// store failure 503, a role the route does not admit 403.
func (ta *tokenAuth) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := r.Pattern
		tok, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !bearer {
			tok = ""
		}
		c, ok, wait, err := ta.identify(r, tok, route)
		switch {
		case wait > 0:
			tooMany(w, wait)
			return
		case err != nil:
			writeError(w, statusOf(err), err.Error())
			return
		case !ok && route == "GET "+adminapi.PathMetrics:
			w.Header().Set("WWW-Authenticate", `Bearer realm="tagauth metrics"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong token: send Authorization: Bearer TOKEN with the admin token or the metrics token")
			return
		case !ok:
			w.Header().Set("WWW-Authenticate", `Bearer realm="tagauth admin"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer TOKEN (the token is in the gateway's DATA/admin-token, or TAGAUTH_ADMIN_TOKEN, or one an admin created with tagauth gateway token add)")
			return
		case !allowed(c.Role, route):
			writeError(w, http.StatusForbidden, fmt.Sprintf("token %q has role %s; %s needs %s", c.Token, c.Role, route, rolesOf(route)))
			return
		}
		h(w, r.WithContext(adminsvc.WithCaller(r.Context(), c)))
	})
}

// consoleLogin checks a console login's token: any role may log in, and
// each action is then checked against routeRoles.
func (ta *tokenAuth) consoleLogin(r *http.Request, tok string) (adminsvc.Caller, bool, time.Duration, error) {
	return ta.identify(r, tok, "POST /console/login")
}

// consoleRecheck finds a console session's caller again from its token's
// hash, so that a token revoked or a role changed takes effect at the
// session's next request, not at its end.
func (ta *tokenAuth) consoleRecheck(ctx context.Context, sum [sha256.Size]byte) (adminsvc.Caller, bool, error) {
	return ta.callerOf(ctx, sum, "POST /console/login")
}

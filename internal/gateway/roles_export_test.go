package gateway

import (
	"maps"
	"net/http"
	"slices"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// RouteRoles is the table of roles, for the tests.
func RouteRoles() map[string][]adminapi.Role { return maps.Clone(routeRoles) }

// IsPublicRoute reports whether a route needs no token.
func IsPublicRoute(route string) bool { return publicRoutes[route] }

// AdminRoutes lists every pattern the admin port serves, by adding the
// routes to a recorder as the gateway adds them to its mux.
func AdminRoutes(g *Gateway) []string {
	var rec routeRecorder
	g.routes(&rec)
	slices.Sort(rec)
	return rec
}

// ConsoleActions lists every console action.
func ConsoleActions(g *Gateway) []string { return g.console.Actions() }

type routeRecorder []string

func (r *routeRecorder) Handle(pattern string, _ http.Handler) { *r = append(*r, pattern) }

func (r *routeRecorder) HandleFunc(pattern string, _ func(http.ResponseWriter, *http.Request)) {
	*r = append(*r, pattern)
}

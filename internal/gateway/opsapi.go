package gateway

import (
	"fmt"
	"net/http"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway/console"
)

// The operator's side of the admin port beyond the admin API's JSON
// routes (admin.go): the Prometheus metrics and the web console, which
// calls the admin service in process, so that the console can do nothing
// the CLI cannot. Tokens and roles are checked in roles.go.
//
//	GET  /metrics                       Prometheus text format (admin, auditor or metrics token)
//	GET  /console/                      the web console

// consoleMount is the console the admin mux serves under /console/.
type consoleMount = *console.Console

// openOps prepares lockout, rate limits, metrics, the admin service and
// the console. Open calls it before binding the admin port.
func (g *Gateway) openOps() error {
	g.guard = newGuard(&g.cfg)
	g.guard.tokens = newTokenGuard(g.log.With("part", "admin"))
	g.metrics = newMetrics(g)
	if err := g.openAdmin(); err != nil { // adminwire.go
		return err
	}
	g.tokens = &tokenAuth{bootstrap: g.tokenHash, metrics: g.metrics.metricsTokenHash, hasMetrics: g.metrics.hasMetricsToken,
		svc: g.admin, backoff: g.guard.tokens, now: g.now} // roles.go
	c, err := console.New(console.Config{
		Admin:      g.admin,
		CheckToken: g.tokens.consoleLogin,
		Recheck:    g.tokens.consoleRecheck,
		Allowed:    allowed,
		Logger:     g.log.With("part", "console"),
		Now:        g.now,
		Profile:    g.profile.String(),
	})
	if err != nil {
		return fmt.Errorf("gateway: console: %w", err)
	}
	g.console = c
	return nil
}

// opsRoutes adds the routes of this file to the admin mux.
func (g *Gateway) opsRoutes(mux router) {
	mux.Handle("GET "+adminapi.PathMetrics, g.tokens.auth(g.serveMetrics))
	mux.Handle(adminapi.PathConsole, g.console)
	mux.Handle("GET /console", http.RedirectHandler(adminapi.PathConsole, http.StatusMovedPermanently))
	mux.Handle("GET /{$}", http.RedirectHandler(adminapi.PathConsole, http.StatusFound))
}

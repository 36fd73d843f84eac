package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/gateway/console"
)

// The operator's side of the admin port beyond the admin API's JSON
// routes (admin.go): the Prometheus metrics, the admin token's checks and
// the web console, which calls the admin service in process, so that the
// console can do nothing the CLI cannot.
//
//	GET  /metrics                       Prometheus text format (admin or metrics token)
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
	c, err := console.New(console.Config{
		Admin:      g.admin,
		CheckToken: g.checkConsoleToken,
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
func (g *Gateway) opsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+adminapi.PathMetrics, g.serveMetrics)
	mux.Handle(adminapi.PathConsole, g.console)
	mux.Handle("GET /console", http.RedirectHandler(adminapi.PathConsole, http.StatusMovedPermanently))
	mux.Handle("GET /{$}", http.RedirectHandler(adminapi.PathConsole, http.StatusFound))
}

// checkAdminToken tells whether tok is the admin token, in constant time.
func (g *Gateway) checkAdminToken(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], g.tokenHash[:]) == 1
}

// checkConsoleToken is checkAdminToken for the console's login, behind the
// same per-source backoff as the API's: a positive wait means the token
// was not checked.
func (g *Gateway) checkConsoleToken(r *http.Request, tok string) (bool, time.Duration) {
	return g.tokenCheck(r, tok, g.checkAdminToken)
}

// tokenCheck runs check on a request's token unless its source must wait
// after wrong tokens; it counts the outcome for the backoff.
func (g *Gateway) tokenCheck(r *http.Request, tok string, check func(string) bool) (bool, time.Duration) {
	tg := g.guard.tokens
	src, now := sourceOf(r.RemoteAddr), g.now()
	if wait := tg.wait(src, now); wait > 0 {
		return false, wait
	}
	if !check(tok) {
		tg.failed(src, auditjson.SanitizeID([]byte(r.URL.Path)), now)
		return false, 0
	}
	// Only the admin token clears the count: the read-only metrics token
	// would otherwise let its holder guess the admin token between
	// scrapes without ever waiting.
	if g.checkAdminToken(tok) {
		tg.succeeded(src)
	}
	return true, 0
}

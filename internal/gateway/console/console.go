// Package console is the gateway's web console: server-rendered pages on
// the admin port under /console/, for operators who would rather click
// than type.
//
// # Everything goes through the admin service
//
// The console holds no state of the gateway's and has no power of its
// own: every page reads, and every form writes, through the admin service
// (internal/gateway/adminsvc), the same one the HTTPS admin API that the
// CLI ("tagauth gateway ...") calls is an adapter of. So every action in
// the console is one the CLI has, with the same checks and the same audit
// records (their source is the browser's address).
//
// # Sessions and forms
//
// An operator logs in with an admin token of any role (adminapi.Role);
// every action is then checked against the gateway's one table of roles
// (Config.Allowed) before it runs, and the session's token is checked
// again at each request, so that a token revoked ends its sessions at
// once. The nav shows only the pages the role may open. The console keeps a
// server-side session and gives the browser only a random session id,
// in a cookie that is Secure, HttpOnly, SameSite=Strict and __Host-
// prefixed. Every POST form carries the session's CSRF token, compared in
// constant time, and a POST whose Origin header names another site is
// refused. Pages are sent with a Content-Security-Policy that allows no
// script at all (the console has none) and no framing. Sessions end after
// IdleTimeout without a request, after MaxLife, or on logout; at most
// MaxSessions live at once (the oldest goes first).
//
// One-time secrets (an enrolment code, a device credential) are shown or
// downloaded once: a credential is kept in the session until its single
// download, for at most CredentialTTL, then wiped.
package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
)

// Session limits.
const (
	IdleTimeout   = 30 * time.Minute
	MaxLife       = 12 * time.Hour
	MaxSessions   = 256
	CredentialTTL = 10 * time.Minute
)

// Cookie names. The __Host- prefix makes the browser refuse them unless
// Secure, for the whole host, without a Domain.
const (
	sessionCookie = "__Host-tagauth-console"
	loginCookie   = "__Host-tagauth-login"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures a Console.
type Config struct {
	// Admin is the gateway's admin service, which every page reads and
	// every form writes through. Required.
	Admin *adminsvc.Service
	// CheckToken finds who holds a login form's token (ok false: nobody);
	// a positive wait means the request's source must wait that long
	// after wrong tokens, and the token was not checked; err is the
	// gateway's failure. Required.
	CheckToken func(r *http.Request, token string) (c adminsvc.Caller, ok bool, wait time.Duration, err error)
	// Recheck finds a session's caller again from its token's SHA-256,
	// at each request: false once the token is revoked. Required.
	Recheck func(ctx context.Context, tokenHash [32]byte) (c adminsvc.Caller, ok bool, err error)
	// Allowed reports whether role may use action ("METHOD /console/path",
	// see Actions): the gateway's table of roles. Required.
	Allowed func(role adminapi.Role, action string) bool
	// Logger receives login and logout events; default discards.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Profile is shown in the header ("hardened" or "classic").
	Profile string
}

// Console is the web console's http.Handler, mounted at /console/.
type Console struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	admin  *adminsvc.Service
	pages  map[string]*template.Template
	static http.Handler

	mu       sync.Mutex
	sessions map[string]*session
}

// session is one logged-in browser.
type session struct {
	id      string
	csrf    string
	created time.Time
	seen    time.Time
	flash   []flash
	pending map[string]*pendingCred
	caller  adminsvc.Caller // who logged in; rechecked at each request
	token   [32]byte        // the SHA-256 of their token, for Recheck
}

type flash struct {
	Error bool
	Text  string
}

// pendingCred is a device credential waiting for its single download.
type pendingCred struct {
	device  string
	data    []byte
	zip     bool // a batch's credentials, one zip file (batch.go)
	expires time.Time
}

// New parses the console's templates.
func New(cfg Config) (*Console, error) {
	if cfg.CheckToken == nil || cfg.Admin == nil || cfg.Recheck == nil || cfg.Allowed == nil {
		return nil, errors.New("console: Config.CheckToken, Recheck, Allowed and Admin are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, log: cfg.Logger, now: cfg.Now, admin: cfg.Admin, sessions: map[string]*session{}, pages: map[string]*template.Template{}}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base := strings.TrimPrefix(n, "templates/")
		if base == "layout.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", base, err)
		}
		c.pages[strings.TrimSuffix(base, ".html")] = t
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	c.static = http.StripPrefix("/console/static/", http.FileServerFS(sub))
	return c, nil
}

// securityHeaders are set on every console answer.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin") // no-referrer would make browsers send "Origin: null" on our own forms
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	p := r.URL.Path
	if strings.HasPrefix(p, "/console/static/") {
		w.Header().Set("Cache-Control", "max-age=3600")
		c.static.ServeHTTP(w, r)
		return
	}
	if r.Method == http.MethodPost && !sameOrigin(r) {
		http.Error(w, "cross-site form refused", http.StatusForbidden)
		return
	}
	if p == "/console/login" {
		switch r.Method {
		case http.MethodGet:
			c.loginForm(w, r, "")
		case http.MethodPost:
			c.login(w, r)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
		return
	}
	s := c.session(r)
	if s == nil {
		if r.Method == http.MethodGet {
			http.Redirect(w, r, "/console/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		http.Error(w, "not logged in (or the session ended): log in again", http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodPost {
		if err := parseForm(w, r); err != nil { // batch.go: the CSV upload is multipart
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) != 1 {
			http.Error(w, "the form's CSRF token is missing or stale: reload the page and try again", http.StatusForbidden)
			return
		}
	}
	h, ok := c.route(r.Method, p)
	if !ok {
		c.render(w, r, s, http.StatusNotFound, "error", "Not found", "There is no such console page.")
		return
	}
	caller, ok, err := c.cfg.Recheck(r.Context(), s.token)
	if err != nil {
		c.render(w, r, s, http.StatusServiceUnavailable, "error", "Error", "Checking your token failed: "+err.Error())
		return
	}
	if !ok {
		c.mu.Lock()
		c.dropLocked(s)
		c.mu.Unlock()
		c.log.Info("console session ended: its token was revoked", "token", s.caller.Token, "source", r.RemoteAddr)
		http.Error(w, "your token was revoked: the session has ended", http.StatusUnauthorized)
		return
	}
	if action := r.Method + " " + p; !c.cfg.Allowed(caller.Role, action) {
		c.render(w, r, s, http.StatusForbidden, "error", "Not allowed",
			fmt.Sprintf("Your token %q has the %s role, which may not use this page or action.", caller.Token, caller.Role))
		return
	}
	h(w, r.WithContext(adminsvc.WithCaller(r.Context(), caller)), s)
}

// sameOrigin accepts a POST without an Origin header (old browsers, the
// CSRF token still applies) or with this host's.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

type handler func(w http.ResponseWriter, r *http.Request, s *session)

type routeKey struct{ m, p string }

// Actions lists every console action as "METHOD /console/path", the keys
// of the gateway's table of roles.
func (c *Console) Actions() []string {
	var out []string
	for k := range c.routes() {
		out = append(out, k.m+" "+k.p)
	}
	sort.Strings(out)
	return out
}

func (c *Console) route(method, path string) (handler, bool) {
	h, ok := c.routes()[routeKey{method, path}]
	return h, ok
}

func (c *Console) routes() map[routeKey]handler {
	type key = routeKey
	return map[key]handler{
		{"GET", "/console/"}:                    c.overview,
		{"GET", "/console/users"}:               c.users,
		{"POST", "/console/users/enrol-code"}:   c.enrolCode,
		{"GET", "/console/users/revoke"}:        c.confirmRevokeUser,
		{"POST", "/console/users/revoke"}:       c.revokeUser,
		{"POST", "/console/users/unlock"}:       c.unlockUser,
		{"GET", "/console/devices"}:             c.devices,
		{"POST", "/console/devices/provision"}:  c.provision,
		{"POST", "/console/devices/batch"}:      c.provisionBatch, // batch.go
		{"POST", "/console/devices/credential"}: c.downloadCredential,
		{"GET", "/console/devices/revoke"}:      c.confirmRevokeDevice,
		{"POST", "/console/devices/revoke"}:     c.revokeDevice,
		{"GET", "/console/policy"}:              c.policy,
		{"POST", "/console/policy/grant"}:       c.grant,
		{"POST", "/console/policy/ungrant"}:     c.ungrant,
		{"GET", "/console/keys"}:                c.keys,
		{"POST", "/console/keys/rotate"}:        c.rotateKey,
		{"GET", "/console/keys/retire"}:         c.confirmRetireKey,
		{"POST", "/console/keys/retire"}:        c.retireKey,
		{"GET", "/console/audit"}:               c.audit,
		{"POST", "/console/logout"}:             c.logout,
		{"GET", "/console/tokens"}:              c.tokens,
		{"POST", "/console/tokens/create"}:      c.createToken,
		{"POST", "/console/tokens/revoke"}:      c.revokeToken,
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("console: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// session returns the live session of the request's cookie, or nil.
func (c *Console) session(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sessions[ck.Value]
	now := c.now()
	if s == nil {
		return nil
	}
	if now.Sub(s.seen) > IdleTimeout || now.Sub(s.created) > MaxLife {
		c.dropLocked(s)
		return nil
	}
	s.seen = now
	return s
}

// dropLocked ends a session and wipes what it held. c.mu is held.
func (c *Console) dropLocked(s *session) {
	for _, p := range s.pending {
		clear(p.data)
	}
	delete(c.sessions, s.id)
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request, msg string) {
	status := http.StatusOK
	if msg != "" {
		status = http.StatusUnauthorized
	}
	c.loginFormStatus(w, r, status, msg)
}

func (c *Console) loginFormStatus(w http.ResponseWriter, r *http.Request, status int, msg string) {
	nonce := randomHex(16)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: nonce, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 600})
	data := struct {
		Nonce, Next, Error string
	}{nonce, safeNext(r.FormValue("next")), msg}
	c.renderPage(w, status, "login", page{Title: "Log in", Profile: c.cfg.Profile, Data: data})
}

// safeNext keeps a post-login redirect inside the console.
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/console/") || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\\r\n") {
		return "/console/"
	}
	return s
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	ck, err := r.Cookie(loginCookie)
	if err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostForm.Get("nonce"))) != 1 {
		c.loginForm(w, r, "The login form expired: try again.")
		return
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	caller, ok, wait, err := c.cfg.CheckToken(r, tok)
	if wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)+1))
		c.loginFormStatus(w, r, http.StatusTooManyRequests, fmt.Sprintf("Too many wrong tokens from your address: try again in %s.", (wait+time.Second).Round(time.Second)))
		return
	}
	if err != nil {
		c.loginFormStatus(w, r, http.StatusServiceUnavailable, "Checking the token failed: "+err.Error())
		return
	}
	if !ok {
		// CheckToken logs wrong tokens in aggregate.
		c.loginForm(w, r, "That is not the admin token, nor a token an admin created.")
		return
	}
	now := c.now()
	s := &session{id: randomHex(32), csrf: randomHex(32), created: now, seen: now, pending: map[string]*pendingCred{},
		caller: caller, token: sha256.Sum256([]byte(tok))}
	c.mu.Lock()
	for len(c.sessions) >= MaxSessions {
		var oldest *session
		for _, o := range c.sessions {
			if oldest == nil || o.seen.Before(oldest.seen) {
				oldest = o
			}
		}
		c.dropLocked(oldest)
	}
	c.sessions[s.id] = s
	c.mu.Unlock()
	c.log.Info("console login", "token", caller.Token, "role", string(caller.Role), "source", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.id, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(MaxLife / time.Second)})
	next := safeNext(r.PostForm.Get("next"))
	if path, _, _ := strings.Cut(next, "?"); !c.cfg.Allowed(caller.Role, "GET "+path) {
		next = c.landing(caller.Role)
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// landing is the first page a role may open: the overview, the users or
// the audit log.
func (c *Console) landing(role adminapi.Role) string {
	for _, p := range []string{"/console/", "/console/users", "/console/audit"} {
		if c.cfg.Allowed(role, "GET "+p) {
			return p
		}
	}
	return "/console/login"
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	c.mu.Lock()
	c.dropLocked(s)
	c.mu.Unlock()
	c.log.Info("console logout", "source", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// addFlash queues a message for the next page of the session.
func (c *Console) addFlash(s *session, isErr bool, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.flash = append(s.flash, flash{Error: isErr, Text: fmt.Sprintf(format, args...)})
}

func (c *Console) takeFlash(s *session) []flash {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Profile string
	CSRF    string
	Flash   []flash
	Data    any
	Caller  adminsvc.Caller
	allowed func(adminapi.Role, string) bool
}

// Can reports whether the page's caller may use action ("GET
// /console/keys"): the nav and forms show only what the role may use.
func (p page) Can(action string) bool {
	return p.allowed != nil && p.allowed(p.Caller.Role, action)
}

func (c *Console) render(w http.ResponseWriter, _ *http.Request, s *session, status int, name, title string, data any) {
	nav := name
	switch name {
	case "confirm", "code", "credential", "error":
		nav = ""
	}
	c.renderPage(w, status, name, page{Title: title, Nav: nav, Profile: c.cfg.Profile, CSRF: s.csrf, Flash: c.takeFlash(s), Data: data,
		Caller: s.caller, allowed: c.cfg.Allowed})
}

func (c *Console) renderPage(w http.ResponseWriter, status int, name string, p page) {
	t := c.pages[name]
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error("console template failed", "page", name, "err", err)
		http.Error(w, "the console failed to render this page (see the gateway log)", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"dash": func(s string) string {
		if s == "" {
			return "-"
		}
		return showID(s)
	},
	"show":     showID,
	"lockWhat": lockWhat,
	"shell":    shellWord,
	"sortedKeys": func(m map[string]int) []string {
		ks := make([]string, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return ks
	},
}

// showID is an identity (or any attacker-chosen text) as the console shows
// it: as is when every character is printable, otherwise quoted with
// escapes (strconv.QuoteToASCII), so that control characters and bidi
// overrides (U+202E) cannot make a page say something else than it does.
// HTML escaping is the templates' job; this is the text's.
func showID(s string) string {
	if !utf8.ValidString(s) {
		return strconv.QuoteToASCII(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

// shellWord quotes s for a POSIX shell command line shown to copy.
func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r < utf8.RuneSelf && (r == '-' || r == '_' || r == '.' || r == '@' || r == '+' || r == ':' || r == '/' ||
			('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z')))
	}) < 0 {
		return s
	}
	if showID(s) != s {
		return showID(s) // not printable: no shell word can be copied faithfully from a page
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

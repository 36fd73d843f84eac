package gateway_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// consoleClient is a browser-like client of the console: cookies, no
// redirects followed, so that each answer can be checked.
type consoleClient struct {
	t    testing.TB
	tg   *testGW
	hc   *http.Client
	csrf string
}

func newConsoleClient(tg *testGW) *consoleClient {
	jar, _ := cookiejar.New(nil)
	hc := *tg.hc
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &consoleClient{t: tg.t, tg: tg, hc: &hc}
}

func (c *consoleClient) do(method, path string, form url.Values, origin string) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.tg.url(path), body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(string(b)); m != nil {
		c.csrf = m[1]
	}
	return resp, string(b)
}

func (c *consoleClient) login(token string) *http.Response {
	c.t.Helper()
	_, page := c.do(http.MethodGet, "/console/login", nil, "")
	m := regexp.MustCompile(`name="nonce" value="([0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		c.t.Fatalf("login page without a nonce:\n%s", page)
	}
	resp, _ := c.do(http.MethodPost, "/console/login", url.Values{"nonce": {m[1]}, "token": {token}, "next": {"/console/users"}}, "")
	return resp
}

// TestConsoleSecurity: the console needs a login with the admin token; its
// cookie is Secure, HttpOnly and SameSite=Strict; every form needs the
// CSRF token and a same-site origin; pages allow no script.
func TestConsoleSecurity(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	c := newConsoleClient(tg)

	resp, _ := c.do(http.MethodGet, "/console/users", nil, "")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/login?next=") {
		t.Fatalf("not logged in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := c.login("wrong-token-wrong-token"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	resp = c.login(tg.token)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/users" {
		t.Fatalf("login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	var sc string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "__Host-tagauth-console=") {
			sc = v
		}
	}
	for _, attr := range []string{"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(sc, attr) {
			t.Errorf("session cookie %q lacks %s", sc, attr)
		}
	}
	if strings.Contains(sc, tg.token) {
		t.Fatal("the admin token is in the cookie")
	}
	resp, page := c.do(http.MethodGet, "/console/users", nil, "")
	if resp.StatusCode != http.StatusOK || c.csrf == "" {
		t.Fatalf("users page: %d", resp.StatusCode)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") || strings.Contains(page, "<script") {
		t.Errorf("CSP %q; the page must run no script", csp)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", resp.Header)
	}

	form := url.Values{"user": {"carol"}, "ttl": {"15m"}}
	if resp, _ := c.do(http.MethodPost, "/console/users/enrol-code", form, ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST without the CSRF token: %d", resp.StatusCode)
	}
	form.Set("csrf", c.csrf)
	if resp, _ := c.do(http.MethodPost, "/console/users/enrol-code", form, "https://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST from another origin: %d", resp.StatusCode)
	}
	resp, page = c.do(http.MethodPost, "/console/users/enrol-code", form, tg.g.AdminURL())
	if resp.StatusCode != http.StatusOK || !regexp.MustCompile(`id="code">[A-Z2-7]{4}-`).MatchString(page) {
		t.Fatalf("enrol code: %d\n%s", resp.StatusCode, page)
	}
	// The console's action is in the audit log like the CLI's.
	if rec := tg.lastAudit("enrol"); rec.User != "carol" || rec.Reason != "code issued" {
		t.Fatalf("audit of the console's enrol code: %+v", rec)
	}
	// An API error comes back as a message on the page.
	form.Set("user", "bad id\x00")
	resp, _ = c.do(http.MethodPost, "/console/users/enrol-code", form, "")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("bad user id: %d", resp.StatusCode)
	}
	if _, page := c.do(http.MethodGet, "/console/users", nil, ""); !strings.Contains(page, `class="flash error"`) {
		t.Fatalf("no error shown:\n%s", page)
	}
	// Every page renders.
	for _, p := range []string{"/console/", "/console/devices", "/console/policy", "/console/keys", "/console/audit", "/console/audit?kind=enrol&since=1h"} {
		if resp, page := c.do(http.MethodGet, p, nil, ""); resp.StatusCode != http.StatusOK || !strings.Contains(page, "</html>") {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := c.do(http.MethodGet, "/console/static/console.css", nil, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("stylesheet: %d", resp.StatusCode)
	}
	// Logout ends the session on the server, not just in the browser.
	jarCookies := c.hc.Jar.Cookies(mustURL(t, tg.g.AdminURL()+"/console/"))
	c.do(http.MethodPost, "/console/logout", url.Values{"csrf": {c.csrf}}, "")
	old := newConsoleClient(tg)
	old.hc.Jar.SetCookies(mustURL(t, tg.g.AdminURL()+"/console/"), jarCookies)
	if resp, _ := old.do(http.MethodGet, "/console/users", nil, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("session cookie still works after logout: %d", resp.StatusCode)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

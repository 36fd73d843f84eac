package gateway_test

import (
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/protocol"
)

// oddIDs are valid identities of the spec (1 to 64 bytes of UTF-8, no
// NUL) that paths, routers, terminals and browsers treat specially.
var oddIDs = []string{
	".", "..", "...", "/", "%2F", "%2E%2E", "a b", " ", "../admin", "a/../b", "?x=1", "#top", ".hidden",
	"\u202eevil.exe", "tab\there", "line\nbreak", "\x7f",
	strings.Repeat("é", 32), // 64 bytes
}

// TestOddIDsAdminAPI: every odd identity can be enrolled, listed,
// unlocked and revoked through the admin API (ids in paths are escaped
// with adminapi.PathSegment), and the console shows it safely and
// unlocks and revokes it.
func TestOddIDsAdminAPI(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	c := newConsoleClient(tg)
	if resp := c.login(tg.token); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("console login: %d", resp.StatusCode)
	}
	for _, id := range oddIDs {
		t.Run(strconv.QuoteToASCII(id), func(t *testing.T) {
			tg.t = t
			tg.enrol(id)
			tg.provision(id, "")
			var un adminapi.Unlocked
			tg.call(http.MethodPost, "/v1/users/unlock", adminapi.IDRequest{ID: id}, &un)
			if un.ID != id {
				t.Fatalf("unlock answered for %q", un.ID)
			}
			// The path routes take every id but "/" (which Go's router
			// cannot match), escaped with PathSegment.
			if id != "/" {
				un = adminapi.Unlocked{}
				tg.call(http.MethodPost, "/v1/users/"+adminapi.PathSegment(id)+"/unlock", nil, &un)
				if un.ID != id {
					t.Fatalf("unlock by path answered for %q", un.ID)
				}
			}
			// The console: the users page shows the id without its raw
			// control or bidi characters (in the text: attributes, such
			// as the forms' hidden fields, carry it intact and are not
			// shown); its forms carry it intact.
			_, page := c.do(http.MethodGet, "/console/users", nil, "")
			page = regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, "<>")
			if strings.ContainsAny(page, "\u202e\x7f") {
				t.Fatalf("users page holds a raw control or bidi character")
			}
			if shown := strconv.QuoteToASCII(id); strings.ContainsAny(id, "\u202e\x7f\t\n") &&
				!strings.Contains(page, "<>"+template.HTMLEscapeString(shown)+"<>") {
				t.Fatalf("users page does not show %s", shown)
			}
			resp, _ := c.do(http.MethodPost, "/console/users/unlock", url.Values{"csrf": {c.csrf}, "id": {id}}, "")
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/users" {
				t.Fatalf("console unlock: %d %s", resp.StatusCode, resp.Header.Get("Location"))
			}
			_, page = c.do(http.MethodGet, "/console/users", nil, "")
			if !strings.Contains(page, "was not locked") || strings.Contains(page, "Redirect") {
				t.Fatalf("console unlock of %q did not reach the API:\n%s", id, page)
			}
			resp, _ = c.do(http.MethodPost, "/console/devices/revoke", url.Values{"csrf": {c.csrf}, "id": {id}}, "")
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("console revoke device: %d", resp.StatusCode)
			}
			var rv adminapi.Revoked
			tg.call(http.MethodPost, "/v1/users/revoke", adminapi.IDRequest{ID: id}, &rv)
			if rv.ID != id {
				t.Fatalf("revoke answered for %q", rv.ID)
			}
			var users adminapi.UserList
			tg.call(http.MethodGet, "/v1/users", nil, &users)
			var devices adminapi.DeviceList
			tg.call(http.MethodGet, "/v1/devices", nil, &devices)
			found := 0
			for _, u := range users.Users {
				if u.ID == id && u.Revoked {
					found++
				}
			}
			for _, d := range devices.Devices {
				if d.ID == id && d.Revoked {
					found++
				}
			}
			if found != 2 {
				t.Fatalf("user and device %q not both revoked", id)
			}
		})
	}
}

func TestPathSegment(t *testing.T) {
	for _, id := range oddIDs {
		seg := adminapi.PathSegment(id)
		if strings.ContainsAny(seg, "/.?# ") || seg == "" {
			t.Errorf("PathSegment(%q) = %q", id, seg)
		}
		if back, err := url.PathUnescape(seg); err != nil || back != id {
			t.Errorf("PathSegment(%q) = %q, unescapes to %q, %v", id, seg, back, err)
		}
	}
}

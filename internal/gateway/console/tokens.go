package console

import (
	"net/http"
	"strings"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// The tokens page (admins): the admin tokens with their roles, a form to
// create one (its token is shown once) and a button to revoke each. The
// same as "tagauth gateway token add|list|revoke".

func (c *Console) tokens(w http.ResponseWriter, r *http.Request, s *session) {
	list, err := c.admin.Tokens(r.Context())
	if err != nil {
		c.loadError(w, r, s, err)
		return
	}
	c.render(w, r, s, http.StatusOK, "tokens", "Admin tokens", struct {
		Tokens []adminapi.TokenInfo
		Roles  []adminapi.Role
		New    *adminapi.NewToken
	}{list.Tokens, adminapi.Roles, nil})
}

func (c *Console) createToken(w http.ResponseWriter, r *http.Request, s *session) {
	req := adminapi.TokenRequest{Name: strings.TrimSpace(r.PostForm.Get("name")), Role: adminapi.Role(r.PostForm.Get("role"))}
	nt, err := c.admin.CreateToken(r.Context(), r.RemoteAddr, req)
	if err != nil {
		c.fail(w, r, s, "/console/tokens", err)
		return
	}
	list, err := c.admin.Tokens(r.Context())
	if err != nil {
		c.loadError(w, r, s, err)
		return
	}
	// Shown once: the answer is not cached (Cache-Control: no-store) and
	// the gateway keeps only the token's hash.
	c.render(w, r, s, http.StatusOK, "tokens", "Admin tokens", struct {
		Tokens []adminapi.TokenInfo
		Roles  []adminapi.Role
		New    *adminapi.NewToken
	}{list.Tokens, adminapi.Roles, &nt})
}

func (c *Console) revokeToken(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PostForm.Get("name")
	if _, err := c.admin.RevokeToken(r.Context(), r.RemoteAddr, name); err != nil {
		c.fail(w, r, s, "/console/tokens", err)
		return
	}
	c.addFlash(s, false, "Revoked token %s: it is refused from now on, by every replica.", showID(name))
	http.Redirect(w, r, "/console/tokens", http.StatusSeeOther)
}

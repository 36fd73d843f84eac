package gateway

import (
	"net/http"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// The admin token routes (admin only, roles.go): create, list, revoke.
//
//	GET  /v1/tokens          TokenList
//	POST /v1/tokens          TokenRequest -> NewToken (the token, once)
//	POST /v1/tokens/revoke   TokenName -> TokenRevoked

func (g *Gateway) tokenRoutes(mux router) {
	mux.Handle("GET "+adminapi.PathTokens, g.auth(g.listTokens))
	mux.Handle("POST "+adminapi.PathTokens, g.auth(g.createToken))
	mux.Handle("POST "+adminapi.PathTokensRevoke, g.auth(g.revokeToken))
}

func (g *Gateway) listTokens(w http.ResponseWriter, r *http.Request) {
	out, err := g.admin.Tokens(r.Context())
	answer(w, out, err)
}

func (g *Gateway) createToken(w http.ResponseWriter, r *http.Request) {
	var req adminapi.TokenRequest
	if decode(w, r, &req) {
		out, err := g.admin.CreateToken(r.Context(), r.RemoteAddr, req)
		answer(w, out, err)
	}
}

func (g *Gateway) revokeToken(w http.ResponseWriter, r *http.Request) {
	var req adminapi.TokenName
	if decode(w, r, &req) {
		out, err := g.admin.RevokeToken(r.Context(), r.RemoteAddr, req.Name)
		answer(w, out, err)
	}
}

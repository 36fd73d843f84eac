package gateway

import (
	"net/http"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
)

// The admin token routes (admin only, roles.go): create, list, revoke.
//
//	GET  /v1/tokens          TokenList
//	POST /v1/tokens          TokenRequest -> NewToken (the token, once)
//	POST /v1/tokens/revoke   TokenName -> TokenRevoked

func tokenRoutes(mux router, svc *adminsvc.Service, auth func(http.HandlerFunc) http.Handler) {
	a := adminHTTP{svc}
	mux.Handle("GET "+adminapi.PathTokens, auth(query(svc.Tokens)))
	mux.Handle("POST "+adminapi.PathTokens, auth(a.createToken))
	mux.Handle("POST "+adminapi.PathTokensRevoke, auth(a.revokeToken))
}

func (a adminHTTP) createToken(w http.ResponseWriter, r *http.Request) {
	var req adminapi.TokenRequest
	if decode(w, r, &req) {
		out, err := a.svc.CreateToken(r.Context(), r.RemoteAddr, req)
		answer(w, out, err)
	}
}

func (a adminHTTP) revokeToken(w http.ResponseWriter, r *http.Request) {
	var req adminapi.TokenName
	if decode(w, r, &req) {
		out, err := a.svc.RevokeToken(r.Context(), r.RemoteAddr, req.Name)
		answer(w, out, err)
	}
}

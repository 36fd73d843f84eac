package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/store"
)

// The HTTPS admin API: a thin adapter over the admin service
// (internal/gateway/adminsvc), which owns the rules and the audit. Each
// handler decodes, calls the service and encodes; the JSON shapes and
// paths are internal/adminapi's.

// maxBody bounds an admin request body.
const maxBody = 64 << 10

func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	g.routes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// routes adds every route of the admin port to mux; each is in the
// table of roles (roles.go), which TestRouteRoles checks on this list.
func (g *Gateway) routes(mux router) {
	adminRoutes(mux, g.admin, g.tokens.auth)
	g.opsRoutes(mux)                         // opsapi.go: metrics, console
	g.backupRoutes(mux)                      // backupapi.go
	tokenRoutes(mux, g.admin, g.tokens.auth) // tokenapi.go
}

// router is where routes are added: the admin mux, or a test's recorder
// of every route (roles_test.go).
type router interface {
	Handle(pattern string, h http.Handler)
	HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request))
}

// adminRoutes adds the admin API's JSON routes over svc to mux; auth
// admits the requests whose token's role may use the route (roles.go).
func adminRoutes(mux router, svc *adminsvc.Service, auth func(http.HandlerFunc) http.Handler) {
	a := &adminHTTP{svc: svc}
	mux.HandleFunc("GET "+adminapi.PathInfo, a.info)
	mux.HandleFunc("POST "+adminapi.PathRegister, a.register)
	mux.Handle("POST "+adminapi.PathEnrolCodes, auth(a.enrolCode))
	mux.Handle("POST "+adminapi.PathDevices, auth(a.provision))
	mux.Handle("POST "+adminapi.PathDevicesBatch, auth(a.provisionBatch)) // adminbatch.go
	mux.Handle("POST "+adminapi.PatternUserRevoke, auth(a.revokeUser))
	mux.Handle("POST "+adminapi.PatternDeviceRevoke, auth(a.revokeDevice))
	mux.Handle("POST "+adminapi.PathUsersRevoke, auth(a.revokeUser)) // {"id": ...}: every id (adminapi.IDRequest)
	mux.Handle("POST "+adminapi.PathDevicesRevoke, auth(a.revokeDevice))
	mux.Handle("POST "+adminapi.PathGrants, auth(a.grant))
	mux.Handle("DELETE "+adminapi.PathGrants, auth(a.ungrant))
	mux.Handle("GET "+adminapi.PathUsers, auth(query(svc.Users)))
	mux.Handle("GET "+adminapi.PathDevices, auth(query(svc.Devices)))
	mux.Handle("GET "+adminapi.PathGrants, auth(query(svc.Grants)))
	mux.Handle("GET "+adminapi.PathAudit, auth(a.audit))
	mux.Handle("POST "+adminapi.PatternUserUnlock, auth(a.unlock))
	mux.Handle("POST "+adminapi.PathUsersUnlock, auth(a.unlock)) // {"id": ...}: every id (adminapi.IDRequest)
	mux.Handle("GET "+adminapi.PathLocks, auth(query(svc.Locks)))
	mux.Handle("GET "+adminapi.PathKeys, auth(query(svc.Keys)))
	mux.Handle("POST "+adminapi.PathKeysRotate, auth(query(svc.RotateKey)))
	mux.Handle("POST "+adminapi.PatternKeyRetire, auth(a.retire))
	mux.Handle("GET "+adminapi.PathStats, auth(a.stats))
	mux.Handle("GET "+adminapi.PathStatus, auth(query(svc.Status)))
}

// adminHTTP is the admin API's handlers over the service.
type adminHTTP struct {
	svc *adminsvc.Service
}

// statusOf is the one mapping of the service's refusals to HTTP.
func statusOf(err error) int {
	switch adminsvc.KindOf(err) {
	case adminsvc.Invalid:
		return http.StatusBadRequest
	case adminsvc.CodeRejected:
		return http.StatusUnauthorized
	case adminsvc.Forbidden:
		return http.StatusForbidden
	case adminsvc.NotFound:
		return http.StatusNotFound
	case adminsvc.Conflict:
		return http.StatusConflict
	case adminsvc.Unavailable:
		return http.StatusServiceUnavailable
	case adminsvc.Full:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

// query is the handler of a route that only asks the service (a list,
// a rotation): no input beyond the caller in the request's context.
func query[T any](ask func(context.Context) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		out, err := ask(r.Context())
		answer(w, out, err)
	}
}

// answer writes the service's result: out as JSON, or err's status and
// message.
func answer(w http.ResponseWriter, out any, err error) {
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// idOf is the identity a request names: the {id} of its path, or the
// adminapi.IDRequest of its body on the routes without one. On false it
// has answered.
func idOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	if strings.Contains(r.Pattern, "{id}") {
		return r.PathValue("id"), true
	}
	var req adminapi.IDRequest
	if !decode(w, r, &req) {
		return "", false
	}
	return req.ID, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the answer failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(adminapi.ErrorBody{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decode reads one JSON object of at most maxBody bytes into v, refusing
// unknown fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "request body must be JSON (Content-Type: application/json)")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, e := dec.Token(); e != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxBody))
		case errors.Is(err, io.EOF):
			writeError(w, http.StatusBadRequest, "request body is empty: expected a JSON object")
		default:
			writeError(w, http.StatusBadRequest, "request body is not the expected JSON: "+jsonProblem(err))
		}
		return false
	}
	return true
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type (want %v)", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + auditjson.SanitizeID([]byte(strings.TrimPrefix(err.Error(), "json: unknown field ")))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	return err.Error()
}

func (a *adminHTTP) info(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.svc.Info())
}

func (a *adminHTTP) enrolCode(w http.ResponseWriter, r *http.Request) {
	var req adminapi.EnrolCodeRequest
	if decode(w, r, &req) {
		out, err := a.svc.EnrolCode(r.Context(), r.RemoteAddr, req)
		answer(w, out, err)
	}
}

func (a *adminHTTP) register(w http.ResponseWriter, r *http.Request) {
	var req adminapi.RegisterRequest
	if decode(w, r, &req) {
		out, err := a.svc.Register(r.Context(), r.RemoteAddr, req)
		answer(w, out, err)
	}
}

func (a *adminHTTP) provision(w http.ResponseWriter, r *http.Request) {
	var req adminapi.DeviceRequest
	if !decode(w, r, &req) {
		return
	}
	cred, err := a.svc.Provision(r.Context(), r.RemoteAddr, req)
	if err != nil {
		answer(w, nil, err)
		return
	}
	defer clear(cred)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(cred)
}

func (a *adminHTTP) revokeUser(w http.ResponseWriter, r *http.Request) {
	if id, ok := idOf(w, r); ok {
		out, err := a.svc.RevokeUser(r.Context(), r.RemoteAddr, id)
		answer(w, out, err)
	}
}

func (a *adminHTTP) revokeDevice(w http.ResponseWriter, r *http.Request) {
	if id, ok := idOf(w, r); ok {
		out, err := a.svc.RevokeDevice(r.Context(), r.RemoteAddr, id)
		answer(w, out, err)
	}
}

func (a *adminHTTP) grant(w http.ResponseWriter, r *http.Request) {
	var req adminapi.Grant
	if decode(w, r, &req) {
		answer(w, req, a.svc.Grant(r.Context(), r.RemoteAddr, req))
	}
}

func (a *adminHTTP) ungrant(w http.ResponseWriter, r *http.Request) {
	var req adminapi.Grant
	if decode(w, r, &req) {
		answer(w, req, a.svc.Ungrant(r.Context(), r.RemoteAddr, req))
	}
}

func (a *adminHTTP) audit(w http.ResponseWriter, r *http.Request) {
	q, msg := parseAuditQuery(r.URL.Query())
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	out, err := a.svc.Audit(r.Context(), q)
	answer(w, out, err)
}

// parseAuditQuery reads GET /v1/audit's query (adminapi.AuditQuery.Values
// writes it); msg is a client error, or "".
func parseAuditQuery(v url.Values) (q adminapi.AuditQuery, msg string) {
	switch v.Get("order") {
	case "", "asc":
		if v.Has("before") {
			return q, "before= pages order=desc; oldest-first pages use after="
		}
	case "desc":
		q.Newest = true
	default:
		return q, `order must be "asc" (oldest first, the default) or "desc" (newest first)`
	}
	q.Kind, q.User, q.Device, q.Outcome = v.Get("kind"), v.Get("user"), v.Get("device"), v.Get("outcome")
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if s := v.Get(p.name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return q, p.name + " must be an RFC 3339 time such as 2025-01-02T15:04:05Z"
			}
			*p.dst = t
		}
	}
	var err error
	switch {
	case q.Newest && v.Has("after"):
		return q, "after= pages oldest-first queries; with order=desc use before="
	case q.Newest && v.Get("before") != "":
		if q.Before, err = strconv.ParseUint(v.Get("before"), 10, 64); err != nil || q.Before == 0 {
			return q, "before must be a sequence number (the next of the previous page)"
		}
	case !q.Newest && v.Get("after") != "":
		if q.After, err = strconv.ParseUint(v.Get("after"), 10, 64); err != nil {
			return q, "after must be a sequence number (the next of the previous page)"
		}
	}
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit < 1 {
			return q, fmt.Sprintf("limit must be a number from 1 to %d", store.MaxAuditLimit)
		}
	}
	return q, ""
}

func (a *adminHTTP) unlock(w http.ResponseWriter, r *http.Request) {
	if id, ok := idOf(w, r); ok {
		out, err := a.svc.Unlock(r.Context(), r.RemoteAddr, id)
		answer(w, out, err)
	}
}

func (a *adminHTTP) retire(w http.ResponseWriter, r *http.Request) {
	v, err := strconv.ParseUint(r.PathValue("version"), 10, 8)
	if err != nil || v == 0 {
		writeError(w, http.StatusBadRequest, "version must be a number from 1 to 255")
		return
	}
	out, err := a.svc.RetireKey(r.Context(), uint8(v), r.URL.Query().Get("force") == "1")
	answer(w, out, err)
}

func (a *adminHTTP) stats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.svc.Stats())
}

package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Admin API limits.
const (
	maxBody         = 64 << 10
	DefaultCodeTTL  = 15 * time.Minute
	MaxCodeTTL      = 7 * 24 * time.Hour
	adminCallBudget = 20 * time.Second
)

// JSON shapes of the admin API's list answers, beside those of adminapi.

// UserInfo is one user in GET /v1/users.
type UserInfo struct {
	ID        string     `json:"id"`
	KV        uint8      `json:"kv"`
	Created   time.Time  `json:"created"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// DeviceInfo is one device in GET /v1/devices.
type DeviceInfo struct {
	ID        string     `json:"id"`
	KV        uint8      `json:"kv"`
	Group     string     `json:"group,omitempty"`
	Created   time.Time  `json:"created"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// UserList is the answer of GET /v1/users.
type UserList struct {
	Users []UserInfo `json:"users"`
}

// DeviceList is the answer of GET /v1/devices.
type DeviceList struct {
	Devices []DeviceInfo `json:"devices"`
}

// GrantList is the answer of GET /v1/grants.
type GrantList struct {
	Grants []adminapi.Grant `json:"grants"`
}

// AuditEntry is one audit record in GET /v1/audit.
type AuditEntry struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason,omitempty"`
	User      string    `json:"user,omitempty"`
	Device    string    `json:"device,omitempty"`
	Source    string    `json:"source,omitempty"`
	KVUser    uint8     `json:"kv_user,omitempty"`
	KVDevice  uint8     `json:"kv_device,omitempty"`
	LatencyUS int64     `json:"latency_us,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	// Count is the number of refusals a sampled refusal record stands
	// for (absent: one).
	Count uint32 `json:"count,omitempty"`
}

// AuditPage is the answer of GET /v1/audit. Next is the cursor for the
// following page (pass it as after=); it is the last record's sequence
// number, or the request's after when the page is empty.
type AuditPage struct {
	Records []AuditEntry `json:"records"`
	Next    uint64       `json:"next"`
}

// Revoked is the answer of the revoke calls.
type Revoked struct {
	ID        string    `json:"id"`
	RevokedAt time.Time `json:"revoked_at"`
}

func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", g.handleInfo)
	mux.HandleFunc("POST /v1/register", g.handleRegister)
	mux.Handle("POST /v1/enrol-codes", g.auth(g.handleEnrolCode))
	mux.Handle("POST /v1/devices", g.auth(g.handleProvision))
	mux.Handle("POST /v1/users/{id}/revoke", g.auth(g.handleRevokeUser))
	mux.Handle("POST /v1/devices/{id}/revoke", g.auth(g.handleRevokeDevice))
	mux.Handle("POST /v1/users/revoke", g.auth(g.handleRevokeUser)) // {"id": ...}: every id (adminapi.IDRequest)
	mux.Handle("POST /v1/devices/revoke", g.auth(g.handleRevokeDevice))
	mux.Handle("POST /v1/grants", g.auth(g.handleGrant))
	mux.Handle("DELETE /v1/grants", g.auth(g.handleUngrant))
	mux.Handle("GET /v1/users", g.auth(g.handleUsers))
	mux.Handle("GET /v1/devices", g.auth(g.handleDevices))
	mux.Handle("GET /v1/grants", g.auth(g.handleGrants))
	mux.Handle("GET /v1/audit", g.auth(g.handleAuditQuery))
	g.opsRoutes(mux) // opsapi.go: metrics, lockout, keys, stats, console
	g.backupRoutes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// auth admits requests bearing the admin token. Both sides are hashed
// first, so the comparison is constant-time whatever the lengths. Wrong
// tokens are counted per source: after a few, the source waits before its
// next token is even checked (adminguard.go), and the log gets one line
// per source per minute, not one per guess.
func (g *Gateway) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		ok, wait := g.tokenCheck(r, tok, func(tok string) bool { return g.checkAdminToken(tok) && bearer })
		if wait > 0 {
			tooMany(w, wait) // adminguard.go: a source that guessed waits
			return
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tagauth admin"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer TOKEN (the token is in the gateway's DATA/admin-token, or TAGAUTH_ADMIN_TOKEN)")
			return
		}
		h(w, r)
	})
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
		return "unknown field " + SanitizeID([]byte(strings.TrimPrefix(err.Error(), "json: unknown field ")))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	return err.Error()
}

// storeError answers a store failure with the status it deserves.
func (g *Gateway) storeError(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, store.ErrFull):
		writeError(w, http.StatusInsufficientStorage, what+": the gateway's disk is full; nothing was changed (free space on the gateway host and retry)")
	case errors.Is(err, store.ErrExists):
		writeError(w, http.StatusConflict, what+": the identity is already taken (revoked identities stay taken)")
	case errors.Is(err, store.ErrNamespace):
		writeError(w, http.StatusConflict, what+": classic profile: user and device identities share one namespace and this id is taken by the other kind")
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, what+": not found")
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusBadRequest, what+": "+err.Error())
	case errors.Is(err, store.ErrCodeInvalid):
		writeError(w, http.StatusUnauthorized, what+": enrolment code is unknown, used or expired: ask the operator for a new one")
	default:
		g.metrics.storeError("admin")
		g.log.Error("store failure", "op", what, "err", err)
		writeError(w, http.StatusInternalServerError, what+": the gateway's store failed (see the gateway log)")
	}
}

func (g *Gateway) handleInfo(w http.ResponseWriter, _ *http.Request) {
	vs := g.KeyVersions()
	kvs := make([]int, len(vs))
	for i, v := range vs {
		kvs[i] = int(v)
	}
	writeJSON(w, http.StatusOK, adminapi.Info{Profile: g.profile.String(), SpecVersion: protocol.SpecVersion,
		KeyVersions: kvs, Fingerprint: g.fingerprint, CoAP: g.coapPublic})
}

// enrolment codes: 15 random bytes, base32 in groups of four, so that
// they can be read out and typed. Separators and case do not matter.
const codeBytes = 15

func newEnrolCode() (string, error) {
	var raw [codeBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	s := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:])
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String(), nil
}

// hashCode is the stored form of an enrolment code: SHA-256 of its
// canonical spelling (upper case, no separators).
func hashCode(code string) [32]byte {
	c := strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ':
			return -1
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		}
		return r
	}, code)
	return sha256.Sum256([]byte(c))
}

func (g *Gateway) handleEnrolCode(w http.ResponseWriter, r *http.Request) {
	var req adminapi.EnrolCodeRequest
	if !decode(w, r, &req) {
		return
	}
	if err := store.CheckID(req.User); err != nil {
		writeError(w, http.StatusBadRequest, "user: "+err.Error())
		return
	}
	ttl := DefaultCodeTTL
	if req.TTLs != 0 {
		ttl = time.Duration(req.TTLs) * time.Second
	}
	if ttl <= 0 || ttl > MaxCodeTTL {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl_s must be between 1 and %d seconds", int(MaxCodeTTL/time.Second)))
		return
	}
	if msg := g.userIDTaken(req.User); msg != "" {
		writeError(w, http.StatusConflict, msg)
		return
	}
	code, err := newEnrolCode()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "drawing a code failed")
		return
	}
	expires := g.now().Add(ttl).UTC().Truncate(time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	if g.auditBlocked(w) { // auditjournal.go
		return
	}
	if err := g.store.PutEnrolCode(ctx, hashCode(code), req.User, expires); err != nil {
		g.storeError(w, "enrolment code", err)
		return
	}
	if !g.auditDone(w, store.AuditRecord{Time: g.now(), Kind: KindEnrol, Outcome: OutcomeOK, Reason: "code issued",
		User: req.User, Source: r.RemoteAddr, Detail: "enrolment code valid until " + expires.Format(time.RFC3339)}, "the code was stored") {
		return
	}
	writeJSON(w, http.StatusOK, adminapi.EnrolCode{Code: code, Expires: expires})
}

// handleRegister is the gateway's side of FIG. 4 over HTTPS: the one-time
// code authenticates the request, and W_i and r_i are used once and
// forgotten (never stored, never logged).
func (g *Gateway) handleRegister(w http.ResponseWriter, r *http.Request) {
	var body adminapi.RegisterRequest
	if !decode(w, r, &body) {
		return
	}
	req := protocol.RegistrationRequest{ID: body.ID, T: body.T,
		KDF: protocol.KDFParams{Time: body.KDF.T, MemoryKiB: body.KDF.MKiB, Threads: body.KDF.P}}
	defer req.Wipe()
	refuse := func(status int, reason, msg string) {
		g.audit.refused(store.AuditRecord{Time: g.now(), Kind: KindEnrol, Outcome: OutcomeRefused, Reason: reason,
			User: SanitizeID([]byte(body.ID)), Source: r.RemoteAddr})
		writeError(w, status, msg)
	}
	p, err := protocol.ParseProfile(body.Profile)
	if err != nil || body.Profile == "" {
		refuse(http.StatusBadRequest, "bad request", `profile must be "classic" or "hardened"`)
		return
	}
	if p != g.profile {
		refuse(http.StatusBadRequest, "profile mismatch", fmt.Sprintf("this gateway serves the %v profile, the request is for %v: enrol with --profile %v", g.profile, p, g.profile))
		return
	}
	req.Profile = p
	if err := store.CheckID(body.ID); err != nil {
		refuse(http.StatusBadRequest, "bad request", "id: "+err.Error())
		return
	}
	if !unhex32(req.W[:], body.W) || !unhex32(req.R[:], body.R) {
		refuse(http.StatusBadRequest, "bad request", "w and r must each be 64 hex digits")
		return
	}
	if p == protocol.Hardened && !req.KDF.Valid() {
		refuse(http.StatusBadRequest, "bad request", "kdf: Argon2id parameters out of range (1<=t<=64, 1<=p<=16, 8p<=m_kib<=1048576)")
		return
	}
	if p == protocol.Hardened && !g.cfg.InsecureTestKDF && belowFloor(req.KDF, g.cfg.KDFFloor) { // kdffloor.go
		refuse(http.StatusBadRequest, "kdf below floor", kdfFloorMessage(req.KDF, g.cfg.KDFFloor))
		return
	}
	if body.Code == "" {
		refuse(http.StatusUnauthorized, "no enrolment code", "code: an enrolment code from the operator is required")
		return
	}
	// Cheap refusals first, so that a clock or id problem does not burn
	// the one-time code.
	if msg := g.userIDTaken(body.ID); msg != "" {
		refuse(http.StatusConflict, "id taken", msg)
		return
	}
	mk := g.newestKey()
	card, err := protocol.IssueCard(&req, mk, g.pcfg)
	clear(mk.Key[:])
	if err != nil {
		if protocol.CodeOf(err) == protocol.ErrStaleTimestamp {
			refuse(http.StatusBadRequest, reasonOf(err), "registration timestamp "+detailOf(err)+": check that this computer's clock and the gateway's are in sync")
			return
		}
		refuse(http.StatusBadRequest, reasonOf(err), "registration refused: "+detailOf(err))
		return
	}
	wipeCard := func() { clear(card.Alpha[:]); clear(card.R[:]) }
	defer wipeCard()

	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	if g.auditBlocked(w) { // before the code is used up
		return
	}
	user, err := g.store.TakeEnrolCode(ctx, hashCode(body.Code), g.now())
	if err != nil {
		if errors.Is(err, store.ErrCodeInvalid) {
			refuse(http.StatusUnauthorized, "enrolment code invalid", "enrolment code is unknown, used or expired: ask the operator for a new one")
			return
		}
		g.storeError(w, "enrolment", err)
		return
	}
	if user != body.ID {
		refuse(http.StatusForbidden, "code for another user", "this enrolment code was issued for another user id; it is now used up: ask the operator for a new one for your id")
		return
	}
	kv := card.KV
	if p == protocol.Classic {
		kv = protocol.ClassicKeyVersion
	}
	if err := g.store.CreateUser(ctx, store.User{ID: body.ID, KV: kv, Created: g.now()}, g.profile); err != nil {
		g.audit.refused(store.AuditRecord{Time: g.now(), Kind: KindEnrol, Outcome: OutcomeRefused, Reason: "store refused",
			User: body.ID, Source: r.RemoteAddr, Detail: err.Error()})
		g.storeError(w, "registering user", err)
		return
	}
	if err := g.reg.AddUser(body.ID); err != nil {
		// The store accepted it, so the registry is behind: reload it.
		g.log.Error("registry disagrees with the store; reloading", "err", err)
		g.reloadRegistry(ctx)
	}
	if !g.auditDone(w, store.AuditRecord{Time: g.now(), Kind: KindEnrol, Outcome: OutcomeOK, Reason: "registered",
		User: body.ID, Source: r.RemoteAddr, KVUser: kv}, "the user was registered") {
		return
	}
	writeJSON(w, http.StatusOK, adminapi.CardToJSON(card))
}

// userIDTaken says why id cannot be registered as a user, or "". The
// store has the last word; this only answers early.
func (g *Gateway) userIDTaken(id string) string {
	if g.reg.UserState(id) != protocol.Unknown {
		return fmt.Sprintf("user %q is already registered (revoked ids stay taken): choose another id", id)
	}
	if g.profile == protocol.Classic && g.reg.DeviceState(id) != protocol.Unknown {
		return fmt.Sprintf("classic profile: %q is a device id, and user and device ids share one namespace: choose another id", id)
	}
	return ""
}

func unhex32(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	_, err := hex.Decode(dst, []byte(s))
	return err == nil
}

// reloadRegistry refills the registry from the store, for the rare case
// where the two disagree.
func (g *Gateway) reloadRegistry(ctx context.Context) {
	snap, err := g.store.Snapshot(ctx)
	if err == nil {
		err = loadSnapshot(g.reg, snap)
	}
	if err != nil {
		g.log.Error("reloading the registry from the store failed", "err", err)
	}
}

func (g *Gateway) handleProvision(w http.ResponseWriter, r *http.Request) {
	var req adminapi.DeviceRequest
	if !decode(w, r, &req) {
		return
	}
	d := store.Device{ID: req.ID, Group: req.Group, KV: 1, Created: g.now()}
	if err := store.CheckDevice(&d); err != nil {
		writeError(w, http.StatusBadRequest, "device: "+err.Error())
		return
	}
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	if g.reg.DeviceState(req.ID) != protocol.Unknown {
		writeError(w, http.StatusConflict, fmt.Sprintf("device %q is already provisioned (revoked ids stay taken): choose another id", req.ID))
		return
	}
	if g.profile == protocol.Classic && g.reg.UserState(req.ID) != protocol.Unknown {
		writeError(w, http.StatusConflict, fmt.Sprintf("classic profile: %q is a user id, and user and device ids share one namespace: choose another id", req.ID))
		return
	}
	mk := g.newestKey()
	cred, err := protocol.ProvisionDevice(g.profile, req.ID, mk)
	clear(mk.Key[:])
	if err != nil {
		writeError(w, http.StatusBadRequest, "device: "+err.Error())
		return
	}
	defer clear(cred.Tag[:])
	d.KV = mk.Version
	if g.profile == protocol.Classic {
		d.KV = protocol.ClassicKeyVersion
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	if g.auditBlocked(w) {
		return
	}
	if err := g.store.CreateDevice(ctx, d, g.profile); err != nil {
		g.storeError(w, "provisioning device", err)
		return
	}
	if err := g.reg.AddDeviceInGroup(d.ID, d.Group); err != nil {
		g.log.Error("registry disagrees with the store; reloading", "err", err)
		g.reloadRegistry(ctx)
	}
	if !g.auditDone(w, store.AuditRecord{Time: g.now(), Kind: KindProvision, Outcome: OutcomeOK, Device: d.ID,
		Source: r.RemoteAddr, KVDevice: d.KV, Detail: groupDetail(d.Group)}, "the device was provisioned") {
		return
	}
	b, err := credfile.Marshal(credfile.Credential{DeviceCredential: cred, Gateway: g.coapPublic,
		AdminURL: g.adminURL, Fingerprint: g.fingerprint})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the credential failed: "+err.Error())
		return
	}
	defer clear(b)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

func groupDetail(group string) string {
	if group == "" {
		return "no group"
	}
	return "group " + group
}

func (g *Gateway) handleRevokeUser(w http.ResponseWriter, r *http.Request) {
	g.revoke(w, r, false)
}

func (g *Gateway) handleRevokeDevice(w http.ResponseWriter, r *http.Request) {
	g.revoke(w, r, true)
}

// revoke marks a user or device revoked in the store and then in the
// registry, before answering: the next verify refuses it.
func (g *Gateway) revoke(w http.ResponseWriter, r *http.Request, device bool) {
	what := "user"
	if device {
		what = "device"
	}
	id, ok := idOf(w, r)
	if !ok {
		return
	}
	if err := store.CheckID(id); err != nil {
		writeError(w, http.StatusBadRequest, what+": "+err.Error())
		return
	}
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	at := g.now()
	if g.auditBlocked(w) {
		return
	}
	var err error
	if device {
		err = g.store.RevokeDevice(ctx, id, at)
	} else {
		err = g.store.RevokeUser(ctx, id, at)
	}
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no %s %q", what, id))
		return
	}
	if err != nil {
		g.storeError(w, "revoking "+what, err)
		return
	}
	if device {
		err = g.reg.RevokeDevice(id)
	} else {
		err = g.reg.RevokeUser(id)
	}
	if err != nil {
		g.log.Error("registry disagrees with the store; reloading", "err", err)
		g.reloadRegistry(ctx)
	}
	rec := store.AuditRecord{Time: at, Kind: KindRevoke, Outcome: OutcomeOK, Reason: what + " revoked by admin", Source: r.RemoteAddr}
	if device {
		rec.Device = id
	} else {
		rec.User = id
	}
	if !g.auditDone(w, rec, "the "+what+" was revoked") {
		return
	}
	writeJSON(w, http.StatusOK, Revoked{ID: id, RevokedAt: at.UTC()})
}

func (g *Gateway) handleGrant(w http.ResponseWriter, r *http.Request)   { g.policy(w, r, true) }
func (g *Gateway) handleUngrant(w http.ResponseWriter, r *http.Request) { g.policy(w, r, false) }

func (g *Gateway) policy(w http.ResponseWriter, r *http.Request, grant bool) {
	var req adminapi.Grant
	if !decode(w, r, &req) {
		return
	}
	sg := store.Grant{User: req.User, Group: req.Group}
	if err := store.CheckGrant(&sg); err != nil {
		writeError(w, http.StatusBadRequest, "grant: "+err.Error())
		return
	}
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	what := "granted"
	if g.auditBlocked(w) {
		return
	}
	var err error
	if grant {
		err = g.store.Grant(ctx, sg)
	} else {
		what = "ungranted"
		err = g.store.Ungrant(ctx, sg)
	}
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no grant of group %q to user %q", sg.Group, sg.User))
		return
	}
	if err != nil {
		g.storeError(w, "policy", err)
		return
	}
	if grant {
		g.reg.Grant(sg.User, sg.Group)
	} else {
		g.reg.Ungrant(sg.User, sg.Group)
	}
	if !g.auditDone(w, store.AuditRecord{Time: g.now(), Kind: KindPolicy, Outcome: OutcomeOK, Reason: what,
		User: sg.User, Source: r.RemoteAddr, Detail: "group " + sg.Group}, "the policy was changed") {
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (g *Gateway) snapshot(w http.ResponseWriter, r *http.Request) (store.Snapshot, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	snap, err := g.store.Snapshot(ctx)
	if err != nil {
		g.storeError(w, "reading the registry", err)
		return snap, false
	}
	return snap, true
}

func timePtr(t time.Time, ok bool) *time.Time {
	if !ok {
		return nil
	}
	t = t.UTC()
	return &t
}

func (g *Gateway) handleUsers(w http.ResponseWriter, r *http.Request) {
	snap, ok := g.snapshot(w, r)
	if !ok {
		return
	}
	out := UserList{Users: make([]UserInfo, len(snap.Users))}
	for i, u := range snap.Users {
		out.Users[i] = UserInfo{ID: u.ID, KV: u.KV, Created: u.Created.UTC(), Revoked: u.Revoked, RevokedAt: timePtr(u.RevokedAt, u.Revoked)}
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) handleDevices(w http.ResponseWriter, r *http.Request) {
	snap, ok := g.snapshot(w, r)
	if !ok {
		return
	}
	out := DeviceList{Devices: make([]DeviceInfo, len(snap.Devices))}
	for i, d := range snap.Devices {
		out.Devices[i] = DeviceInfo{ID: d.ID, KV: d.KV, Group: d.Group, Created: d.Created.UTC(), Revoked: d.Revoked, RevokedAt: timePtr(d.RevokedAt, d.Revoked)}
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) handleGrants(w http.ResponseWriter, r *http.Request) {
	snap, ok := g.snapshot(w, r)
	if !ok {
		return
	}
	out := GrantList{Grants: make([]adminapi.Grant, len(snap.Grants))}
	for i, gr := range snap.Grants {
		out.Grants[i] = adminapi.Grant{User: gr.User, Group: gr.Group}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleAudit answers an audit query. It first waits for the records
// already submitted to reach the store, so an operator sees the verify
// that just happened.
func (g *Gateway) handleAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.AuditFilter{Kind: q.Get("kind"), User: q.Get("user"), Device: q.Get("device"), Outcome: q.Get("outcome")}
	var err error
	parseTime := func(name string, dst *time.Time) bool {
		if s := q.Get(name); s != "" {
			if *dst, err = time.Parse(time.RFC3339, s); err != nil {
				writeError(w, http.StatusBadRequest, name+" must be an RFC 3339 time such as 2025-01-02T15:04:05Z")
				return false
			}
		}
		return true
	}
	if !parseTime("since", &f.Since) || !parseTime("until", &f.Until) {
		return
	}
	if s := q.Get("after"); s != "" {
		if f.After, err = strconv.ParseUint(s, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "after must be a sequence number (the next of the previous page)")
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", store.MaxAuditLimit))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	if err := g.audit.sync(ctx); err != nil {
		g.log.Warn("audit query without waiting for pending records", "err", err)
	}
	recs, seqs, err := g.store.QueryAudit(ctx, f)
	if err != nil {
		g.storeError(w, "audit query", err)
		return
	}
	page := AuditPage{Records: make([]AuditEntry, len(recs)), Next: f.After}
	for i, rec := range recs {
		page.Records[i] = AuditEntry{Seq: seqs[i], Time: rec.Time.UTC(), Kind: rec.Kind, Outcome: rec.Outcome, Reason: rec.Reason,
			User: rec.User, Device: rec.Device, Source: rec.Source, KVUser: rec.KVUser, KVDevice: rec.KVDevice,
			LatencyUS: rec.LatencyUS, Detail: rec.Detail, Count: rec.Count}
		page.Next = seqs[i]
	}
	writeJSON(w, http.StatusOK, page)
}

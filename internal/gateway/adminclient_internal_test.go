package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc/adminsvctest"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// TestTypedClientOverHTTP drives every method of adminapi.Client against
// the HTTPS adapter over a test service: the paths, JSON shapes and the
// mapping of the service's refusals to status codes agree on both ends.
func TestTypedClientOverHTTP(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	mux := http.NewServeMux()
	const token = "test-admin-token"
	adminRoutes(mux, h.Svc, func(next http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+token {
				writeError(w, http.StatusUnauthorized, "wrong token")
				return
			}
			next(w, r)
		})
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	sum := sha256.Sum256(srv.Certificate().Raw)
	fp := hex.EncodeToString(sum[:])
	c, err := adminapi.NewClient(srv.URL, fp, token, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdle()
	anon := &adminapi.Client{Base: c.Base, HTTP: c.HTTP}
	ctx := context.Background()
	status := func(err error) int {
		var ae *adminapi.APIError
		if errors.As(err, &ae) {
			return ae.Status
		}
		return 0
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	info, err := anon.Info(ctx)
	must("info", err)
	if info.Profile != "hardened" || info.SpecVersion != protocol.SpecVersion || len(info.KeyVersions) != 1 {
		t.Fatalf("info: %+v", info)
	}
	if _, err := anon.Users(ctx); status(err) != http.StatusUnauthorized {
		t.Fatalf("users without a token: %v, want 401", err)
	}

	code, err := c.EnrolCode(ctx, adminapi.EnrolCodeRequest{User: "alice", TTLs: 60})
	must("enrol code", err)
	if want := h.Now.Add(time.Minute); !code.Expires.Equal(want) {
		t.Fatalf("code expires %v, want %v", code.Expires, want)
	}
	req, err := protocol.NewRegistrationRequest(protocol.Hardened, "alice", "pw", protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
		protocol.Config{Now: time.Now, Rand: rand.Reader})
	must("registration request", err)
	card, err := anon.Register(ctx, adminapi.RegisterRequest{Code: code.Code, Profile: "hardened", ID: "alice",
		W: hex.EncodeToString(req.W[:]), R: hex.EncodeToString(req.R[:]), T: req.T, KDF: adminapi.KDF{T: 1, MKiB: 64, P: 1}})
	must("register", err)
	if pc, err := card.Card(); err != nil || pc.ID != "alice" {
		t.Fatalf("card: %+v %v", pc, err)
	}
	if _, err := anon.Register(ctx, adminapi.RegisterRequest{Code: code.Code, Profile: "hardened", ID: "bob",
		W: hex.EncodeToString(req.W[:]), R: hex.EncodeToString(req.R[:]), T: req.T, KDF: adminapi.KDF{T: 1, MKiB: 64, P: 1}}); status(err) != http.StatusUnauthorized {
		t.Fatalf("register with a used code: %v, want 401", err)
	}

	raw, err := c.Provision(ctx, adminapi.DeviceRequest{ID: "sensor/7", Group: "plant"})
	must("provision", err)
	cred, err := credfile.Unmarshal(raw)
	if err != nil || cred.ID != "sensor/7" || cred.Fingerprint != adminsvctest.Fingerprint {
		t.Fatalf("credential: %+v %v", cred, err)
	}
	if _, err := c.Provision(ctx, adminapi.DeviceRequest{ID: "sensor/7"}); status(err) != http.StatusConflict {
		t.Fatalf("provision a taken id: %v, want 409", err)
	}
	must("grant", c.Grant(ctx, adminapi.Grant{User: "alice", Group: "plant"}))
	gl, err := c.Grants(ctx)
	must("grants", err)
	if len(gl.Grants) != 1 || gl.Grants[0].Group != "plant" {
		t.Fatalf("grants: %+v", gl)
	}
	must("ungrant", c.Ungrant(ctx, adminapi.Grant{User: "alice", Group: "plant"}))
	if err := c.Ungrant(ctx, adminapi.Grant{User: "alice", Group: "plant"}); status(err) != http.StatusNotFound {
		t.Fatalf("ungrant twice: %v, want 404", err)
	}
	ul, err := c.Users(ctx)
	must("users", err)
	dl, err := c.Devices(ctx)
	must("devices", err)
	if len(ul.Users) != 1 || len(dl.Devices) != 1 || dl.Devices[0].Group != "plant" {
		t.Fatalf("users %+v, devices %+v", ul, dl)
	}

	un, err := c.Unlock(ctx, "alice")
	must("unlock", err)
	if un.ID != "alice" || un.WasLocked {
		t.Fatalf("unlock: %+v", un)
	}
	ll, err := c.Locks(ctx)
	must("locks", err)
	if ll.Policy != "test policy" || len(ll.Locks) != 0 {
		t.Fatalf("locks: %+v", ll)
	}

	// A device id with a "/" travels in the body.
	rv, err := c.RevokeDevice(ctx, "sensor/7")
	must("revoke device", err)
	if rv.ID != "sensor/7" || !rv.RevokedAt.Equal(h.Now) {
		t.Fatalf("revoked: %+v", rv)
	}
	if _, err := c.RevokeUser(ctx, "nobody"); status(err) != http.StatusNotFound {
		t.Fatalf("revoke unknown user: %v, want 404", err)
	}
	_, err = c.RevokeUser(ctx, "alice")
	must("revoke user", err)

	// The test service's audit keeps records in memory: these are the
	// store's.
	for _, u := range []string{"u1", "u2", "u3", "u4"} {
		must("append audit", h.Store.AppendAudit(ctx, store.AuditRecord{Time: h.Now, Kind: adminapi.KindVerify, Outcome: adminapi.OutcomeOK, User: u}))
	}
	page, err := c.Audit(ctx, adminapi.AuditQuery{Newest: true, Limit: 3, Kind: adminapi.KindVerify, Since: h.Now.Add(-time.Minute)})
	must("audit", err)
	if len(page.Records) != 3 || page.Records[0].User != "u4" || page.Next != page.Records[2].Seq {
		t.Fatalf("newest audit page: %+v", page)
	}
	page, err = c.Audit(ctx, adminapi.AuditQuery{Newest: true, Before: page.Next})
	must("audit, next page", err)
	if len(page.Records) != 1 || page.Records[0].User != "u1" {
		t.Fatalf("second audit page: %+v", page)
	}
	if _, err := c.Audit(ctx, adminapi.AuditQuery{Before: 3}); status(err) != http.StatusBadRequest {
		t.Fatalf("before= oldest first: %v, want 400", err)
	}
	if n := len(h.Audit.Kept()); n < 6 {
		t.Fatalf("%d audit records kept for the writes, want one each", n)
	}

	kc, err := c.RotateKey(ctx)
	must("rotate", err)
	if kc.Version != 2 || kc.Newest != 2 {
		t.Fatalf("rotate: %+v", kc)
	}
	kl, err := c.Keys(ctx)
	must("keys", err)
	if len(kl.Keys) != 2 || !kl.Keys[1].Newest {
		t.Fatalf("keys: %+v", kl)
	}
	kc, err = c.RetireKey(ctx, 1, false)
	must("retire an unheld version", err)
	if kc.Version != 1 || kc.HeldBy != nil {
		t.Fatalf("retire: %+v", kc)
	}
	if _, err := c.RetireKey(ctx, 1, true); status(err) != http.StatusNotFound {
		t.Fatalf("retire a retired version: %v, want 404", err)
	}
	st, err := c.Stats(ctx)
	must("stats", err)
	if !st.Now.Equal(h.Now) {
		t.Fatalf("stats: %+v", st)
	}

	h.Audit.SetDown(errors.New("disk full"))
	if _, err := c.EnrolCode(ctx, adminapi.EnrolCodeRequest{User: "carol"}); status(err) != http.StatusServiceUnavailable {
		t.Fatalf("enrol code with the audit down: %v, want 503", err)
	}
}

// TestAuditQueryRoundTrip: what the client writes is what the server
// reads, and the server's refusals of the URL form keep their wording.
func TestAuditQueryRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, q := range []adminapi.AuditQuery{
		{},
		{Kind: "verify", User: "a b", Device: "d/1", Outcome: "refused", Since: at, Until: at.Add(time.Hour), After: 7, Limit: 10},
		{Newest: true, Before: 9, Limit: 1},
	} {
		got, msg := parseAuditQuery(q.Values())
		if msg != "" || got != q {
			t.Errorf("%+v came back as %+v (%q)", q, got, msg)
		}
	}
	for raw, want := range map[string]string{
		"order=up":              `order must be`,
		"before=3":              "before= pages order=desc",
		"order=desc&after=1":    "after= pages oldest-first",
		"order=desc&before=0":   "before must be a sequence number",
		"after=x":               "after must be a sequence number",
		"since=yesterday":       "since must be an RFC 3339 time",
		"limit=0":               "limit must be a number from 1",
		"order=desc&until=2026": "until must be an RFC 3339 time",
	} {
		v, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, msg := parseAuditQuery(v); !strings.Contains(msg, want) {
			t.Errorf("%s: %q, want %q", raw, msg, want)
		}
	}
}

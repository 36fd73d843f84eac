package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/protocol"
)

// TestAdminAuth: every call but info and register needs the token; the
// pinned client refuses another certificate.
func TestAdminAuth(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/users"},
		{http.MethodGet, "/v1/devices"},
		{http.MethodGet, "/v1/grants"},
		{http.MethodGet, "/v1/audit"},
		{http.MethodPost, "/v1/enrol-codes"},
		{http.MethodPost, "/v1/devices"},
		{http.MethodPost, "/v1/users/alice/revoke"},
		{http.MethodPost, "/v1/devices/d1/revoke"},
		{http.MethodPost, "/v1/grants"},
		{http.MethodDelete, "/v1/grants"},
	} {
		for _, tok := range []string{"", "wrong-token-wrong-token", tg.token + "x", tg.token[:len(tg.token)-1]} {
			// After five wrong tokens the source waits (429) before its
			// tokens are checked again (adminguard.go): refused either way.
			err := adminapi.DoJSON(context.Background(), tg.hc, c.method, tg.url(c.path), tok, map[string]string{}, nil)
			var e *adminapi.APIError
			if !errors.As(err, &e) || (e.Status != http.StatusUnauthorized && e.Status != http.StatusTooManyRequests) || !strings.Contains(e.Message, "admin token") {
				t.Errorf("%s %s with a wrong token: %v, want 401 or 429 about the admin token", c.method, c.path, err)
			}
		}
	}
	// The token file is private and holds 64 hex digits.
	fi, err := os.Stat(filepath.Join(tg.dir, adminapi.TokenFileName))
	if err != nil || fi.Mode().Perm() != 0o600 || len(tg.token) != 64 {
		t.Fatalf("token file: %v %v len %d", err, fi.Mode(), len(tg.token))
	}
	var info adminapi.Info
	if err := adminapi.DoJSON(context.Background(), tg.hc, http.MethodGet, tg.url("/v1/info"), "", nil, &info); err != nil {
		t.Fatal(err)
	}
	if info.Profile != "hardened" || info.Fingerprint != tg.g.Fingerprint() || info.CoAP != tg.g.CoAPPublic() || len(info.KeyVersions) != 1 || info.KeyVersions[0] != 1 {
		t.Fatalf("info %+v", info)
	}
	// A client pinning another fingerprint does not talk to it.
	other, err := adminapi.PinnedClient(strings.Repeat("ab", 32), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = adminapi.DoJSON(context.Background(), other, http.MethodGet, tg.url("/v1/info"), "", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "does not match the pinned") {
		t.Fatalf("wrong pin: %v", err)
	}
	// TLS 1.2 is refused.
	conn, err := tlsDial(tg.g.AdminURL(), tls.VersionTLS12)
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.2 handshake accepted")
	}
	// The fingerprint is that of the certificate file.
	pemData, err := os.ReadFile(filepath.Join(tg.dir, gateway.CertFileName))
	if err != nil {
		t.Fatal(err)
	}
	if fp, err := gateway.FingerprintOfPEM(pemData); err != nil || fp != tg.g.Fingerprint() {
		t.Fatalf("fingerprint of the cert file %s, gateway says %s (%v)", fp, tg.g.Fingerprint(), err)
	}
	// admin.json tells CLI commands on this host where the API is.
	var ai adminapi.AdminInfo
	b, err := os.ReadFile(filepath.Join(tg.dir, adminapi.AdminInfoName))
	if err != nil || json.Unmarshal(b, &ai) != nil || ai.URL != tg.g.AdminURL() || ai.Fingerprint != tg.g.Fingerprint() {
		t.Fatalf("admin.json: %s %v", b, err)
	}
}

// TestEnrolProvisionLogin: an enrolment code and a registration give a
// card, provisioning gives a credential, and the two log in through the
// gateway's real CoAP port, in both profiles.
func TestEnrolProvisionLogin(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			tg := startGateway(t, testConfig(t.TempDir(), p))
			card := tg.enrol("alice")
			if card.Profile != p || (p == protocol.Hardened && card.KV != 1) {
				t.Fatalf("card %+v", card)
			}
			cred := tg.provision("sensor-7", "plant-a")
			// No grant yet: policy refuses.
			tg.mustRefuse(card, cred, protocol.ReasonPolicyDenied.Name())
			tg.grant("alice", "plant-a")
			tg.mustLogin(card, cred)

			last := tg.lastAudit(gateway.KindVerify)
			if last.Outcome != gateway.OutcomeOK || last.User != "alice" || last.Device != "sensor-7" || !strings.HasPrefix(last.Source, "127.0.0.1:") || last.Reason != "" {
				t.Fatalf("audit of the login: %+v", last)
			}
			if p == protocol.Hardened && (last.KVUser != 1 || last.KVDevice != 1) {
				t.Fatalf("key versions in the audit: %+v", last)
			}
			// The lists show what was made.
			var users adminapi.UserList
			tg.call(http.MethodGet, "/v1/users", nil, &users)
			if len(users.Users) != 1 || users.Users[0].ID != "alice" || users.Users[0].Revoked {
				t.Fatalf("users %+v", users)
			}
			var devs adminapi.DeviceList
			tg.call(http.MethodGet, "/v1/devices", nil, &devs)
			if len(devs.Devices) != 1 || devs.Devices[0].Group != "plant-a" {
				t.Fatalf("devices %+v", devs)
			}
			var grants adminapi.GrantList
			tg.call(http.MethodGet, "/v1/grants", nil, &grants)
			if len(grants.Grants) != 1 || grants.Grants[0] != (adminapi.Grant{User: "alice", Group: "plant-a"}) {
				t.Fatalf("grants %+v", grants)
			}
			// Ids are taken once.
			tg.callErr(http.MethodPost, "/v1/devices", tg.token, adminapi.DeviceRequest{ID: "sensor-7"}, http.StatusConflict)
			tg.callErr(http.MethodPost, "/v1/enrol-codes", tg.token, adminapi.EnrolCodeRequest{User: "alice"}, http.StatusConflict)
			if p == protocol.Classic {
				// One namespace: a device may not take a user's id.
				e := tg.callErr(http.MethodPost, "/v1/devices", tg.token, adminapi.DeviceRequest{ID: "alice"}, http.StatusConflict)
				if !strings.Contains(e.Message, "namespace") {
					t.Errorf("classic namespace message %q", e.Message)
				}
			} else {
				tg.provision("alice", "")
			}
		})
	}
}

// TestRegistrationRules: the code is one-time and bound to its user id,
// and refusals say why.
func TestRegistrationRules(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	code := tg.enrolCode("bob")
	// A code for bob cannot register carol, and is used up by trying.
	e := tg.callErr(http.MethodPost, "/v1/register", "", registration(t, protocol.Hardened, "carol", code), http.StatusForbidden)
	if !strings.Contains(e.Message, "another user id") {
		t.Errorf("wrong-user message %q", e.Message)
	}
	e = tg.callErr(http.MethodPost, "/v1/register", "", registration(t, protocol.Hardened, "bob", code), http.StatusUnauthorized)
	if !strings.Contains(e.Message, "unknown, used or expired") {
		t.Errorf("used-code message %q", e.Message)
	}
	// A stale timestamp is refused before the code is spent.
	code = tg.enrolCode("bob")
	stale := registration(t, protocol.Hardened, "bob", code)
	stale.T -= 60_000
	e = tg.callErr(http.MethodPost, "/v1/register", "", stale, http.StatusBadRequest)
	if !strings.Contains(e.Message, "clock") {
		t.Errorf("stale message %q", e.Message)
	}
	// Another profile is refused with what to do.
	wrong := registration(t, protocol.Classic, "bob", code)
	e = tg.callErr(http.MethodPost, "/v1/register", "", wrong, http.StatusBadRequest)
	if !strings.Contains(e.Message, "hardened") {
		t.Errorf("profile message %q", e.Message)
	}
	// The code still works, spelled in lower case without dashes.
	good := registration(t, protocol.Hardened, "bob", strings.ToLower(strings.ReplaceAll(code, "-", "")))
	var cj adminapi.Card
	if err := adminapi.PostJSON(context.Background(), tg.hc, tg.url("/v1/register"), "", good, &cj); err != nil {
		t.Fatalf("register with the unspent code: %v", err)
	}
	// Malformed bodies: specific messages, nothing echoed.
	for _, c := range []struct {
		body   string
		status int
		want   string
	}{
		{`{"code":"x","nope":1}`, 400, "unknown field"},
		{`{"code":`, 400, "truncated"},
		{`{"code":"x"} {}`, 400, "after the JSON"},
		{``, 400, "empty"},
		{`{"code":"x","profile":"hardened","id":"bob2","w":"zz","r":"00","t":1}`, 400, "64 hex digits"},
		{`{"code":"` + strings.Repeat("A", 70<<10) + `"}`, 413, "over"},
	} {
		resp, err := tg.hc.Post(tg.url("/v1/register"), "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		var eb adminapi.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(eb.Error, c.want) {
			t.Errorf("body %.40q: %d %q, want %d containing %q", c.body, resp.StatusCode, eb.Error, c.status, c.want)
		}
	}
	// Refused registrations are audited with their reason.
	var reasons []string
	for _, r := range tg.auditPage("?kind=enrol&outcome=refused").Records {
		reasons = append(reasons, r.Reason)
	}
	got := strings.Join(reasons, ",")
	for _, want := range []string{"code for another user", "enrolment code invalid", protocol.ReasonStaleReg.Name(), "profile mismatch"} {
		if !strings.Contains(got, want) {
			t.Errorf("refused enrolments audited as %q, missing %q", got, want)
		}
	}
}

// TestRevocation: a revoked user or device is refused on the very next
// verify, with wire code rejected and the precise reason in the audit.
func TestRevocation(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	alice, bob := tg.enrol("alice"), tg.enrol("bob")
	d1, d2 := tg.provision("d1", "g"), tg.provision("d2", "g")
	tg.grant("alice", "g")
	tg.grant("bob", "*")
	tg.mustLogin(alice, d1)
	tg.mustLogin(bob, d2)

	var rv adminapi.Revoked
	tg.call(http.MethodPost, "/v1/users/alice/revoke", nil, &rv)
	if rv.ID != "alice" || rv.RevokedAt.IsZero() {
		t.Fatalf("revoke answer %+v", rv)
	}
	tg.mustRefuse(alice, d1, protocol.ReasonRevokedUser.Name())
	tg.mustLogin(bob, d1)

	tg.call(http.MethodPost, "/v1/devices/d2/revoke", nil, nil)
	tg.mustRefuse(bob, d2, protocol.ReasonRevokedDevice.Name())
	tg.mustLogin(bob, d1)

	// Ungrant: bob's "*" goes, so d1 refuses him by policy.
	tg.call(http.MethodDelete, "/v1/grants", adminapi.Grant{User: "bob", Group: "*"}, nil)
	tg.mustRefuse(bob, d1, protocol.ReasonPolicyDenied.Name())
	tg.callErr(http.MethodDelete, "/v1/grants", tg.token, adminapi.Grant{User: "bob", Group: "*"}, http.StatusNotFound)

	tg.callErr(http.MethodPost, "/v1/users/nobody/revoke", tg.token, nil, http.StatusNotFound)
	// Revoked ids stay taken.
	tg.callErr(http.MethodPost, "/v1/enrol-codes", tg.token, adminapi.EnrolCodeRequest{User: "alice"}, http.StatusConflict)

	// Revocations are audited.
	page := tg.auditPage("?kind=revoke")
	if len(page.Records) != 2 || page.Records[0].User != "alice" || page.Records[1].Device != "d2" {
		t.Fatalf("revoke audit %+v", page.Records)
	}
	// The list shows the revocation.
	var users adminapi.UserList
	tg.call(http.MethodGet, "/v1/users", nil, &users)
	if !users.Users[0].Revoked || users.Users[0].RevokedAt == nil {
		t.Fatalf("users after revoke %+v", users.Users)
	}
}

// TestNoSecretsLogged: the audit output and the log hold no token, code,
// key, tag or card material.
func TestNoSecretsLogged(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	code := tg.enrolCode("alice")
	body := registration(t, protocol.Hardened, "alice", code)
	var cj adminapi.Card
	if err := adminapi.PostJSON(context.Background(), tg.hc, tg.url("/v1/register"), "", body, &cj); err != nil {
		t.Fatal(err)
	}
	card, _ := cj.Card()
	cred := tg.provision("d1", "")
	tg.grant("alice", "*")
	tg.mustLogin(card, cred)
	tg.stop() // flushes the audit writer
	kf, err := keyfile.Load(filepath.Join(tg.dir, keyfile.FileName))
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"token": tg.token, "code": code, "code without dashes": strings.ReplaceAll(code, "-", ""),
		"w": body.W, "r": body.R, "alpha": cj.Alpha,
		"tag": hex.EncodeToString(cred.Tag[:]), "master key": hex.EncodeToString(kf.Keys[0].Key[:]),
	}
	out := tg.audit.String() + tg.logs.String()
	if !strings.Contains(out, `"kind":"verify"`) {
		t.Fatalf("audit output has no verify record:\n%s", out)
	}
	for name, s := range secrets {
		if strings.Contains(strings.ToLower(out), strings.ToLower(s)) {
			t.Errorf("the %s appears in the log output", name)
		}
	}
}

// TestAuditOfHostileIdentity: a verify for an unknown identity with
// terminal escapes in it is audited with the identity in hex.
func TestAuditOfHostileIdentity(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	now := uint64(time.Now().UnixMilli())
	m2 := protocol.M2{Profile: protocol.Hardened, ID: []byte("evil\x1b[2J"), KV: 1, DID: []byte("d\x07"), KVDev: 1, T1: now, T2: now}
	rand.Read(m2.Nonce[:])
	code, resp, err := tg.coap.Post(context.Background(), tg.g.CoAPPublic(), gateway.VerifyPath, m2.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, wc, _ := protocol.ParseError(resp); code != coap.Unauthorized || wc != protocol.ErrRejected {
		t.Fatalf("answer %v %v", code, wc)
	}
	last := tg.lastAudit(gateway.KindVerify)
	if last.User != "hex:"+hex.EncodeToString([]byte("evil\x1b[2J")) || last.Device != "hex:6407" || last.Reason != protocol.ReasonUnknownUser.Name() {
		t.Fatalf("audit %+v", last)
	}
	if strings.ContainsRune(tg.audit.String(), 0x1b) || strings.Contains(tg.audit.String(), `\u001b`) {
		t.Fatal("escape character reached the audit output")
	}
}

// TestMalformedDatagrams: garbage on the verify port is dropped or
// answered 4.00, counted, audited as malformed when it reached the
// protocol, and the gateway keeps serving.
func TestMalformedDatagrams(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	card := tg.enrol("alice")
	cred := tg.provision("d1", "")
	tg.grant("alice", "*")

	conn, err := net.Dial("udp", tg.g.CoAPPublic())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := tg.g.CoAPStats().Malformed.Load()
	for _, d := range [][]byte{{0xff}, {0x00, 0x01}, bytes.Repeat([]byte{0xaa}, 200), {0x40, 0x02, 0x00}} {
		if _, err := conn.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	// The server logs each malformed datagram (debug) once counted: await
	// wakes on the log line.
	await(t, 10*time.Second, "malformed datagrams counted", func() bool { return tg.g.CoAPStats().Malformed.Load() >= before+3 })

	// A well-formed CoAP request whose payload is not m2: 4.00 malformed.
	for _, payload := range [][]byte{nil, {0x02}, {0x02, 0x02, 0x00}, bytes.Repeat([]byte{0x02}, 300), {0x07, 0x02}} {
		code, resp, err := tg.coap.Post(context.Background(), tg.g.CoAPPublic(), gateway.VerifyPath, payload)
		if err != nil {
			t.Fatal(err)
		}
		_, wc, perr := protocol.ParseError(resp)
		if code != coap.BadRequest || perr != nil || (wc != protocol.ErrMalformed && wc != protocol.ErrUnsupportedProfile) {
			t.Fatalf("payload %x: %v %v %v", payload, code, wc, perr)
		}
	}
	last := tg.lastAudit(gateway.KindVerify)
	if last.Outcome != gateway.OutcomeRefused || (last.Reason != protocol.ReasonBadMessage.Name() && last.Reason != protocol.ReasonWrongProfile.Name()) {
		t.Fatalf("audit of a malformed m2: %+v", last)
	}
	// Unknown path: 4.04, and still serving.
	if code, _, err := tg.coap.Post(context.Background(), tg.g.CoAPPublic(), "/tagauth/nope", []byte{1}); err != nil || code != coap.NotFound {
		t.Fatalf("unknown path: %v %v", code, err)
	}
	tg.mustLogin(card, cred)
}

// TestRestartKeepsState: users, devices, grants, revocations, token,
// certificate and the audit log survive a restart on the same directory.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	tg := startGateway(t, testConfig(dir, protocol.Hardened))
	alice, bob := tg.enrol("alice"), tg.enrol("bob")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	tg.grant("bob", "g")
	tg.mustLogin(alice, cred)
	tg.call(http.MethodPost, "/v1/users/bob/revoke", nil, nil)
	fp, token := tg.g.Fingerprint(), tg.token
	tg.stop()

	tg2 := startGateway(t, testConfig(dir, protocol.Hardened))
	if tg2.g.Fingerprint() != fp || tg2.token != token {
		t.Fatal("certificate or token changed across a restart")
	}
	// The credential names the old port; dial the new one.
	cred.Gateway = tg2.g.CoAPPublic()
	tg2.mustLogin(alice, cred)
	tg2.mustRefuse(bob, cred, protocol.ReasonRevokedUser.Name())
	// Audit records of the first run were flushed at shutdown.
	page := tg2.auditPage("?kind=verify&user=alice&outcome=ok")
	if len(page.Records) != 2 {
		t.Fatalf("alice's logins in the audit after restart: %d, want 2", len(page.Records))
	}
	tg2.callErr(http.MethodPost, "/v1/devices", tg2.token, adminapi.DeviceRequest{ID: "d1"}, http.StatusConflict)
}

// TestRefuseToStart: each condition stops Open with a message that says
// what to do.
func TestRefuseToStart(t *testing.T) {
	fresh := func(t *testing.T, p protocol.Profile) string {
		dir := t.TempDir()
		g, err := gateway.Open(testConfig(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	expect := func(t *testing.T, cfg gateway.Config, want ...string) {
		t.Helper()
		g, err := gateway.Open(cfg)
		if err == nil {
			g.Close()
			t.Fatalf("Open succeeded, want an error with %q", want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	}
	t.Run("key file mode", func(t *testing.T) {
		dir := fresh(t, protocol.Hardened)
		kp := filepath.Join(dir, keyfile.FileName)
		if err := os.Chmod(kp, 0o644); err != nil {
			t.Fatal(err)
		}
		expect(t, testConfig(dir, protocol.Hardened), "chmod 600", kp)
	})
	t.Run("corrupt key file", func(t *testing.T) {
		dir := fresh(t, protocol.Hardened)
		if err := os.WriteFile(filepath.Join(dir, keyfile.FileName), []byte(`{"profile":"hardened","keys":[`), 0o600); err != nil {
			t.Fatal(err)
		}
		expect(t, testConfig(dir, protocol.Hardened), "restore it from a backup")
	})
	t.Run("corrupt store", func(t *testing.T) {
		dir := fresh(t, protocol.Hardened)
		sp := filepath.Join(dir, bolt.FileName)
		junk := make([]byte, 64<<10)
		rand.Read(junk)
		if err := os.WriteFile(sp, junk, 0o600); err != nil {
			t.Fatal(err)
		}
		expect(t, testConfig(dir, protocol.Hardened), "corrupt", "restore")
	})
	t.Run("store locked", func(t *testing.T) {
		dir := fresh(t, protocol.Hardened)
		g, err := gateway.Open(testConfig(dir, protocol.Hardened))
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		expect(t, testConfig(dir, protocol.Hardened), "locked", "another tagauth gateway")
	})
	t.Run("profile mismatch", func(t *testing.T) {
		dir := fresh(t, protocol.Hardened)
		expect(t, testConfig(dir, protocol.Classic), "--profile hardened")
	})
	t.Run("token file mode", func(t *testing.T) {
		dir := fresh(t, protocol.Hardened)
		if err := os.Chmod(filepath.Join(dir, adminapi.TokenFileName), 0o640); err != nil {
			t.Fatal(err)
		}
		expect(t, testConfig(dir, protocol.Hardened), "chmod 600")
	})
	t.Run("short token", func(t *testing.T) {
		cfg := testConfig(t.TempDir(), protocol.Hardened)
		cfg.AdminToken = "short"
		expect(t, cfg, "bits of entropy")
	})
	t.Run("port taken", func(t *testing.T) {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cfg := testConfig(t.TempDir(), protocol.Hardened)
		cfg.CoAPAddr = c.LocalAddr().String()
		expect(t, cfg, "--coap")
	})
}

// TestKeyRotation: a rotation made in the key file reaches the running
// gateway: new credentials use the new version, old cards keep working
// until their version is retired, and both changes are audited.
func TestKeyRotation(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	alice := tg.enrol("alice")
	d1 := tg.provision("d1", "")
	tg.grant("alice", "*")
	tg.mustLogin(alice, d1)

	kp := filepath.Join(tg.dir, keyfile.FileName)
	kf, err := keyfile.Load(kp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kf.Rotate(rand.Reader, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := kf.Save(kp); err != nil {
		t.Fatal(err)
	}
	waitVersions(t, tg, "1,2")
	d2 := tg.provision("d2", "")
	if d2.KV != 2 {
		t.Fatalf("credential after rotation has kv %d, want 2", d2.KV)
	}
	bob := tg.enrol("bob")
	if bob.KV != 2 {
		t.Fatalf("card after rotation has kv %d, want 2", bob.KV)
	}
	tg.grant("bob", "*")
	tg.mustLogin(alice, d2) // kv 1 card, kv 2 device
	tg.mustLogin(bob, d1)

	if err := kf.Retire(1); err != nil {
		t.Fatal(err)
	}
	if err := kf.Save(kp); err != nil {
		t.Fatal(err)
	}
	waitVersions(t, tg, "2")
	tg.mustRefuse(alice, d2, protocol.ReasonUnknownKeyVersion.Name())
	tg.mustRefuse(bob, d1, protocol.ReasonUnknownKeyVersion.Name())
	r := tg.login(bob, d2)
	if r.code != coap.Changed || !r.match {
		t.Fatalf("kv 2 login after retiring 1: %+v", r)
	}
	var what []string
	for _, rec := range tg.auditPage("?kind=key").Records {
		what = append(what, rec.Reason+":"+rec.Detail)
	}
	got := strings.Join(what, "|")
	if !strings.Contains(got, "added:key version 2") || !strings.Contains(got, "retired:key version 1") {
		t.Fatalf("key audit %q", got)
	}

	// A key file that goes bad is reported and the keys in use stay.
	if err := os.Chmod(kp, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tg.g.ReloadKeys(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("ReloadKeys on a 0644 file: %v", err)
	}
	tg.mustLogin(bob, d2)
}

func waitVersions(t *testing.T, tg *testGW, want string) {
	t.Helper()
	await(t, 10*time.Second, "key versions "+want, func() bool {
		var info adminapi.Info
		tg.call(http.MethodGet, "/v1/info", nil, &info)
		var s []string
		for _, v := range info.KeyVersions {
			s = append(s, itoa(uint64(v)))
		}
		return strings.Join(s, ",") == want
	})
}

// fullStore is a store whose disk is full for device creation.
type fullStore struct{ store.Store }

func (fullStore) CreateDevice(context.Context, store.Device, protocol.Profile) error {
	return store.ErrFull
}

// TestDiskFull: a store that reports a full disk gives 507 and a message
// that says what to do; nothing changes in the registry.
func TestDiskFull(t *testing.T) {
	// The store lives outside the data directory: a data directory with a
	// store and no key file is refused (datadir.go).
	st, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Store = fullStore{st}
	tg := startGateway(t, cfg)
	e := tg.callErr(http.MethodPost, "/v1/devices", tg.token, adminapi.DeviceRequest{ID: "d1"}, http.StatusInsufficientStorage)
	if !strings.Contains(e.Message, "disk is full") || !strings.Contains(e.Message, "nothing was changed") {
		t.Errorf("507 message %q", e.Message)
	}
	var devs adminapi.DeviceList
	tg.call(http.MethodGet, "/v1/devices", nil, &devs)
	if len(devs.Devices) != 0 {
		t.Fatalf("device created despite the full disk: %+v", devs)
	}
}

// TestRunStopsOnCancel: Run returns nil after its context ends, the ports
// are closed, and a second Run is refused.
func TestRunStopsOnCancel(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	addr := tg.g.AdminURL()
	tg.stop()
	if err := tg.g.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
	if c, err := tlsDial(addr, tls.VersionTLS13); err == nil {
		c.Close()
		t.Fatal("admin port still open after Run returned")
	}
}

package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// fastKDF keeps Argon2id cheap in tests; the parameters are within range.
var fastKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

const password = "correct horse battery staple"

// syncBuffer is a bytes.Buffer safe for the gateway's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer wake.fire()
	return s.b.Write(p)
}

// wakeBus wakes the tests waiting in await: it fires on every write to a
// test gateway's log or audit output and on every state change of a
// running test gateway (gateway.StateChanged).
type wakeBus struct {
	mu sync.Mutex
	ch chan struct{}
}

var wake wakeBus

// wait returns a channel closed at the next fire; take it before looking.
func (b *wakeBus) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *wakeBus) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// await waits until cond holds, looking again each time a test gateway's
// state changes or it writes a log or audit line, and fails the test after
// limit. It returns how long it waited.
func await(t testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for {
		next := wake.wait()
		if cond() {
			return time.Since(start)
		}
		select {
		case <-next:
		case <-timeout.C:
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testGW is a gateway running on loopback ports in a test's directory.
type testGW struct {
	t      testing.TB
	dir    string
	g      *gateway.Gateway
	cancel context.CancelFunc
	done   chan error
	token  string
	hc     *http.Client
	audit  *testenv.LockedBuffer // the JSON audit lines
	logs   *testenv.LockedBuffer // the operational log
	coap   *coap.Client
}

func testConfig(dir string, p protocol.Profile) gateway.Config {
	return gateway.Config{
		DataDir:   dir,
		Profile:   p,
		CoAPAddr:  "127.0.0.1:0",
		AdminAddr: "127.0.0.1:0",
		KeyPoll:   20 * time.Millisecond,
		// These tests read each refusal's record; sampling has its own
		// (audit_test.go, e2e/attack_audit_test.go).
		AuditSampleEvery: -1,
		// Cards use fastKDF, below the enrolment floor.
		InsecureTestKDF: true,
	}
}

// startGateway opens and runs a gateway; it is stopped at the end of the
// test unless the test stops it first.
func startGateway(t testing.TB, cfg gateway.Config) *testGW {
	t.Helper()
	tg := &testGW{t: t, dir: cfg.DataDir, audit: &testenv.LockedBuffer{}, logs: &testenv.LockedBuffer{},
		coap: &coap.Client{ACKTimeout: 100 * time.Millisecond, MaxRetransmit: 4}}
	cfg.AuditOut = tg.audit
	cfg.Logger = slog.New(slog.NewJSONHandler(tg.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := gateway.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	tg.g = g
	ctx, cancel := context.WithCancel(context.Background())
	tg.cancel = cancel
	tg.done = make(chan error, 1)
	go func() { tg.done <- g.Run(ctx) }()
	go func() { // the gateway's state changes wake await
		for {
			select {
			case <-gateway.StateChanged(g):
				wake.fire()
			case <-ctx.Done():
				return
			}
		}
	}()
	if cfg.AdminToken != "" {
		tg.token = cfg.AdminToken
	} else {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, adminapi.TokenFileName))
		if err != nil {
			t.Fatal(err)
		}
		tg.token = strings.TrimSpace(string(b))
	}
	tg.hc, err = adminapi.PinnedClient(g.Fingerprint(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.stop() })
	return tg
}

// stop shuts the gateway down and waits for Run; stopping twice is fine.
func (tg *testGW) stop() {
	tg.t.Helper()
	if tg.cancel == nil {
		return
	}
	tg.cancel()
	tg.cancel = nil
	if err := <-tg.done; err != nil {
		tg.t.Errorf("Run: %v", err)
	}
}

func (tg *testGW) url(path string) string { return tg.g.AdminURL() + path }

// call is an admin API call with the token; it fails the test on error.
func (tg *testGW) call(method, path string, in, out any) {
	tg.t.Helper()
	if err := adminapi.DoJSON(context.Background(), tg.hc, method, tg.url(path), tg.token, in, out); err != nil {
		tg.t.Fatalf("%s %s: %v", method, path, err)
	}
}

// callErr is an admin API call expected to fail with status.
func (tg *testGW) callErr(method, path, token string, in any, status int) *adminapi.APIError {
	tg.t.Helper()
	err := adminapi.DoJSON(context.Background(), tg.hc, method, tg.url(path), token, in, nil)
	var ae *adminapi.APIError
	if !errors.As(err, &ae) || ae.Status != status {
		tg.t.Fatalf("%s %s: got %v, want status %d", method, path, err, status)
	}
	return ae
}

func (tg *testGW) enrolCode(user string) string {
	tg.t.Helper()
	var c adminapi.EnrolCode
	tg.call(http.MethodPost, "/v1/enrol-codes", adminapi.EnrolCodeRequest{User: user}, &c)
	if c.Code == "" || !c.Expires.After(time.Now()) {
		tg.t.Fatalf("enrol code answer %+v", c)
	}
	return c.Code
}

// registration builds m_reg for user id the way the user CLI does.
func registration(t testing.TB, p protocol.Profile, id, code string) adminapi.RegisterRequest {
	t.Helper()
	req, err := protocol.NewRegistrationRequest(p, id, password, fastKDF, clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	return adminapi.RegisterRequest{Code: code, Profile: p.String(), ID: id, W: hex.EncodeToString(req.W[:]),
		R: hex.EncodeToString(req.R[:]), T: req.T, KDF: adminapi.KDF{T: req.KDF.Time, MKiB: req.KDF.MemoryKiB, P: req.KDF.Threads}}
}

// enrol registers user id and returns the card.
func (tg *testGW) enrol(id string) protocol.Card {
	tg.t.Helper()
	body := registration(tg.t, tg.g.Profile(), id, tg.enrolCode(id))
	var cj adminapi.Card
	// Registration needs no token: the code authenticates it.
	if err := adminapi.PostJSON(context.Background(), tg.hc, tg.url("/v1/register"), "", body, &cj); err != nil {
		tg.t.Fatalf("register %s: %v", id, err)
	}
	card, err := cj.Card()
	if err != nil {
		tg.t.Fatal(err)
	}
	if card.ID != id || hex.EncodeToString(card.R[:]) != body.R {
		tg.t.Fatalf("card for another request: %+v", cj)
	}
	return card
}

// provision provisions a device and returns its credential file content.
func (tg *testGW) provision(id, group string) credfile.Credential {
	tg.t.Helper()
	var raw jsonRaw
	tg.call(http.MethodPost, "/v1/devices", adminapi.DeviceRequest{ID: id, Group: group}, &raw)
	c, err := credfile.Unmarshal(raw)
	if err != nil {
		tg.t.Fatalf("provision %s: credential does not parse: %v", id, err)
	}
	if c.ID != id || c.Gateway != tg.g.CoAPPublic() || c.Fingerprint != tg.g.Fingerprint() || c.AdminURL != tg.g.AdminURL() {
		tg.t.Fatalf("credential for %s: %+v", id, c)
	}
	return c
}

func (tg *testGW) grant(user, group string) {
	tg.t.Helper()
	tg.call(http.MethodPost, "/v1/grants", adminapi.Grant{User: user, Group: group}, nil)
}

// jsonRaw keeps an answer's bytes as they came.
type jsonRaw []byte

func (j *jsonRaw) UnmarshalJSON(b []byte) error {
	*j = append((*j)[:0], b...)
	return nil
}

func clientConfig() protocol.Config {
	return protocol.Config{Now: time.Now, Rand: rand.Reader}
}

// loginResult is what one login attempt through the real CoAP port gave.
type loginResult struct {
	code  coap.Code         // the gateway's CoAP answer to m2
	wire  protocol.Code     // the error code in the answer, if any
	match bool              // both ends derived the same session
	err   error             // a local failure (never a refusal)
	sess  *protocol.Session // the user's session on success
}

// login runs one whole login: card and device roles in process, m2 sent
// to the gateway's CoAP port over UDP.
func (tg *testGW) login(card protocol.Card, cred credfile.Credential) loginResult {
	tg.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := clientConfig()
	u, err := protocol.Unlock(card, password, cfg)
	if err != nil {
		return loginResult{err: err}
	}
	defer u.Close()
	l, m1, err := u.Login(nil, cred.ID)
	if err != nil {
		return loginResult{err: err}
	}
	defer l.Close()
	dev, err := protocol.NewDevice(cred.DeviceCredential, replay.New(64), cfg)
	if err != nil {
		return loginResult{err: err}
	}
	dl, m2, err := dev.Start(ctx, nil, m1)
	if err != nil {
		return loginResult{err: err}
	}
	defer dl.Close()
	code, m3, err := tg.coap.Post(ctx, cred.Gateway, gateway.VerifyPath, m2)
	if err != nil {
		return loginResult{err: err}
	}
	if code != coap.Changed {
		_, wc, perr := protocol.ParseError(m3)
		if perr != nil {
			return loginResult{code: code, err: perr}
		}
		return loginResult{code: code, wire: wc}
	}
	m4, dsess, err := dl.Respond(nil, m3)
	if err != nil {
		return loginResult{code: code, err: err}
	}
	usess, m5, err := l.Finish(nil, m4)
	if err != nil {
		return loginResult{code: code, err: err}
	}
	if m5 != nil {
		if dsess, err = dl.Confirm(m5); err != nil {
			return loginResult{code: code, err: err}
		}
	}
	return loginResult{code: code, match: usess.Fingerprint() == dsess.Fingerprint(), sess: usess}
}

func (tg *testGW) mustLogin(card protocol.Card, cred credfile.Credential) {
	tg.t.Helper()
	r := tg.login(card, cred)
	if r.err != nil || r.code != coap.Changed || !r.match {
		tg.t.Fatalf("login %s -> %s: code %v wire %v match %v err %v", card.ID, cred.ID, r.code, r.wire, r.match, r.err)
	}
}

// mustRefuse checks that a login is refused on the wire with rejected and
// that the audit log has the precise reason.
func (tg *testGW) mustRefuse(card protocol.Card, cred credfile.Credential, reason string) {
	tg.t.Helper()
	r := tg.login(card, cred)
	if r.err != nil || r.code != coap.Unauthorized || r.wire != protocol.ErrRejected {
		tg.t.Fatalf("login %s -> %s: code %v wire %v err %v; want 4.01 rejected", card.ID, cred.ID, r.code, r.wire, r.err)
	}
	last := tg.lastAudit(gateway.KindVerify)
	if last.Outcome != gateway.OutcomeRefused || last.Reason != reason || last.User != card.ID || last.Device != cred.ID {
		tg.t.Fatalf("audit of the refused login: %+v, want reason %q", last, reason)
	}
}

// auditPage queries the admin API's audit log.
func (tg *testGW) auditPage(query string) adminapi.AuditPage {
	tg.t.Helper()
	var page adminapi.AuditPage
	tg.call(http.MethodGet, "/v1/audit"+query, nil, &page)
	return page
}

// lastAudit returns the newest audit record of a kind.
func (tg *testGW) lastAudit(kind string) adminapi.AuditEntry {
	tg.t.Helper()
	var last adminapi.AuditEntry
	after := uint64(0)
	for {
		page := tg.auditPage("?kind=" + kind + "&limit=1000&after=" + itoa(after))
		if len(page.Records) == 0 {
			break
		}
		last = page.Records[len(page.Records)-1]
		after = page.Next
	}
	if last.Seq == 0 {
		tg.t.Fatalf("no %s audit record", kind)
	}
	return last
}

func itoa(u uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			return string(b[i:])
		}
	}
}

// awaitAdminConns waits until cond holds of the admin connections open
// from from and the number refused, woken by every refusal and close the
// admin listener sees, for at most 10 s.
func awaitAdminConns(t *testing.T, g *gateway.Gateway, from netip.Addr, what string, cond func(open int, refused uint64) bool) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		changed := gateway.AdminConnsChanged(g)
		open, refused := gateway.AdminConns(g, from)
		if cond(open, refused) {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s: %d open from %v, %d refused", what, open, from, refused)
		}
	}
}

var _ io.Writer = (*syncBuffer)(nil)

// tlsDial opens a TLS connection to the host of an https URL with at most
// the given TLS version.
func tlsDial(url string, maxVersion uint16) (*tls.Conn, error) {
	host := strings.TrimPrefix(url, "https://")
	return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", host,
		&tls.Config{InsecureSkipVerify: true, MaxVersion: maxVersion}) // test only: no pin needed to see the handshake fail
}

package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// m2For runs a login's card and device steps and returns m2, ready for the
// gateway; tamper, if not nil, edits it first.
func (tg *testGW) m2For(card protocol.Card, cred credfile.Credential, tamper func(*protocol.M2)) []byte {
	tg.t.Helper()
	cfg := clientConfig()
	u, err := protocol.Unlock(card, password, cfg)
	if err != nil {
		tg.t.Fatal(err)
	}
	defer u.Close()
	l, m1, err := u.Login(nil, cred.ID)
	if err != nil {
		tg.t.Fatal(err)
	}
	defer l.Close()
	dev, err := protocol.NewDevice(cred.DeviceCredential, replay.New(64), cfg)
	if err != nil {
		tg.t.Fatal(err)
	}
	dl, m2, err := dev.Start(context.Background(), nil, m1)
	if err != nil {
		tg.t.Fatal(err)
	}
	defer dl.Close()
	if tamper != nil {
		m, err := protocol.ParseM2(m2)
		if err != nil {
			tg.t.Fatal(err)
		}
		tamper(&m)
		m2 = m.Append(nil)
	}
	return m2
}

// post sends m2 to the gateway and returns its CoAP code and answer.
func (tg *testGW) post(m2 []byte) (coap.Code, []byte) {
	tg.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, out, err := tg.coap.Post(ctx, tg.g.CoAPPublic(), gateway.VerifyPath, m2)
	if err != nil {
		tg.t.Fatal(err)
	}
	return code, out
}

// badE returns the card with one bit of alpha_i flipped: it unlocks, but
// its Tag_i is wrong, so its logins' E_i do not verify while the genuine
// device's I_j does: what a wrong password that got past the card's fuzzy
// verifier, or a forged card, looks like to the gateway.
func badE(c protocol.Card) protocol.Card {
	c.Alpha[0] ^= 1
	return c
}

// rejectedWire is the exact answer to every rejected verify.
var rejectedWire = protocol.AppendError(nil, protocol.Hardened, protocol.ErrRejected)

// TestLockout: five failures lock the user; the sixth attempt is refused
// even with the right password, on the wire exactly like a wrong one,
// while the audit log says "user locked"; unlock lets the user in again.
func TestLockout(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Lockout = lockout.Policy{MaxFailures: 5, Window: time.Minute, LockFor: time.Hour}
	tg := startGateway(t, cfg)
	alice, bob := tg.enrol("alice"), tg.enrol("bob")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	tg.grant("bob", "g")
	tg.mustLogin(alice, cred)

	for i := 1; i <= 5; i++ {
		code, out := tg.post(tg.m2For(badE(alice), cred, nil))
		if code != coap.Unauthorized || !bytes.Equal(out, rejectedWire) {
			t.Fatalf("bad attempt %d: %v %x", i, code, out)
		}
		if last := tg.lastAudit(gateway.KindVerify); last.Reason != protocol.ReasonBadE.Name() {
			t.Fatalf("bad attempt %d audited as %+v", i, last)
		}
	}
	lock := tg.lastAudit(gateway.KindLockout)
	if lock.Outcome != gateway.OutcomeLocked || lock.User != "alice" || !strings.Contains(lock.Detail, "5 failures within 1m0s") {
		t.Fatalf("lockout record %+v", lock)
	}

	// The sixth, with the right password: refused, and the wire cannot
	// tell it from a wrong password.
	code, out := tg.post(tg.m2For(alice, cred, nil))
	if code != coap.Unauthorized || !bytes.Equal(out, rejectedWire) {
		t.Fatalf("locked user with the right password: %v %x, want 4.01 %x", code, out, rejectedWire)
	}
	last := tg.lastAudit(gateway.KindVerify)
	if last.Reason != gateway.ReasonLocked || last.Outcome != gateway.OutcomeRefused || !strings.Contains(last.Detail, "source unverified") || !strings.Contains(last.Detail, "not verified") {
		t.Fatalf("locked attempt audited as %+v", last)
	}
	// A wrong password while locked: refused, not counted again.
	if code, out := tg.post(tg.m2For(badE(alice), cred, nil)); code != coap.Unauthorized || !bytes.Equal(out, rejectedWire) {
		t.Fatalf("locked user, bad E: %v %x", code, out)
	}
	if last := tg.lastAudit(gateway.KindVerify); last.Reason != gateway.ReasonLocked || !strings.Contains(last.Detail, "not verified") {
		t.Fatalf("locked bad attempt audited as %+v", last)
	}
	// Bob is not affected.
	tg.mustLogin(bob, cred)

	var locks adminapi.LockList
	tg.call(http.MethodGet, "/v1/locks", nil, &locks)
	if len(locks.Locks) != 1 || locks.Locks[0].User != "alice" || !locks.Locks[0].Until.After(time.Now().Add(59*time.Minute)) {
		t.Fatalf("locks %+v", locks)
	}
	m := tg.scrape(tg.token)
	m.want(t, "tagauth_gateway_lockouts_total", nil, 1)
	m.want(t, "tagauth_gateway_locked_users", nil, 1)
	m.want(t, "tagauth_gateway_verify_total", map[string]string{"reason": gateway.ReasonLocked}, 2)

	// Unlock: alice logs in again; the audit says who unlocked.
	var un adminapi.Unlocked
	tg.call(http.MethodPost, "/v1/users/alice/unlock", nil, &un)
	if !un.WasLocked || un.ID != "alice" {
		t.Fatalf("unlock answer %+v", un)
	}
	if rec := tg.lastAudit(gateway.KindLockout); rec.Outcome != gateway.OutcomeOK || rec.Reason != "unlocked by admin" || rec.User != "alice" || rec.Source == "" {
		t.Fatalf("unlock record %+v", rec)
	}
	tg.mustLogin(alice, cred)
	// Unlock clears the failures too: four more failures do not lock.
	for range 4 {
		tg.post(tg.m2For(badE(alice), cred, nil))
	}
	tg.mustLogin(alice, cred)
	tg.callErr(http.MethodPost, "/v1/users/nobody/unlock", tg.token, nil, http.StatusNotFound)
	tg.callErr(http.MethodPost, "/v1/users/alice/unlock", "", nil, http.StatusUnauthorized)
}

// TestLockoutCountsOnlyGuesses: replays, stale timestamps, policy denials
// and unknown users never lock anyone.
func TestLockoutCountsOnlyGuesses(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Lockout = lockout.Policy{MaxFailures: 2}
	tg := startGateway(t, cfg)
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	other := tg.provision("d2", "other")
	tg.grant("alice", "g")

	m2 := tg.m2For(alice, cred, nil)
	if code, _ := tg.post(m2); code != coap.Changed {
		t.Fatalf("first send of m2: %v", code)
	}
	for range 3 { // replays
		if code, _ := tg.post(m2); code != coap.Unauthorized {
			t.Fatalf("replay answered %v", code)
		}
	}
	for range 3 { // stale T1: an old login delayed on the way
		tg.post(tg.m2For(alice, cred, func(m *protocol.M2) { m.T1 -= uint64(time.Hour / time.Millisecond) }))
	}
	for range 3 { // policy
		tg.mustRefuse(alice, other, protocol.ReasonPolicyDenied.Name())
	}
	tg.mustLogin(alice, cred)
	var locks adminapi.LockList
	tg.call(http.MethodGet, "/v1/locks", nil, &locks)
	if len(locks.Locks) != 0 {
		t.Fatalf("locked by failures that are not guesses: %+v", locks)
	}
}

// TestLockoutOff: with lockout disabled, failures lock nobody.
func TestLockoutOff(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.LockoutOff = true
	cfg.Lockout = lockout.Policy{MaxFailures: 1}
	tg := startGateway(t, cfg)
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	for range 3 {
		tg.post(tg.m2For(badE(alice), cred, nil))
	}
	tg.mustLogin(alice, cred)
}

// TestRateLimits: past a source's or a device's burst the gateway answers
// busy without verifying, audits it once, and counts every refusal.
func TestRateLimits(t *testing.T) {
	busyWire := protocol.AppendError(nil, protocol.Hardened, protocol.ErrBusy)
	t.Run("source", func(t *testing.T) {
		cfg := testConfig(t.TempDir(), protocol.Hardened)
		cfg.SourceLimit = gateway.RateLimit{Rate: 0.001, Burst: 3}
		tg := startGateway(t, cfg)
		alice := tg.enrol("alice")
		cred := tg.provision("d1", "g")
		tg.grant("alice", "g")
		for range 3 {
			tg.mustLogin(alice, cred)
		}
		for i := range 3 {
			code, out := tg.post(tg.m2For(alice, cred, nil))
			if code != coap.ServiceUnavailable || !bytes.Equal(out, busyWire) {
				t.Fatalf("request %d past the burst: %v %x, want 5.03 busy", 4+i, code, out)
			}
		}
		recs := tg.auditPage("?kind=verify&outcome=refused").Records
		if len(recs) != 1 || recs[0].Reason != gateway.ReasonLimitedSource || !strings.Contains(recs[0].Detail, "1 requests") {
			t.Fatalf("audit of the limited requests (one record per episode): %+v", recs)
		}
		m := tg.scrape(tg.token)
		m.want(t, "tagauth_gateway_verify_total", map[string]string{"reason": gateway.ReasonLimitedSource, "code": "busy"}, 3)
		m.want(t, "tagauth_gateway_verify_total", map[string]string{"outcome": "ok"}, 3)
	})
	t.Run("device", func(t *testing.T) {
		cfg := testConfig(t.TempDir(), protocol.Hardened)
		cfg.DeviceLimit = gateway.RateLimit{Rate: 0.001, Burst: 2}
		tg := startGateway(t, cfg)
		alice := tg.enrol("alice")
		d1, d2 := tg.provision("d1", "g"), tg.provision("d2", "g")
		tg.grant("alice", "g")
		tg.mustLogin(alice, d1)
		tg.mustLogin(alice, d1)
		if code, out := tg.post(tg.m2For(alice, d1, nil)); code != coap.ServiceUnavailable || !bytes.Equal(out, busyWire) {
			t.Fatalf("third login to d1: %v %x, want busy", code, out)
		}
		tg.mustLogin(alice, d2) // another device has its own bucket
		recs := tg.auditPage("?kind=verify&outcome=refused&device=d1").Records
		if len(recs) != 1 || recs[0].Reason != gateway.ReasonLimitedDevice {
			t.Fatalf("audit %+v", recs)
		}
	})
}

// TestMetricsScrape: after a scripted run the counters say exactly what
// happened, and /metrics needs a token.
func TestMetricsScrape(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.MetricsToken = "metrics-token-for-prometheus"
	tg := startGateway(t, cfg)
	alice, bob := tg.enrol("alice"), tg.enrol("bob")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	for range 3 {
		tg.mustLogin(alice, cred)
	}
	for range 2 {
		tg.mustRefuse(bob, cred, protocol.ReasonPolicyDenied.Name())
	}
	code, _ := tg.post(tg.m2For(badE(alice), cred, nil))
	if code != coap.Unauthorized {
		t.Fatalf("bad E answered %v", code)
	}

	m := tg.scrape(cfg.MetricsToken)
	m.want(t, "tagauth_gateway_verify_total", map[string]string{"outcome": "ok", "code": "ok", "reason": ""}, 3)
	m.want(t, "tagauth_gateway_verify_total", map[string]string{"outcome": "refused", "code": "rejected", "reason": protocol.ReasonPolicyDenied.Name()}, 2)
	m.want(t, "tagauth_gateway_verify_total", map[string]string{"reason": protocol.ReasonBadE.Name()}, 1)
	m.want(t, "tagauth_gateway_verify_total", map[string]string{"reason": protocol.ReasonLoginReplay.Name()}, 0) // resolved at start, so present at zero
	m.want(t, "tagauth_gateway_verify_duration_seconds_count", nil, 6)
	m.want(t, "tagauth_gateway_verify_key_version_total", map[string]string{"role": "user", "kv": "1"}, 3)
	m.want(t, "tagauth_gateway_verify_key_version_total", map[string]string{"role": "device", "kv": "1"}, 3)
	m.want(t, "tagauth_gateway_key_versions", nil, 1)
	m.want(t, "tagauth_gateway_key_newest_version", nil, 1)
	m.want(t, "tagauth_gateway_store_errors_total", map[string]string{"op": "admin"}, 0)
	m.want(t, "tagauth_gateway_locked_users", nil, 0)
	m.want(t, "tagauth_gateway_info", map[string]string{"profile": "hardened"}, 1)
	if got := m.value(t, "tagauth_gateway_coap_received_total", nil); got < 6 {
		t.Errorf("coap received %v, want at least the 6 verifies", got)
	}
	// Each login inserts one replay-cache entry; none has expired yet.
	m.want(t, "tagauth_gateway_replay_cache_entries", nil, 6)
	if got := m.value(t, "tagauth_gateway_audit_queue_depth", nil); got < 0 {
		t.Errorf("audit queue depth %v", got)
	}
	if !strings.Contains(m.text, "go_goroutines") || !strings.Contains(m.text, "process_") {
		t.Error("Go and process collectors missing")
	}
	// No identity ever becomes a label.
	if strings.Contains(m.text, "alice") || strings.Contains(m.text, "bob") || strings.Contains(m.text, "d1\"") {
		t.Error("an identity appears in the metrics")
	}

	// The per-minute statistics of the console agree.
	var st adminapi.Stats
	tg.call(http.MethodGet, "/v1/stats", nil, &st)
	var ok, refused uint64
	for _, mi := range st.Minutes {
		ok, refused = ok+mi.OK, refused+mi.Refused
	}
	if len(st.Minutes) != 60 || ok != 3 || refused != 3 {
		t.Fatalf("stats: %d minutes, %d ok, %d refused; want 60, 3, 3", len(st.Minutes), ok, refused)
	}
	if len(st.Reasons) != 2 || st.Reasons[0].Reason != protocol.ReasonPolicyDenied.Name() || st.Reasons[0].Count != 2 || st.Reasons[1].Count != 1 {
		t.Fatalf("stats reasons %+v", st.Reasons)
	}

	// Tokens: none, wrong, metrics token elsewhere.
	for _, tok := range []string{"", "wrong-wrong-wrong-wrong", cfg.MetricsToken + "x"} {
		if status, _ := tg.get("/metrics", tok); status != http.StatusUnauthorized {
			t.Errorf("/metrics with token %q: %d", tok, status)
		}
	}
	tg.callErr(http.MethodGet, "/v1/users", cfg.MetricsToken, nil, http.StatusUnauthorized)
}

// TestMetricsTokenUnset: without a metrics token only the admin token
// reads /metrics (an empty bearer must not match an empty token).
func TestMetricsTokenUnset(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	if status, _ := tg.get("/metrics", ""); status != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: %d", status)
	}
	tg.scrape(tg.token)
}

// TestAuditNewestFirst: order=desc pages backwards through the same
// records that the default order pages forwards through, filters
// included.
func TestAuditNewestFirst(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	for i := range 7 {
		tg.provision(fmt.Sprint("dev-", i), "g")
	}
	tg.grant("x", "g")
	var all []adminapi.AuditEntry
	for after := uint64(0); ; {
		p := tg.auditPage("?limit=3&after=" + strconv.FormatUint(after, 10))
		if len(p.Records) == 0 {
			break
		}
		all, after = append(all, p.Records...), p.Next
	}
	if len(all) < 8 {
		t.Fatalf("only %d records", len(all))
	}
	var desc []adminapi.AuditEntry
	q := "?order=desc&limit=3"
	for {
		p := tg.auditPage(q)
		if len(p.Records) == 0 {
			break
		}
		desc = append(desc, p.Records...)
		q = "?order=desc&limit=3&before=" + strconv.FormatUint(p.Next, 10)
	}
	if len(desc) != len(all) {
		t.Fatalf("desc paging gave %d records, asc %d", len(desc), len(all))
	}
	for i := range all {
		if desc[len(desc)-1-i].Seq != all[i].Seq {
			t.Fatalf("desc order differs at %d: %d vs %d", i, desc[len(desc)-1-i].Seq, all[i].Seq)
		}
	}
	p := tg.auditPage("?order=desc&kind=provision&limit=2")
	if len(p.Records) != 2 || p.Records[0].Device != "dev-6" || p.Records[1].Device != "dev-5" {
		t.Fatalf("newest provision records: %+v", p.Records)
	}
	tg.callErr(http.MethodGet, "/v1/audit?order=sideways", tg.token, nil, http.StatusBadRequest)
	tg.callErr(http.MethodGet, "/v1/audit?order=desc&after=3", tg.token, nil, http.StatusBadRequest)
	tg.callErr(http.MethodGet, "/v1/audit?before=3", tg.token, nil, http.StatusBadRequest)
}

// TestKeysAPI: rotate and retire through the admin API, as the console
// does; the running gateway serves the change at once.
func TestKeysAPI(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "*")
	var kc adminapi.KeyChange
	tg.call(http.MethodPost, "/v1/keys/rotate", nil, &kc)
	if kc.Version != 2 || kc.Newest != 2 {
		t.Fatalf("rotate: %+v", kc)
	}
	var kl adminapi.KeyList
	tg.call(http.MethodGet, "/v1/keys", nil, &kl)
	if len(kl.Keys) != 2 || kl.Keys[0].Users != 1 || kl.Keys[0].Devices != 1 || !kl.Keys[1].Newest || kl.Keys[1].Users != 0 {
		t.Fatalf("keys: %+v", kl)
	}
	bob := tg.enrol("bob")
	if bob.KV != 2 {
		t.Fatalf("card after rotation has kv %d", bob.KV)
	}
	tg.grant("bob", "*")
	tg.mustLogin(alice, cred) // version 1 still live
	tg.callErr(http.MethodPost, "/v1/keys/2/retire", tg.token, nil, http.StatusConflict)
	tg.callErr(http.MethodPost, "/v1/keys/9/retire", tg.token, nil, http.StatusNotFound)
	tg.callErr(http.MethodPost, "/v1/keys/0/retire", tg.token, nil, http.StatusBadRequest)
	tg.call(http.MethodPost, "/v1/keys/1/retire?force=1", nil, &kc) // alice still holds it
	tg.mustRefuse(alice, cred, protocol.ReasonUnknownKeyVersion.Name())
	if rec := tg.lastAudit(gateway.KindKey); rec.Reason != "retired" {
		t.Fatalf("key audit %+v", rec)
	}
	m := tg.scrape(tg.token)
	m.want(t, "tagauth_gateway_key_versions", nil, 1)
	m.want(t, "tagauth_gateway_key_newest_version", nil, 2)

	classic := startGateway(t, testConfig(t.TempDir(), protocol.Classic))
	e := classic.callErr(http.MethodPost, "/v1/keys/rotate", classic.token, nil, http.StatusConflict)
	if !strings.Contains(e.Message, "classic") {
		t.Fatalf("classic rotate message %q", e.Message)
	}
}

// get fetches an admin path with a bearer token (none if empty).
func (tg *testGW) get(path, token string) (int, string) {
	tg.t.Helper()
	req, err := http.NewRequest(http.MethodGet, tg.url(path), nil)
	if err != nil {
		tg.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tg.hc.Do(req)
	if err != nil {
		tg.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scraped is one /metrics answer.
type scraped struct{ text string }

func (tg *testGW) scrape(token string) scraped {
	tg.t.Helper()
	status, body := tg.get("/metrics", token)
	if status != http.StatusOK {
		tg.t.Fatalf("/metrics: %d %s", status, body)
	}
	return scraped{body}
}

// value sums the samples of name whose labels include want.
func (s scraped) value(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	sum, found := 0.0, false
	sc := bufio.NewScanner(strings.NewReader(s.text))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		metric, val := line[:i], line[i+1:]
		n, labels := metric, map[string]string{}
		if i := strings.IndexByte(metric, '{'); i >= 0 {
			n = metric[:i]
			for _, kv := range splitLabels(metric[i+1 : len(metric)-1]) {
				k, v, _ := strings.Cut(kv, "=")
				labels[k], _ = strconv.Unquote(v)
			}
		}
		if n != name {
			continue
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		sum, found = sum+f, true
	}
	if !found {
		t.Fatalf("no sample of %s%v in:\n%s", name, want, s.text)
	}
	return sum
}

func (s scraped) want(t *testing.T, name string, labels map[string]string, v float64) {
	t.Helper()
	if got := s.value(t, name, labels); got != v {
		t.Errorf("%s%v = %v, want %v", name, labels, got, v)
	}
}

// splitLabels splits a="x",b="y" at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

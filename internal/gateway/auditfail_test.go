package gateway_test

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/protocol"
)

// metric reads one unlabelled metric's value from /metrics.
func (tg *testGW) metric(name string) string {
	tg.t.Helper()
	status, body := tg.get("/metrics", tg.token)
	if status != http.StatusOK {
		tg.t.Fatalf("/metrics: %d", status)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	tg.t.Fatalf("/metrics has no %s", name)
	return ""
}

// While audit records cannot be written (the journal's disk is full), a
// login that verifies is answered busy, never with m3, and an admin action
// is refused with 503 before it takes effect; one log line says so, the
// metric is 1. Once space returns the gateway recovers by itself, says so
// in one line, and the next login is answered and recorded.
func TestAuditFailsClosed(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	tg.mustLogin(alice, cred)

	var full atomic.Bool
	full.Store(true)
	gateway.SetAuditFault(tg.g, func() error {
		if full.Load() {
			return fmt.Errorf("%w (%v)", auditlog.ErrFull, syscall.ENOSPC)
		}
		return nil
	})
	for range 3 {
		r := tg.login(alice, cred)
		if r.code != coap.ServiceUnavailable || r.wire != protocol.ErrBusy {
			t.Fatalf("login while audit cannot be written: %+v, want 5.03 busy", r)
		}
	}
	if v := tg.metric("tagauth_gateway_audit_failing"); v != "1" {
		t.Fatalf("tagauth_gateway_audit_failing = %s while failing, want 1", v)
	}
	// GET /v1/status (tagauth gateway status) says which part is down.
	var st adminapi.Status
	tg.call(http.MethodGet, adminapi.PathStatus, nil, &st)
	if st.OK || st.Audit.OK || !st.Store.OK || !st.Replay.OK || !strings.Contains(st.Audit.Error, "journal") || st.Audit.Since.IsZero() {
		t.Fatalf("status while the journal cannot be written: %+v", st)
	}
	ae := tg.callErr(http.MethodPost, "/v1/devices", tg.token, adminapi.DeviceRequest{ID: "d2", Group: "g"}, http.StatusServiceUnavailable)
	if !strings.Contains(ae.Message, "nothing was done") {
		t.Fatalf("provisioning while failing: %q", ae.Message)
	}
	var devs adminapi.DeviceList
	tg.call(http.MethodGet, "/v1/devices", nil, &devs)
	for _, d := range devs.Devices {
		if d.ID == "d2" {
			t.Fatal("the refused provisioning took effect")
		}
	}
	if n := strings.Count(tg.logs.String(), "audit records cannot be written"); n != 1 {
		t.Fatalf("%d log lines say audit is failing, want exactly 1:\n%s", n, tg.logs.String())
	}

	full.Store(false)
	tg.mustLogin(alice, cred)
	if v := tg.metric("tagauth_gateway_audit_failing"); v != "0" {
		t.Fatalf("tagauth_gateway_audit_failing = %s after recovery, want 0", v)
	}
	st = adminapi.Status{} // a fresh decode: omitted fields must read empty
	tg.call(http.MethodGet, adminapi.PathStatus, nil, &st)
	if !st.OK || !st.Audit.OK || st.Audit.Error != "" || st.Store.Kind != "bbolt" || st.Replay.Kind != "memory" || st.Profile != "hardened" {
		t.Fatalf("status after recovery: %+v", st)
	}
	if n := strings.Count(tg.logs.String(), "audit records are written again"); n != 1 {
		t.Fatalf("%d log lines say audit recovered, want 1", n)
	}
	// Every login answered with m3 has its record: the two successes.
	page := tg.auditPage("?kind=verify&outcome=ok")
	if len(page.Records) != 2 {
		t.Fatalf("%d successful verifies recorded, want 2 (the busy ones are not successes)", len(page.Records))
	}
	tg.provision("d2", "g")
}

// With the default sampling, a flood of refusals leaves a bounded number
// of records, each carrying the refusals it stands for, and their total
// is the number of refusals; a genuine login meanwhile is recorded.
func TestAuditRefusalsSampled(t *testing.T) {
	now := time.Now() // the clients use the real clock too
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.AuditSampleEvery = time.Minute
	cfg.LockoutOff = true
	cfg.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	tg := startGateway(t, cfg)
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")

	const flood = 200
	for i := range flood {
		if code, _ := tg.post(tg.m2For(badE(alice), cred, nil)); code != coap.Unauthorized {
			t.Fatalf("forged login %d answered %v", i, code)
		}
		if i == flood/2 {
			tg.mustLogin(alice, cred)
		}
	}
	clock.Add(int64(time.Minute)) // the interval ends
	if err := gateway.FlushAuditSamples(tg.g); err != nil {
		t.Fatal(err)
	}
	page := tg.auditPage("?kind=verify&limit=1000")
	refused, events, ok := 0, uint64(0), 0
	for _, r := range page.Records {
		switch r.Outcome {
		case gateway.OutcomeOK:
			ok++
		case gateway.OutcomeRefused:
			refused++
			events += max(uint64(r.Count), 1)
			// A sample names whom its refusals concerned, so that a
			// query by user or device finds them.
			if r.User != "alice" || r.Device != "d1" || r.Source == "" {
				t.Errorf("refusal sample for user %q device %q source %q, want alice, d1 and a source", r.User, r.Device, r.Source)
			}
		}
	}
	if ok != 1 {
		t.Fatalf("%d successful logins recorded, want 1", ok)
	}
	if refused > 2 || events != flood {
		t.Fatalf("%d refusal records standing for %d refusals, want at most 2 for %d", refused, events, flood)
	}
	if !strings.Contains(tg.metricLine("tagauth_gateway_audit_refusals_total"), fmt.Sprint(flood)) {
		t.Fatalf("refusal counter: %s", tg.metricLine("tagauth_gateway_audit_refusals_total"))
	}
}

// metricLine returns the first /metrics line of a metric (with labels).
func (tg *testGW) metricLine(name string) string {
	tg.t.Helper()
	_, body := tg.get("/metrics", tg.token)
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	return ""
}

// Retention: records older than keep are pruned, newer ones stay.
func TestAuditRetention(t *testing.T) {
	now := time.Now() // the clients use the real clock too
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	tg := startGateway(t, cfg)
	tg.enrol("alice") // two records: code issued, registered
	// A query waits for them to be stored: the embedded store prunes
	// whole runs of records stored together.
	tg.auditPage("")
	clock.Add(int64(48 * time.Hour))
	tg.provision("d1", "g") // one record, two days later
	if n := gateway.PruneAuditNow(tg.g, 24*time.Hour); n != 2 {
		t.Fatalf("pruned %d records older than a day, want 2", n)
	}
	page := tg.auditPage("")
	if len(page.Records) != 1 || page.Records[0].Kind != gateway.KindProvision {
		t.Fatalf("records after pruning: %+v", page.Records)
	}
}

// TestVerifyRecordCommittedByBatch: a successful login's record is
// written by its CoAP receive batch's commit (one write per batch, before
// the batch's answers leave: coap.Server.Commit), not by the handler one
// write per login.
func TestVerifyRecordCommittedByBatch(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")

	var byBatch, byHandler atomic.Int32
	gateway.SetAuditFault(tg.g, func() error {
		buf := make([]byte, 64<<10)
		stack := string(buf[:runtime.Stack(buf, false)])
		switch {
		case strings.Contains(stack, "serveVerify"):
			byHandler.Add(1)
		case strings.Contains(stack, "coap.(*worker).endBatch"):
			byBatch.Add(1)
		}
		return nil
	})
	for range 3 {
		tg.mustLogin(alice, cred)
	}
	if byBatch.Load() == 0 || byHandler.Load() != 0 {
		t.Fatalf("journal appends: %d by batch commits, %d in the verify handler; want every login's by its batch's commit",
			byBatch.Load(), byHandler.Load())
	}
}

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	gw "github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
)

// Attacks on the audit trail (issue 10, items 2 and 3), against the
// gateway binary on loopback, bounded in time and traffic.

// auditGateway starts "tagauth gateway serve" on data with the test admin
// token and extra flags.
func auditGateway(t *testing.T, data string, extra ...string) *gateway {
	t.Helper()
	args := append([]string{"gateway", "serve", "--data", data, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--audit-log", data + "-audit.jsonl", "--insecure-test-kdf"}, extra...)
	p := start(t, replicaEnv, args...)
	g := &gateway{proc: p, data: data}
	g.coap = p.waitLine(`CoAP verify:\s+(\S+)`)[1]
	g.admin = p.waitLine(`admin API:\s+(\S+)`)[1]
	g.fingerprint = p.waitLine(`fingerprint:\s+([0-9a-f]{64})`)[1]
	return g
}

// auditRecords reads every audit record of a kind (all kinds: "") through
// the admin API.
func auditRecords(t *testing.T, rs *replicaSet, q adminapi.AuditQuery) []adminapi.AuditEntry {
	t.Helper()
	var all []adminapi.AuditEntry
	c := rs.client(0)
	q.Limit = 1000
	for {
		page, err := c.Audit(context.Background(), q)
		rs.check(0, "audit query", err)
		all = append(all, page.Records...)
		if len(page.Records) == 0 {
			return all
		}
		q.After = page.Next
	}
}

// metricSum adds the values of every series of a metric in /metrics.
func metricSum(t *testing.T, g *gateway, name string) float64 {
	t.Helper()
	hc, err := adminapi.PinnedClient(g.fingerprint, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// A poll makes a client each time: its kept-alive connection would
	// count against the admin port's per-source limit.
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, g.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+replicaToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	sum := 0.0
	for _, line := range strings.Split(b.String(), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// world for one gateway: alice enrolled, device d1 provisioned, granted.
func auditWorld(t *testing.T, g *gateway) (*replicaSet, protocol.Card, credfile.Credential) {
	t.Helper()
	rs := &replicaSet{t: t, gws: []*gateway{g}}
	c := rs.enrol(0, "alice")
	cred := rs.provision(0, "d1", "g")
	rs.check(0, "grant", rs.client(0).Grant(context.Background(), adminapi.Grant{User: "alice", Group: "g"}))
	return rs, c, cred
}

// forge returns a well-formed m2 with one byte of its last field changed:
// the gateway parses it and refuses it (a forged or replayed login).
func forge(m2 []byte, i int) []byte {
	f := append([]byte(nil), m2...)
	f[len(f)-1-i%16] ^= byte(1 + i%255)
	return f
}

// TestAttackForgedM2FloodAudit: thousands of forged m2s leave a bounded
// number of audit records (refusals are counted and sampled, never one
// record per packet), while a genuine login during the flood is answered
// and recorded.
func TestAttackForgedM2FloodAudit(t *testing.T) {
	g := auditGateway(t, filepath.Join(t.TempDir(), "gw"))
	rs, card, cred := auditWorld(t, g)
	// A flood of forged m2 next to genuine logins: the logins succeed and the
	// refusals are aggregated into a few records.
	t.Run("forged m2", func(t *testing.T) {
		genuine := login(card, cred, g.coap)
		if !genuine.ok {
			t.Fatalf("genuine login before the flood: %+v", genuine)
		}
		conn, err := net.Dial("udp", g.coap)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		const flood = 5000
		var stop atomic.Bool
		var during attempt
		var wg sync.WaitGroup
		wg.Go(func() {
			for !stop.Load() {
				if during = login(card, cred, g.coap); during.ok {
					return
				}
			}
		})
		buf := make([]byte, 0, 512)
		for i := range flood {
			m := message.Message{Type: message.NonConfirmable, Code: codes.POST, MessageID: int32(uint16(i)), Token: []byte{byte(i), byte(i >> 8)},
				Payload: forge(genuine.m2, i)}
			m.Options, _, _ = message.Options{}.SetPath(make([]byte, 32), gw.VerifyPath)
			n, err := coder.DefaultCoder.Encode(m, buf[:cap(buf)])
			if err != nil {
				t.Fatal(err)
			}
			conn.Write(buf[:n])
			if i%200 == 199 {
				// Pace the flood on the gateway's own count (the test is
				// about the audit, not about loss in a full socket buffer).
				testenv.EventuallyWithin(t, 10*time.Second, "the gateway to take in the flood so far", func() bool {
					return metricSum(t, g, "tagauth_gateway_audit_refusals_total") >= float64(i+1)/2
				})
			}
		}
		stop.Store(true)
		wg.Wait()
		if !during.ok {
			t.Fatalf("the genuine login during the flood failed: %+v", during)
		}
		seen := 0.0
		testenv.EventuallyWithin(t, 10*time.Second, "the gateway to count the flood", func() bool {
			seen = metricSum(t, g, "tagauth_gateway_audit_refusals_total")
			return seen >= flood/2
		})
		recs := auditRecords(t, rs, adminapi.AuditQuery{Kind: adminapi.KindVerify})
		refusals, oks := 0, 0
		for _, r := range recs {
			if r.Outcome == gw.OutcomeOK {
				oks++
			} else {
				refusals++
			}
		}
		t.Logf("%v refusals counted, %d refusal records, %d successful logins recorded", seen, refusals, oks)
		if oks < 2 {
			t.Fatalf("%d successful logins recorded, want both", oks)
		}
		if refusals > 20 {
			t.Fatalf("%d refusal records for a flood of %d: not aggregated", refusals, flood)
		}
	})

	// /v1/register needs no token: a flood of bad registrations is
	// aggregated too.
	t.Run("bad registrations", func(t *testing.T) {
		anon, err := adminapi.NewClient(g.admin, g.fingerprint, "", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		const regs = 300
		for i := range regs {
			_, err := anon.Register(context.Background(), adminapi.RegisterRequest{ID: fmt.Sprint("intruder-", i), Profile: "hardened"})
			if err == nil {
				t.Fatal("a registration without code, w or r succeeded")
			}
		}
		enrolRefused := len(auditRecords(t, rs, adminapi.AuditQuery{Kind: adminapi.KindEnrol, Outcome: adminapi.OutcomeRefused}))
		if enrolRefused == 0 || enrolRefused > 5 {
			t.Fatalf("%d enrolment refusal records for %d bad registrations, want a few samples", enrolRefused, regs)
		}
	})
}

// TestAttackKill9KeepsAcknowledgedLogins: a gateway under a login load is
// killed with SIGKILL and restarted on the same data directory: every
// login whose m3 a client received has its audit record.
func TestAttackKill9KeepsAcknowledgedLogins(t *testing.T) {
	data := filepath.Join(t.TempDir(), "gw")
	g := auditGateway(t, data)
	rs, card, cred := auditWorld(t, g)
	var acked atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				if a := login(card, cred, g.coap); a.ok {
					acked.Add(1)
				} else if a.bad != nil {
					t.Errorf("a login went wrong: %v", a.bad)
				}
			}
		})
	}
	testenv.EventuallyWithin(t, 20*time.Second, "logins under load", func() bool { return acked.Load() >= 300 })
	g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.done
	stop.Store(true)
	wg.Wait()
	n := acked.Load()

	g2 := auditGateway(t, data)
	rs.gws[0] = g2
	recs := auditRecords(t, rs, adminapi.AuditQuery{Kind: adminapi.KindVerify, Outcome: adminapi.OutcomeOK})
	t.Logf("%d logins acknowledged before SIGKILL, %d recorded after restart", n, len(recs))
	if int64(len(recs)) < n {
		t.Fatalf("%d logins acknowledged, only %d recorded after kill -9", n, len(recs))
	}
}

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/credfile"
	gw "github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/redisstate/redistest"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/internal/store/postgres/pgtest"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// Gateway replicas as processes: several "tagauth gateway serve" sharing
// one PostgreSQL schema (--store) and one Redis prefix (--replay), each
// with its own data directory holding a copy of the first one's key file.

const replicaToken = "e2e-replicas-admin-token-0123456789abcdef"

var replicaEnv = []string{"TAGAUTH_ADMIN_TOKEN=" + replicaToken}

type replicaSet struct {
	t        *testing.T
	dir      string
	storeURL string
	redisURL string
	gws      []*gateway
}

func newReplicaSet(t *testing.T, n int) *replicaSet {
	t.Helper()
	su, _ := pgtest.Schema(t)
	ru, prefix := redistest.Prefix(t)
	redistest.MarkFresh(t, prefix) // a new prefix has seen no login: no quarantine
	rs := &replicaSet{t: t, dir: t.TempDir(), storeURL: su, redisURL: ru}
	for i := range n {
		data := filepath.Join(rs.dir, fmt.Sprint("r", i))
		if i > 0 {
			rs.copyKeys(data)
		}
		rs.gws = append(rs.gws, startReplica(t, data, su, ru))
	}
	return rs
}

// copyKeys puts the first replica's key file into data: docs/OPERATIONS.md#replicas
// says every replica needs the same one.
func (rs *replicaSet) copyKeys(data string) {
	rs.t.Helper()
	b, err := os.ReadFile(filepath.Join(rs.gws[0].data, gw.KeyFileName))
	if err != nil {
		rs.t.Fatal(err)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		rs.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, gw.KeyFileName), b, 0o600); err != nil {
		rs.t.Fatal(err)
	}
}

// startReplica starts "tagauth gateway serve" on a data directory with
// the given shared store and replay cache.
func startReplica(t *testing.T, data, storeURL, replayURL string) *gateway {
	t.Helper()
	p := start(t, replicaEnv, "gateway", "serve", "--data", data, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--audit-log", data+"-audit.jsonl", "--store", storeURL, "--replay", replayURL, "--insecure-test-kdf")
	g := &gateway{proc: p, data: data}
	g.coap = p.waitLine(`CoAP verify:\s+(\S+)`)[1]
	g.admin = p.waitLine(`admin API:\s+(\S+)`)[1]
	g.fingerprint = p.waitLine(`fingerprint:\s+([0-9a-f]{64})`)[1]
	return g
}

// client is an admin API client of replica i.
func (rs *replicaSet) client(i int) *adminapi.Client {
	rs.t.Helper()
	g := rs.gws[i]
	c, err := adminapi.NewClient(g.admin, g.fingerprint, replicaToken, 10*time.Second)
	if err != nil {
		rs.t.Fatal(err)
	}
	return c
}

// check fails the test when replica i refused an admin call.
func (rs *replicaSet) check(i int, what string, err error) {
	rs.t.Helper()
	if err != nil {
		rs.t.Fatalf("replica %d: %s: %v", i, what, err)
	}
}

var loadKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

const loadPassword = "correct horse"

// enrol enrols user id through replica i, in process, and returns the card.
func (rs *replicaSet) enrol(i int, id string) protocol.Card {
	rs.t.Helper()
	ac := rs.client(i)
	code, err := ac.EnrolCode(context.Background(), adminapi.EnrolCodeRequest{User: id})
	rs.check(i, "enrolment code", err)
	c, err := userclient.Enroll(context.Background(), ac.HTTP, rs.gws[i].admin, code.Code, id, loadPassword, protocol.Hardened, loadKDF,
		protocol.Config{Now: time.Now, Rand: rand.Reader})
	if err != nil {
		rs.t.Fatalf("enrol %s: %v", id, err)
	}
	return c
}

// provision provisions device id through replica i.
func (rs *replicaSet) provision(i int, id, group string) credfile.Credential {
	rs.t.Helper()
	raw, err := rs.client(i).Provision(context.Background(), adminapi.DeviceRequest{ID: id, Group: group})
	rs.check(i, "provisioning", err)
	c, err := credfile.Unmarshal(raw)
	if err != nil {
		rs.t.Fatal(err)
	}
	return c
}

// attempt is one login: the card and device halves in process, m2 sent
// to one replica.
type attempt struct {
	m2     []byte
	code   coap.Code
	wire   protocol.Code
	netErr error // no answer (a dead replica): a clean failure
	ok     bool  // 2.04 and both ends derived the same session key
	bad    error // a 2.04 whose m3 did not complete the login: never allowed
}

// loginClient gives up on a silent replica quickly, so that the client
// moves on to another one.
var loginClient = &coap.Client{ACKTimeout: 60 * time.Millisecond, MaxRetransmit: 1}

// login runs the card's side through the user client's flow
// (userclient.Flow), whose requests a device played here in process
// answers: m1 starts the device's half, whose m2 goes to the replica at
// addr; m3 gives m4, and m5 ends the login on both sides.
func login(c protocol.Card, cred credfile.Credential, addr string) attempt {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	u, err := protocol.Unlock(c, loadPassword, cfg)
	if err != nil {
		return attempt{bad: err}
	}
	defer u.Close()
	dev, err := protocol.NewDevice(cred.DeviceCredential, replay.New(8), cfg)
	if err != nil {
		return attempt{bad: err}
	}
	var (
		a     attempt
		dl    *protocol.DeviceLogin
		dsess *protocol.Session
	)
	defer func() {
		if dl != nil {
			dl.Close()
		}
	}()
	// errDone ends the flow where the attempt has its outcome already.
	errDone := errors.New("attempt decided")
	flow := userclient.Flow{Device: "in-process device", Post: func(ctx context.Context, path string, payload []byte) (coap.Code, []byte, error) {
		switch path {
		case coapbind.PathLogin:
			var m2 []byte
			if dl, m2, err = dev.Start(ctx, nil, payload); err != nil {
				a.bad = err
				return 0, nil, errDone
			}
			a.m2 = m2
			var m3 []byte
			a.code, m3, a.netErr = postM2(addr, m2, &a.wire)
			if a.netErr != nil || a.code != coap.Changed {
				return 0, nil, errDone
			}
			m4, s, err := dl.Respond(nil, m3)
			if err != nil {
				a.bad = fmt.Errorf("device refused the m3 of a 2.04: %w", err)
				return 0, nil, errDone
			}
			dsess = s
			return coap.Changed, m4, nil
		case coapbind.PathConfirm:
			_, m5, err := protocol.SplitConfirmPayload(payload)
			if err == nil {
				dsess, err = dl.Confirm(m5)
			}
			if err != nil {
				a.bad = fmt.Errorf("device refused m5: %w", err)
				return 0, nil, errDone
			}
			return coap.Changed, nil, nil
		}
		return coap.NotFound, nil, nil
	}}
	usess, err := flow.Login(ctx, u, cred.ID)
	switch {
	case errors.Is(err, errDone):
		return a
	case err != nil:
		a.bad = fmt.Errorf("card refused m4 after a 2.04: %w", err)
		return a
	}
	defer usess.Close()
	if usess.Fingerprint() != dsess.Fingerprint() {
		a.bad = fmt.Errorf("card and device derived different session keys")
		return a
	}
	a.ok = true
	return a
}

// postM2 sends m2 to a replica; wire gets the error code of a refusal.
func postM2(addr string, m2 []byte, wire *protocol.Code) (coap.Code, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	code, body, err := loginClient.Post(ctx, addr, gw.VerifyPath, m2)
	if err != nil {
		return 0, nil, err
	}
	if code != coap.Changed {
		if _, wc, perr := protocol.ParseError(body); perr == nil {
			*wire = wc
		}
	}
	return code, body, nil
}

// TestReplicas: three gateway processes share one PostgreSQL and one
// Redis. An operator works on any of them; the user's logins through
// device agents tied to different replicas all succeed; an m2 answered by
// one replica is refused as replayed by the others; a revocation made on
// one is honoured by the others within a second.
func TestReplicas(t *testing.T) {
	rs := newReplicaSet(t, 3)
	dir := rs.dir
	credPath := filepath.Join(dir, "sensor-7.json")
	must(t, replicaEnv, "gateway", "provision", "--data", rs.gws[1].data, "--id", "sensor-7", "--group", "plant-a", "--out", credPath)
	must(t, replicaEnv, "gateway", "grant", "--data", rs.gws[2].data, "--user", "alice", "--group", "plant-a")
	code := strings.TrimSpace(must(t, replicaEnv, "gateway", "enrol-code", "--data", rs.gws[0].data, "--user", "alice"))
	cardPath := filepath.Join(dir, "alice.card")
	pw := []string{"TAGAUTH_PASSWORD=" + loadPassword}
	must(t, pw, "user", "enroll", "--admin", rs.gws[0].admin, "--fingerprint", rs.gws[0].fingerprint,
		"--code", code, "--id", "alice", "--card", cardPath, fastKDF, "--kdf-m=1024")

	// Every replica has heard of the device, the grant and the user
	// (milliseconds after the commands) before the agents log in.
	data, err := card.Load(cardPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := card.Open(data, loadPassword)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := credfile.Load(credPath)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range rs.gws {
		testenv.EventuallyWithin(t, 2*time.Second, fmt.Sprint("replica ", i, " ready"), func() bool { return login(c, cred, g.coap).ok })
	}

	// One device agent per replica: the same device, relaying to each.
	var agents []string
	for _, g := range rs.gws {
		p := start(t, nil, "device", "--cred", credPath, "--listen", "127.0.0.1:0", "--gateway", g.coap)
		agents = append(agents, p.waitLine(`serving CoAP on (\S+),`)[1])
	}
	userLogin := func(agent string) (int, string) {
		c, out, errs := run(t, pw, "user", "login", "--card", cardPath, "--device", agent, "--did", "sensor-7", "--ack-timeout", "200ms", "--timeout", "10s")
		return c, out + errs
	}
	for i, agent := range agents {
		if c, out := userLogin(agent); c != 0 || !strings.Contains(out, "authenticated: user alice <-> device sensor-7") {
			t.Fatalf("login through the agent of replica %d: exit %d: %s", i, c, out)
		}
	}
	// Each replica served its agent, and all the records are in the one
	// store.
	for i, g := range rs.gws {
		b, err := os.ReadFile(g.data + "-audit.jsonl")
		if err != nil || !strings.Contains(string(b), `"kind":"verify","outcome":"ok","user":"alice","device":"sensor-7"`) {
			t.Fatalf("replica %d's audit log has no successful verify (%v):\n%s", i, err, b)
		}
	}
	audit := must(t, replicaEnv, "gateway", "audit", "--data", rs.gws[2].data, "--kind", "verify", "--outcome", "ok", "--json")
	var page adminapi.AuditPage
	if err := json.Unmarshal([]byte(audit), &page); err != nil {
		t.Fatalf("audit --json: %v\n%s", err, audit)
	}
	if n := len(page.Records); n != 6 || page.Records[0].User != "alice" {
		t.Fatalf("shared audit has %d successful verifies, want 6 of alice (3 readiness checks, 3 agents):\n%s", n, audit)
	}

	// A replay to another replica is refused.
	first := login(c, cred, rs.gws[0].coap)
	if !first.ok {
		t.Fatalf("in-process login through replica 0: %+v", first)
	}
	for i := 1; i < 3; i++ {
		var wire protocol.Code
		code, _, err := postM2(rs.gws[i].coap, first.m2, &wire)
		if err != nil || code != coap.Unauthorized || wire != protocol.ErrReplayed {
			t.Fatalf("m2 of replica 0's login replayed to replica %d: %v %v %v, want 4.01 replayed", i, code, wire, err)
		}
	}

	// A revocation on replica 1 holds on replicas 0 and 2 within a second.
	must(t, replicaEnv, "gateway", "revoke-user", "alice", "--data", rs.gws[1].data)
	for _, i := range []int{2, 0} {
		d := testenv.EventuallyWithin(t, time.Second, fmt.Sprint("revocation on replica 1 honoured by replica ", i), func() bool {
			a := login(c, cred, rs.gws[i].coap)
			return a.netErr == nil && a.code == coap.Unauthorized && a.wire == protocol.ErrRejected
		})
		t.Logf("revocation reached replica %d within %v", i, d)
	}
	if c, out := userLogin(agents[2]); c == 0 || !strings.Contains(out, "rejected") {
		t.Fatalf("revoked user through the agent of replica 2: exit %d: %s", c, out)
	}
}

// TestReplicaKilledUnderLoad: three replicas serve a bounded load of
// logins (300 distinct user/device pairs, from 6 clients); replica 1 is
// SIGKILLed a third of the way. Every login either completes with both
// ends holding the same key or fails cleanly (no answer, or busy) and is
// retried, as a fresh login, on the next replica. Probes mixed into the
// load (an m2 already answered, sent to another replica; a revoked user)
// are never accepted. Afterwards every completed login has its audit
// record in PostgreSQL.
func TestReplicaKilledUnderLoad(t *testing.T) {
	rs := newReplicaSet(t, 3)
	const nUsers, nDevices, clients = 12, 25, 6
	cards := make([]protocol.Card, nUsers)
	for i := range cards {
		cards[i] = rs.enrol(i%3, fmt.Sprint("user-", i))
		rs.check((i+1)%3, "grant", rs.client((i+1)%3).Grant(context.Background(), adminapi.Grant{User: cards[i].ID, Group: "plant"}))
	}
	creds := make([]credfile.Credential, nDevices)
	for i := range creds {
		creds[i] = rs.provision(i%3, fmt.Sprint("dev-", i), "plant")
	}
	mallory := rs.enrol(0, "mallory")
	rs.check(1, "grant", rs.client(1).Grant(context.Background(), adminapi.Grant{User: "mallory", Group: "plant"}))
	_, err := rs.client(2).RevokeUser(context.Background(), "mallory")
	rs.check(2, "revoke", err)
	// Every replica knows everything before the load starts.
	for i, g := range rs.gws {
		testenv.EventuallyWithin(t, 2*time.Second, fmt.Sprint("replica ", i, " ready"), func() bool {
			return login(cards[nUsers-1], creds[nDevices-1], g.coap).ok
		})
	}

	type pair struct{ u, d int }
	var pairs []pair
	for u := range nUsers {
		for d := range nDevices {
			pairs = append(pairs, pair{u, d})
		}
	}
	var (
		next       atomic.Int64
		completed  atomic.Int64
		retries    atomic.Int64 // clean failures that were retried
		probes     atomic.Int64
		mu         sync.Mutex
		wrong      []string
		done       = make(map[pair]bool)
		killed     atomic.Bool
		killAt     = int64(len(pairs) / 3)
		perReplica [3]atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		wrong = append(wrong, fmt.Sprintf(format, args...))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(pairs)) {
					return
				}
				if i == killAt && killed.CompareAndSwap(false, true) {
					rs.gws[1].cmd.Process.Kill() // SIGKILL: no shutdown, no flush
				}
				p := pairs[i]
				var a attempt
				replica := int(i) % 3
				for try := 0; try < 12; try++ {
					a = login(cards[p.u], creds[p.d], rs.gws[replica].coap)
					if a.bad != nil {
						fail("pair %v on replica %d: %v", p, replica, a.bad)
						break
					}
					if a.ok {
						break
					}
					if a.netErr == nil && a.code != coap.ServiceUnavailable {
						fail("pair %v on replica %d refused: %v %v (want success, no answer or busy)", p, replica, a.code, a.wire)
						break
					}
					retries.Add(1)
					replica = (replica + 1) % 3
				}
				if !a.ok {
					continue
				}
				completed.Add(1)
				perReplica[replica].Add(1)
				mu.Lock()
				done[p] = true
				mu.Unlock()
				if i%5 != 0 {
					continue
				}
				// Probes: the m2 just answered, to the other replicas, and
				// the revoked user. A 2.04 to either is a wrong accept.
				probes.Add(1)
				for k := 1; k < 3; k++ {
					var wire protocol.Code
					code, _, err := postM2(rs.gws[(replica+k)%3].coap, a.m2, &wire)
					if err == nil && code == coap.Changed {
						fail("replayed m2 of pair %v accepted by replica %d", p, (replica+k)%3)
					}
				}
				if m := login(mallory, creds[p.d], rs.gws[replica].coap); m.code == coap.Changed {
					fail("revoked user accepted by replica %d", replica)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("load: %d logins completed in %v (%.0f/s) by replica %d/%d/%d, %d clean failures retried, %d probe rounds",
		completed.Load(), elapsed.Round(time.Millisecond), float64(completed.Load())/elapsed.Seconds(),
		perReplica[0].Load(), perReplica[1].Load(), perReplica[2].Load(), retries.Load(), probes.Load())
	if len(wrong) > 0 {
		t.Fatalf("%d wrong outcomes:\n%s", len(wrong), strings.Join(wrong, "\n"))
	}
	if int(completed.Load()) != len(pairs) {
		t.Fatalf("%d of %d logins completed", completed.Load(), len(pairs))
	}
	if !killed.Load() || retries.Load() == 0 {
		t.Fatalf("replica 1 killed %v, %d retries: the kill did not happen under load", killed.Load(), retries.Load())
	}
	if code, _ := rs.gws[1].exited(10 * time.Second); code != -1 {
		t.Fatalf("replica 1 exit code %d, want -1 (killed)", code)
	}

	// Every completed login's record is in PostgreSQL, whoever served it,
	// the killed replica included.
	ctx := context.Background()
	st, err := postgres.Open(ctx, rs.storeURL, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recorded := map[string]bool{}
	after := uint64(0)
	n := 0
	for {
		recs, seqs, err := st.QueryAudit(ctx, store.AuditFilter{Kind: "verify", Outcome: "ok", After: after, Limit: store.MaxAuditLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			recorded[r.User+"/"+r.Device] = true
		}
		n += len(recs)
		after = seqs[len(seqs)-1]
	}
	for p := range done {
		if key := cards[p.u].ID + "/" + creds[p.d].ID; !recorded[key] {
			t.Errorf("completed login %s has no audit record in PostgreSQL", key)
		}
	}
	if n < len(done) {
		t.Fatalf("%d successful verifies recorded for %d completed logins", n, len(done))
	}
	t.Logf("audit: %d successful verifies recorded for %d completed logins", n, len(done))
}

// proxied returns rawURL with its host replaced by a proxy the test can
// cut: the shared services stay up for everyone else.
func proxied(t *testing.T, rawURL string) (string, *redistest.Proxy) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	p := redistest.NewProxy(t, u.Host)
	u.Host = p.Addr()
	return u.String(), p
}

// TestReplicaFailsClosedProcess: a replica process whose paths to
// PostgreSQL and then Redis are cut answers busy (never accepts), and
// serves again by itself when they are back, having caught up with the
// revocation made meanwhile on another replica; its log says so.
func TestReplicaFailsClosedProcess(t *testing.T) {
	rs := newReplicaSet(t, 1)
	data := filepath.Join(rs.dir, "r1")
	rs.copyKeys(data)
	su, pgProxy := proxied(t, rs.storeURL)
	ru, redisProxy := proxied(t, rs.redisURL)
	r1 := startReplica(t, data, su, ru)

	alice, bob := rs.enrol(0, "alice"), rs.enrol(0, "bob")
	cred := rs.provision(0, "sensor-7", "plant-a")
	rs.check(0, "grant", rs.client(0).Grant(context.Background(), adminapi.Grant{User: "alice", Group: "plant-a"}))
	rs.check(0, "grant", rs.client(0).Grant(context.Background(), adminapi.Grant{User: "bob", Group: "plant-a"}))
	testenv.EventuallyWithin(t, 2*time.Second, "r1 ready", func() bool { return login(alice, cred, r1.coap).ok })
	busy := func(a attempt) bool {
		return a.netErr == nil && a.code == coap.ServiceUnavailable && a.wire == protocol.ErrBusy
	}

	pgProxy.Cut()
	testenv.EventuallyWithin(t, 5*time.Second, "r1 busy without PostgreSQL", func() bool { return busy(login(bob, cred, r1.coap)) })
	for range 3 {
		if a := login(bob, cred, r1.coap); !busy(a) {
			t.Fatalf("login on r1 without PostgreSQL: %+v, want busy", a)
		}
	}
	if a := login(bob, cred, rs.gws[0].coap); !a.ok {
		t.Fatalf("r0 (not cut off) refused: %+v", a)
	}
	_, err := rs.client(0).RevokeUser(context.Background(), "alice")
	rs.check(0, "revoke", err)
	pgProxy.Restore()
	testenv.EventuallyWithin(t, 10*time.Second, "r1 serves again after PostgreSQL is back", func() bool { return login(bob, cred, r1.coap).ok })
	if a := login(alice, cred, r1.coap); a.code != coap.Unauthorized || a.wire != protocol.ErrRejected {
		t.Fatalf("alice, revoked while r1 was cut off: %+v, want rejected", a)
	}

	redisProxy.Cut()
	for range 3 {
		if a := login(bob, cred, r1.coap); !busy(a) {
			t.Fatalf("login on r1 without Redis: %+v, want busy", a)
		}
	}
	redisProxy.Restore()
	testenv.EventuallyWithin(t, 10*time.Second, "r1 serves again after Redis is back", func() bool { return login(bob, cred, r1.coap).ok })

	log := r1.errText()
	for _, want := range []string{"change feed lost", "verifies are served again", "Redis unreachable", "Redis reachable again"} {
		if !strings.Contains(log, want) {
			t.Errorf("r1's log does not say %q:\n%s", want, log)
		}
	}
}

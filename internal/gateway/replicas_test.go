package gateway_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/redisstate"
	"github.com/tagauth/tagauth/internal/redisstate/redistest"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/internal/store/postgres/pgtest"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// cluster is a set of in-process replicas sharing one PostgreSQL schema
// and one Redis prefix.
type cluster struct {
	t               *testing.T
	root            string
	storeURL, redis string
	schema          string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	su, schema := pgtest.Schema(t)
	ru, prefix := redistest.Prefix(t)
	redistest.MarkFresh(t, prefix)
	return &cluster{t: t, root: t.TempDir(), storeURL: su, redis: ru, schema: schema}
}

// config is a replica's configuration; the first replica's key file is
// copied into every other data directory, as docs/OPERATIONS.md#replicas says.
func (c *cluster) config(name string) gateway.Config {
	c.t.Helper()
	return c.configWith(name, c.storeURL, c.redis)
}

// configWith is config with the store and replay cache at the URLs given
// (a proxy's, say).
func (c *cluster) configWith(name, storeURL, replayURL string) gateway.Config {
	c.t.Helper()
	cfg := withBackends(c.t, testConfig(filepath.Join(c.root, name), protocol.Hardened), storeURL, replayURL)
	cfg.AdminToken = "replica-admin-token-0123456789"
	first := filepath.Join(c.root, "r0", gateway.KeyFileName)
	if name != "r0" {
		if b, err := os.ReadFile(first); err == nil {
			os.MkdirAll(cfg.DataDir, 0o700)
			if err := os.WriteFile(filepath.Join(cfg.DataDir, gateway.KeyFileName), b, 0o600); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	return cfg
}

func (c *cluster) start(name string) *testGW {
	c.t.Helper()
	return startGateway(c.t, c.config(name))
}

// via returns cred with its gateway address replaced by replica r's.
func via(cred credfile.Credential, r *testGW) credfile.Credential {
	cred.Gateway = r.g.CoAPPublic()
	return cred
}

func refusedWith(r loginResult, wire protocol.Code) bool {
	return r.err == nil && r.wire == wire && r.code == coapbind.Code(wire)
}

// TestReplicasShareRegistry: identities and grants made on one replica
// log in on another; a revocation or an ungrant on one is honoured by the
// others within a second.
func TestReplicasShareRegistry(t *testing.T) {
	c := newCluster(t)
	a := c.start("r0")
	b := c.start("r1")
	if h := b.g.BackendHealth(); !h.Replica || !h.Store.OK || !h.Replay.OK || h.Store.Kind != "postgres" || h.Replay.Kind != "redis" {
		t.Fatalf("BackendHealth of a healthy replica: %+v", h)
	}
	card := a.enrol("alice")
	cred := b.provision("sensor-7", "plant-a")
	a.grant("alice", "plant-a")
	testenv.EventuallyWithin(t, time.Second, "grant made on r0 seen by r1", func() bool { return b.login(card, cred).match })
	testenv.EventuallyWithin(t, time.Second, "device made on r1 seen by r0", func() bool { return a.login(card, via(cred, a)).match })

	// Ungrant on r1: r0 refuses the pair (policy) within a second.
	b.call(http.MethodDelete, "/v1/grants", map[string]string{"user": "alice", "group": "plant-a"}, nil)
	d := testenv.EventuallyWithin(t, time.Second, "ungrant on r1 honoured by r0", func() bool {
		return refusedWith(a.login(card, via(cred, a)), protocol.ErrRejected)
	})
	t.Logf("ungrant reached the other replica in %v", d)
	a.grant("alice", "plant-a")
	testenv.EventuallyWithin(t, time.Second, "grant again", func() bool { return b.login(card, cred).match })

	// Revoke on r0: r1 refuses within a second, with the precise reason.
	a.call(http.MethodPost, "/v1/users/alice/revoke", nil, nil)
	d = testenv.EventuallyWithin(t, time.Second, "revocation on r0 honoured by r1", func() bool {
		return refusedWith(b.login(card, cred), protocol.ErrRejected)
	})
	t.Logf("revocation reached the other replica in %v", d)
	if last := b.lastAudit(gateway.KindVerify); last.Reason != protocol.ReasonRevokedUser.Name() {
		t.Fatalf("refusal on r1 audited as %+v, want %q", last, protocol.ReasonRevokedUser.Name())
	}
	// Audit records of both replicas are in the one store.
	page := a.auditPage("?kind=verify&outcome=ok&limit=1000")
	sources := map[string]bool{}
	for _, r := range page.Records {
		sources[r.User+"@"+r.Device] = true
	}
	if len(page.Records) < 3 || !sources["alice@sensor-7"] {
		t.Fatalf("shared audit has %d ok verifies: %+v", len(page.Records), page.Records)
	}
}

// m2For runs the card and device halves of a login and returns m2.
func m2For(t *testing.T, card protocol.Card, cred credfile.Credential) []byte {
	t.Helper()
	cfg := clientConfig()
	u, err := protocol.Unlock(card, password, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, m1, err := u.Login(nil, cred.ID)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := protocol.NewDevice(cred.DeviceCredential, replay.New(8), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, m2, err := dev.Start(context.Background(), nil, m1)
	if err != nil {
		t.Fatal(err)
	}
	return m2
}

// TestReplicasReplayRefused: an m2 answered by one replica and sent again
// to another is refused as replayed, and the successful one was committed
// to the audit before its answer left.
func TestReplicasReplayRefused(t *testing.T) {
	c := newCluster(t)
	a := c.start("r0")
	b := c.start("r1")
	card := a.enrol("alice")
	cred := a.provision("sensor-7", "plant-a")
	a.grant("alice", "plant-a")
	testenv.EventuallyWithin(t, time.Second, "grant reaches r1", func() bool { return b.login(card, via(cred, b)).match })

	ctx := context.Background()
	st, err := postgres.Open(ctx, c.storeURL, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	okBefore, _, _ := st.QueryAudit(ctx, store.AuditFilter{Kind: "verify", Outcome: "ok", Limit: 1000})

	m2 := m2For(t, card, cred)
	code, _, err := a.coap.Post(ctx, a.g.CoAPPublic(), gateway.VerifyPath, m2)
	if err != nil || code != coap.Changed {
		t.Fatalf("m2 to r0: %v %v", code, err)
	}
	// Committed before the answer: the store has it now, without waiting.
	okAfter, _, err := st.QueryAudit(ctx, store.AuditFilter{Kind: "verify", Outcome: "ok", Limit: 1000})
	if err != nil || len(okAfter) != len(okBefore)+1 {
		t.Fatalf("ok verifies in PostgreSQL right after the answer: %d, before %d (%v)", len(okAfter), len(okBefore), err)
	}
	for _, r := range []*testGW{b, a} {
		code, body, err := r.coap.Post(ctx, r.g.CoAPPublic(), gateway.VerifyPath, m2)
		if err != nil {
			t.Fatal(err)
		}
		_, wc, perr := protocol.ParseError(body)
		if code != coap.Unauthorized || perr != nil || wc != protocol.ErrReplayed {
			t.Fatalf("replayed m2: %v %v %v, want 4.01 replayed", code, wc, perr)
		}
	}
	if last := b.lastAudit(gateway.KindVerify); last.Reason != protocol.ReasonLoginReplay.Name() {
		t.Fatalf("replay audited as %+v", last)
	}
}

// proxied returns rawURL with its host replaced by a cuttable proxy.
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

// withBackends opens the shared store and replay cache at storeURL and
// replayURL ("": none) into cfg, as the command line does from --store
// and --replay; they are closed at the end of the test (the gateway
// closes them too: closing twice is harmless).
func withBackends(t *testing.T, cfg gateway.Config, storeURL, replayURL string) gateway.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if storeURL != "" {
		st, err := postgres.Open(ctx, storeURL, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		cfg.Store = st
	}
	if replayURL != "" {
		rs, err := redisstate.Open(ctx, replayURL, redisstate.Options{Window: protocol.DefaultWindow})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rs.Close() })
		cfg.SharedState, cfg.Replay, cfg.LockoutStore = rs, rs.Replay(), rs.Lockout()
	}
	return cfg
}

// TestReplicaFailsClosedWithoutPostgres: while a replica's path to
// PostgreSQL is cut it answers busy (it cannot know of revocations made
// elsewhere), says so in BackendHealth, and when the path is back it
// reloads and honours the revocation it missed.
func TestReplicaFailsClosedWithoutPostgres(t *testing.T) {
	c := newCluster(t)
	a := c.start("r0")
	pu, proxy := proxied(t, c.storeURL)
	cfg := c.configWith("r1", pu, c.redis)
	b := startGateway(t, cfg)

	card := a.enrol("alice")
	bob := a.enrol("bob")
	cred := a.provision("sensor-7", "plant-a")
	a.grant("alice", "plant-a")
	a.grant("bob", "plant-a")
	testenv.EventuallyWithin(t, 10*time.Second, "r1 ready", func() bool { return b.login(bob, via(cred, b)).match })

	proxy.Cut()
	testenv.EventuallyWithin(t, 5*time.Second, "r1 answers busy with PostgreSQL cut off", func() bool {
		return refusedWith(b.login(card, via(cred, b)), protocol.ErrBusy)
	})
	h := b.g.BackendHealth()
	if h.Store.OK || h.Store.Error == "" {
		t.Fatalf("BackendHealth with PostgreSQL cut off: %+v", h)
	}
	// Every attempt now is busy, never accepted.
	for range 3 {
		if r := b.login(bob, via(cred, b)); !refusedWith(r, protocol.ErrBusy) {
			t.Fatalf("login on r1 without PostgreSQL: %+v, want busy", r)
		}
	}
	// The refusal comes from the registry guard, not only from the audit
	// commit that fails too.
	testenv.EventuallyWithin(t, 10*time.Second, "a verify refused as "+protocol.ReasonBusyStore.Name()+" in r1's audit output", func() bool {
		return strings.Contains(b.audit.String(), `"reason":"`+protocol.ReasonBusyStore.Name()+`"`)
	})
	// Meanwhile alice is revoked through r0, which r1 cannot hear.
	a.call(http.MethodPost, "/v1/users/alice/revoke", nil, nil)
	testenv.EventuallyWithin(t, 10*time.Second, "r1's log says the change feed was lost", func() bool {
		return strings.Contains(b.logs.String(), "change feed lost")
	})

	proxy.Restore()
	testenv.EventuallyWithin(t, 10*time.Second, "r1 serves again after PostgreSQL is back", func() bool {
		return b.login(bob, via(cred, b)).match
	})
	if h := b.g.BackendHealth(); !h.Store.OK || h.Reloads < 2 {
		t.Fatalf("BackendHealth after recovery: %+v", h)
	}
	if r := b.login(card, via(cred, b)); !refusedWith(r, protocol.ErrRejected) {
		t.Fatalf("alice, revoked while r1 was cut off: %+v, want rejected", r)
	}
	if !strings.Contains(b.logs.String(), "verifies are served again") {
		t.Fatal("log does not say the replica recovered")
	}
}

// TestReplicaFailsClosedWithoutRedis: with Redis cut off no login can be
// checked for replay, so every one answers busy; the replica recovers by
// itself.
func TestReplicaFailsClosedWithoutRedis(t *testing.T) {
	c := newCluster(t)
	ru, proxy := proxied(t, c.redis)
	cfg := c.configWith("r0", c.storeURL, ru)
	a := startGateway(t, cfg)
	card := a.enrol("alice")
	cred := a.provision("sensor-7", "plant-a")
	a.grant("alice", "plant-a")
	a.mustLogin(card, cred)

	proxy.Cut()
	for range 3 {
		if r := a.login(card, cred); !refusedWith(r, protocol.ErrBusy) {
			t.Fatalf("login with Redis cut off: %+v, want busy", r)
		}
	}
	// The lockout (asked first, before the verify) and the replay cache
	// both live in Redis: either may be the one that found it gone.
	if last := a.lastAudit(gateway.KindVerify); last.Reason != protocol.ReasonCacheFull.Name() && last.Reason != gateway.ReasonLockoutDown {
		t.Fatalf("audit of a login with Redis cut off: %+v", last)
	}
	if h := a.g.BackendHealth(); h.Replay.OK || h.Replay.Error == "" {
		t.Fatalf("BackendHealth with Redis cut off: %+v", h)
	}
	proxy.Restore()
	testenv.EventuallyWithin(t, 10*time.Second, "logins served again after Redis is back", func() bool { return a.login(card, cred).match })
	testenv.EventuallyWithin(t, 5*time.Second, "health recovers", func() bool { return a.g.BackendHealth().Replay.OK })
}

// TestReplicaRedisQuarantine: a Redis that is new (or lost its data)
// cannot vouch for the last 2 dT of logins: a replica refuses with busy
// until then, says so in BackendHealth, then serves.
func TestReplicaRedisQuarantine(t *testing.T) {
	c := newCluster(t)
	ru, prefix := redistest.Prefix(t) // not marked fresh
	cfg := c.configWith("r0", c.storeURL, ru)
	a := startGateway(t, cfg)
	if h := a.g.BackendHealth(); h.Replay.QuarantineUntil == nil || h.Replay.OK {
		t.Fatalf("BackendHealth of a new replay cache: %+v, want a quarantine", h)
	}
	// The test holds the quarantine itself, through the epoch key that
	// every Insert reads, instead of racing the 2 dT + skew it started
	// with: an hour from now while it sets up and logs in...
	rc := redistest.Client(t)
	epoch := func(ms int64) {
		t.Helper()
		if err := rc.Set(context.Background(), prefix+"epoch", strconv.FormatInt(ms, 10), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	epoch(time.Now().Add(time.Hour).UnixMilli())
	card := a.enrol("alice")
	cred := a.provision("sensor-7", "plant-a")
	a.grant("alice", "plant-a")
	if r := a.login(card, cred); !refusedWith(r, protocol.ErrBusy) {
		t.Fatalf("login during the quarantine: %+v, want busy", r)
	}
	// ...then over: the next login goes through.
	epoch(time.Now().Add(-time.Second).UnixMilli())
	if r := a.login(card, cred); !r.match {
		t.Fatalf("login after the quarantine: %+v", r)
	}
}

// TestReplicaKeyFiles: a replica whose key file differs from the others'
// refuses to start; a rotation and a retirement made on one replica reach
// the others, which refuse the retired version within a second even with
// the old key file.
func TestReplicaKeyFiles(t *testing.T) {
	c := newCluster(t)
	a := c.start("r0")

	// Its own key file (not copied): refused, with what to do.
	own := withBackends(t, testConfig(filepath.Join(c.root, "stranger"), protocol.Hardened), c.storeURL, c.redis)
	_, err := gateway.Open(own)
	if err == nil || !strings.Contains(err.Error(), "copy keys.json") {
		t.Fatalf("Open with another key file: %v, want a refusal saying to copy keys.json", err)
	}

	b := c.start("r1")
	card := a.enrol("alice") // under version 1
	cred := a.provision("sensor-7", "plant-a")
	a.grant("alice", "plant-a")
	testenv.EventuallyWithin(t, 10*time.Second, "r1 ready", func() bool { return b.login(card, via(cred, b)).match })

	var kc adminapi.KeyChange
	a.call(http.MethodPost, "/v1/keys/rotate", nil, &kc)
	if kc.Version != 2 {
		t.Fatalf("rotate: %+v", kc)
	}
	testenv.EventuallyWithin(t, 2*time.Second, "r1 warns of version 2, which its key file lacks", func() bool {
		return strings.Contains(b.logs.String(), "lacks")
	})
	a.call(http.MethodPost, "/v1/keys/1/retire?force=1", nil, nil) // alice and sensor-7 still hold it
	d := testenv.EventuallyWithin(t, time.Second, "retirement on r0 honoured by r1", func() bool {
		return refusedWith(b.login(card, via(cred, b)), protocol.ErrRejected)
	})
	t.Logf("retirement reached the other replica in %v", d)
	if last := b.lastAudit(gateway.KindVerify); last.Reason != protocol.ReasonUnknownKeyVersion.Name() {
		t.Fatalf("refusal on r1: %+v", last)
	}
	// r1's key file still has version 1: a restart does not bring it back.
	b.stop()
	cfg := withBackends(t, testConfig(filepath.Join(c.root, "r1"), protocol.Hardened), c.storeURL, c.redis)
	b2 := startGateway(t, cfg)
	if r := b2.login(card, via(cred, b2)); !refusedWith(r, protocol.ErrRejected) {
		t.Fatalf("retired version after a restart with the old key file: %+v", r)
	}
}

// TestBackendHealthSingle: a single gateway's embedded backends are
// always healthy and not a replica; --replay alone is refused.
func TestBackendHealthSingle(t *testing.T) {
	g := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	if h := g.g.BackendHealth(); h.Replica || !h.Store.OK || h.Store.Kind != "bbolt" || h.Replay.Kind != "memory" {
		t.Fatalf("single gateway: %+v", h)
	}
	// A shared replay cache without a shared store: refused.
	ru, _ := redistest.Prefix(t)
	cfg := withBackends(t, testConfig(t.TempDir(), protocol.Hardened), "", ru)
	if _, err := gateway.Open(cfg); err == nil || !strings.Contains(err.Error(), "--store") {
		t.Fatalf("--replay without --store: %v", err)
	}
}

// TestReplicasShareLockout: failed logins counted on different replicas
// add up in Redis, and the lock holds on every replica.
func TestReplicasShareLockout(t *testing.T) {
	c := newCluster(t)
	replica := func(name string) *testGW {
		cfg := c.config(name)
		cfg.Lockout.MaxFailures = 3
		return startGateway(t, cfg)
	}
	a, b := replica("r0"), replica("r1")
	card := a.enrol("alice")
	cred := a.provision("sensor-7", "plant-a")
	a.grant("alice", "plant-a")
	testenv.EventuallyWithin(t, 10*time.Second, "r1 ready", func() bool { return b.login(card, via(cred, b)).match })

	// A wrong E_i, relayed by the genuine device, is what a wrong password
	// looks like at the gateway: badE (ops_test.go) forges the card.
	for i, r := range []*testGW{a, b, a} {
		m2 := m2For(t, badE(card), cred)
		code, body, err := r.coap.Post(context.Background(), r.g.CoAPPublic(), gateway.VerifyPath, m2)
		_, wc, _ := protocol.ParseError(body)
		if err != nil || code != coap.Unauthorized || wc != protocol.ErrRejected {
			t.Fatalf("bad E_i %d: %v %v %v", i, code, wc, err)
		}
	}
	r := b.login(card, via(cred, b))
	if !refusedWith(r, protocol.ErrRejected) {
		t.Fatalf("login after 3 failures on two replicas: %+v, want rejected", r)
	}
	// Replica a's audit writer may commit its last failure after b's
	// refusal: look for the "locked" record, not at the last one.
	await(t, 10*time.Second, "the refusal audited as "+gateway.ReasonLocked, func() bool {
		for _, rec := range b.auditPage("?kind=verify&user=alice").Records {
			if rec.Reason == gateway.ReasonLocked {
				return true
			}
		}
		return false
	})
	var locks adminapi.LockList
	a.call(http.MethodGet, "/v1/locks", nil, &locks)
	if len(locks.Locks) != 1 || locks.Locks[0].User != "alice" {
		t.Fatalf("locks seen on r0: %+v", locks)
	}
	// Unlocking on one replica unlocks everywhere.
	b.call(http.MethodPost, "/v1/users/alice/unlock", nil, nil)
	a.mustLogin(card, via(cred, a))

	// Sources: a login from home on r0 makes it familiar on r1 too; an
	// outsider's forged logins through both replicas from its own sources
	// spend the shared unfamiliar budget (10) and lock only those.
	if code, _ := postFrom(t, a.g.CoAPPublic(), m2For(t, card, via(cred, a)), home); code != coap.Changed {
		t.Fatalf("login from home on r0: %v", code)
	}
	for i := range 12 {
		r := []*testGW{a, b}[i%2]
		postFrom(t, r.g.CoAPPublic(), m2For(t, badE(card), via(cred, r)), outsider(i))
	}
	if code, _ := postFrom(t, b.g.CoAPPublic(), m2For(t, card, via(cred, b)), home); code != coap.Changed {
		t.Fatalf("login from the familiar source on r1 during the attack: %v", code)
	}
	if code, _ := postFrom(t, a.g.CoAPPublic(), m2For(t, card, via(cred, a)), roaming); code != coap.Unauthorized {
		t.Fatalf("login from a new source on r0 after the shared budget was spent: %v, want refused", code)
	}
	a.call(http.MethodGet, "/v1/locks", nil, &locks)
	if len(locks.Locks) != 1 || locks.Locks[0].Scope != "unfamiliar sources" {
		t.Fatalf("locks seen on r0 after the outsider: %+v", locks.Locks)
	}
}

package gateway_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/protocol"
)

// postFrom sends m2 to the gateway at addr as a device that verified its
// client at source would (the Source option; nil: none) and returns the
// answer.
func postFrom(t *testing.T, addr string, m2, source []byte) (coap.Code, []byte) {
	t.Helper()
	var ids [6]byte
	rand.Read(ids[:])
	path := make([]byte, len(gateway.VerifyPath))
	opts, _, err := make(message.Options, 0, 8).SetPath(path, gateway.VerifyPath)
	if err != nil {
		t.Fatal(err)
	}
	opts = opts.Add(message.Option{ID: message.ContentFormat, Value: []byte{byte(message.AppOctets)}})
	if source != nil {
		opts = opts.Add(message.Option{ID: coap.OptionSource, Value: source})
	}
	m := message.Message{Token: ids[2:], Options: opts, Code: codes.POST, Payload: m2,
		MessageID: int32(binary.BigEndian.Uint16(ids[:2])), Type: message.Confirmable}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		t.Fatal(err)
	}
	req := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(m, req); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 2048)
	for try := 0; try < 8; try++ {
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			continue // lost on loopback under load: retransmit, as CoAP does
		}
		resp := message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &resp); err != nil {
			t.Fatalf("answer is not CoAP: %v", err)
		}
		return coap.Code(resp.Code), resp.Payload
	}
	t.Fatalf("no answer from %s", addr)
	return 0, nil
}

var (
	home     = []byte{198, 51, 100, 7}                  // the user's usual client
	roaming  = net.ParseIP("2001:db8:5:6::1234").To16() // a new place of the user's
	outsider = func(i int) []byte { return []byte{203, 0, 113, byte(i)} }
)

// smartPolicy is the default policy with a lock long enough to outlast
// any test.
var smartPolicy = lockout.Policy{MaxFailures: 5, Window: time.Hour, LockFor: time.Hour, UnfamiliarFailures: 10}

// TestSmartLockoutOutsiderCannotLockOut: forged logins relayed by the
// genuine device from many unfamiliar sources, far past every limit, lock
// neither the user's familiar source nor change the answer to a correct
// login from it; they lock only the outsider's sources, the unfamiliar
// budget (so a correct login from a new source is refused) and the
// unverified class.
func TestSmartLockoutOutsiderCannotLockOut(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Lockout = smartPolicy
	tg := startGateway(t, cfg)
	alice := tg.enrol("alice")
	devices := []credfile.Credential{tg.provision("d1", "g"), tg.provision("d2", "g")}
	cred := devices[0]
	tg.grant("alice", "g")
	addr := tg.g.CoAPPublic()
	if code, _ := postFrom(t, addr, tg.m2For(alice, cred, nil), home); code != coap.Changed {
		t.Fatalf("first login from home: %v", code)
	}
	// 40 sources, 3 forged logins each through every device of the
	// user's group, then 10 without a source.
	for i := range 40 {
		for j := range 3 {
			d := devices[(i+j)%len(devices)]
			if code, out := postFrom(t, addr, tg.m2For(badE(alice), d, nil), outsider(i)); code != coap.Unauthorized || string(out) != string(rejectedWire) {
				t.Fatalf("forged login from outsider %d: %v %x", i, code, out)
			}
		}
	}
	for range 10 {
		postFrom(t, addr, tg.m2For(badE(alice), cred, nil), nil)
	}
	for i, d := range append(devices, devices...) {
		if code, out := postFrom(t, addr, tg.m2For(alice, d, nil), home); code != coap.Changed {
			t.Fatalf("correct login %d from the familiar source during the attack: %v %x", i, code, out)
		}
	}
	// Only 10 forged logins counted: the budget, then every unfamiliar
	// source was locked and its attempts refused uncounted.
	m := tg.scrape(tg.token)
	m.want(t, "tagauth_gateway_verify_total", map[string]string{"reason": protocol.ReasonBadE.Name()}, 10)
	m.want(t, "tagauth_gateway_verify_total", map[string]string{"reason": gateway.ReasonLockedUnfamiliar}, 40*3+10-10)

	code, _ := postFrom(t, addr, tg.m2For(alice, cred, nil), roaming)
	if code != coap.Unauthorized {
		t.Fatalf("correct login from a new source while the unfamiliar budget is spent: %v, want 4.01", code)
	}
	last := tg.lastAudit(gateway.KindVerify)
	if last.Reason != gateway.ReasonLockedUnfamiliar || !strings.Contains(last.Detail, "2001:db8:5:6::/64") {
		t.Fatalf("refusal from a new source audited as %+v", last)
	}
	var locks adminapi.LockList
	tg.call(http.MethodGet, "/v1/locks", nil, &locks)
	if len(locks.Locks) != 1 || locks.Locks[0].Scope != "unfamiliar sources" || locks.Locks[0].User != "alice" {
		t.Fatalf("locks %+v, want alice's unfamiliar sources", locks.Locks)
	}
	// The operator's unlock lets the user in from the new place.
	tg.call(http.MethodPost, "/v1/users/alice/unlock", nil, nil)
	if code, _ := postFrom(t, addr, tg.m2For(alice, cred, nil), roaming); code != coap.Changed {
		t.Fatalf("login from the new source after unlock: %v", code)
	}
}

// TestSmartLockoutCardThief: a thief with the card but not the password,
// guessing from sources of its own, gets UnfamiliarFailures counted
// guesses per LockFor, plus MaxFailures from each familiar source it can
// reach (here: the user's home, as if it shared the NAT address); then it
// is refused even with the right password from all of them, while the
// user's other familiar source still works.
func TestSmartLockoutCardThief(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Lockout = smartPolicy
	tg := startGateway(t, cfg)
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	addr := tg.g.CoAPPublic()
	office := []byte("mqtt:alice-laptop") // an opaque source (a broker's client)
	for _, src := range [][]byte{home, office} {
		if code, _ := postFrom(t, addr, tg.m2For(alice, cred, nil), src); code != coap.Changed {
			t.Fatalf("login from %q: %v", src, code)
		}
	}
	counted := 0
	guess := func(src []byte) bool {
		postFrom(t, addr, tg.m2For(badE(alice), cred, nil), src)
		if tg.lastAudit(gateway.KindVerify).Reason == protocol.ReasonBadE.Name() {
			counted++
			return true
		}
		return false
	}
	// The thief tries every source it has until each is refused.
	for i := range 30 {
		for guess(outsider(i)) {
		}
	}
	for guess(nil) {
	}
	for guess(home) {
	}
	p := smartPolicy.WithDefaults()
	if bound := p.UnfamiliarFailures + p.MaxFailures; counted != bound {
		t.Fatalf("the thief had %d counted guesses, want the bound %d (unfamiliar budget + one familiar source)", counted, bound)
	}
	for _, src := range [][]byte{outsider(0), outsider(29), outsider(99), nil, home} {
		if code, _ := postFrom(t, addr, tg.m2For(alice, cred, nil), src); code != coap.Unauthorized {
			t.Fatalf("right password from %v after the guesses: %v, want refused", src, code)
		}
	}
	if code, _ := postFrom(t, addr, tg.m2For(alice, cred, nil), office); code != coap.Changed {
		t.Fatalf("the user's other familiar source: %v, want 2.04", code)
	}
	lock := tg.lastAudit(gateway.KindLockout)
	if lock.User != "alice" || !strings.Contains(lock.Reason, "(source)") || !strings.Contains(lock.Detail, "198.51.100.7") {
		t.Fatalf("last lockout record %+v, want the home source's", lock)
	}
	var locks adminapi.LockList
	tg.call(http.MethodGet, "/v1/locks", nil, &locks)
	var scopes []string
	for _, l := range locks.Locks {
		scopes = append(scopes, l.Scope+" "+l.Source)
	}
	// Two of the thief's sources took 5 guesses each, which spent the
	// budget too; the home source its own 5.
	if strings.Join(scopes, ",") != "unfamiliar sources ,source 198.51.100.7,source 203.0.113.0,source 203.0.113.1" {
		t.Fatalf("locks %q", scopes)
	}
}

// TestSmartLockoutSuccessResets: a success from a source clears its
// failures, so a user who mistypes now and then is never locked.
func TestSmartLockoutSuccessResets(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Lockout = smartPolicy
	tg := startGateway(t, cfg)
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	addr := tg.g.CoAPPublic()
	for round := range 3 {
		for range smartPolicy.MaxFailures - 1 {
			postFrom(t, addr, tg.m2For(badE(alice), cred, nil), home)
		}
		if code, _ := postFrom(t, addr, tg.m2For(alice, cred, nil), home); code != coap.Changed {
			t.Fatalf("round %d: login after %d typos: %v", round, smartPolicy.MaxFailures-1, code)
		}
	}
}

// TestSmartLockoutCopiedM2NotCounted: I_j covers E_i, DID_j and T2 only
// (spec section 6), so whoever sees one device's m2 on its way to the
// gateway (plain UDP) could send copies with another user's ID_i, a new
// n_i or T1 and any Source, and each would be a failed proof with a valid
// I_j. Only the first m2 with a given I_j may count: the copies of bob's
// genuine login, charged to alice at her familiar source, must not lock
// her out; neither may copies of a login that failed.
func TestSmartLockoutCopiedM2NotCounted(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Hardened, protocol.Classic} {
		t.Run(p.String(), func(t *testing.T) {
			cfg := testConfig(t.TempDir(), p)
			cfg.Lockout = smartPolicy
			tg := startGateway(t, cfg)
			alice, bob := tg.enrol("alice"), tg.enrol("bob")
			cred := tg.provision("d1", "g")
			tg.grant("alice", "g")
			tg.grant("bob", "g")
			addr := tg.g.CoAPPublic()
			if code, _ := postFrom(t, addr, tg.m2For(alice, cred, nil), home); code != coap.Changed {
				t.Fatalf("alice's first login from home: %v", code)
			}
			seen := [][]byte{tg.m2For(bob, cred, nil), tg.m2For(badE(bob), cred, nil)}
			if code, _ := postFrom(t, addr, seen[0], outsider(1)); code != coap.Changed {
				t.Fatalf("bob's login: %v", code)
			}
			postFrom(t, addr, seen[1], outsider(1))
			for i := range 2 * smartPolicy.MaxFailures {
				m, err := protocol.ParseM2(seen[i%2])
				if err != nil {
					t.Fatal(err)
				}
				m.ID = []byte("alice")
				rand.Read(m.Nonce[:])
				m.T1 -= uint64(1 + i)
				if code, _ := postFrom(t, addr, m.Append(nil), home); code != coap.Unauthorized {
					t.Fatalf("copy %d: %v", i, code)
				}
			}
			if code, out := postFrom(t, addr, tg.m2For(alice, cred, nil), home); code != coap.Changed {
				t.Fatalf("alice from home after copies of bob's m2s were charged to her: %v %x", code, out)
			}
		})
	}
}

// barrierStore is an in-memory lockout store whose Status, once it has
// read the state, waits until want lookups have (or one has waited a
// second), so that concurrent verifies all look at the lock before any
// failure counts, if the gateway lets them.
type barrierStore struct {
	*lockout.Memory
	mu   sync.Mutex
	n    int
	want int
	open chan struct{}
	once sync.Once
}

func (b *barrierStore) Status(ctx context.Context, user []byte, source lockout.Source, now time.Time) (lockout.Status, error) {
	st, err := b.Memory.Status(ctx, user, source, now)
	b.mu.Lock()
	b.n++
	if b.n == b.want {
		b.once.Do(func() { close(b.open) })
	}
	b.mu.Unlock()
	select {
	case <-b.open:
	case <-time.After(time.Second):
		b.once.Do(func() { close(b.open) })
	}
	return st, err
}

// TestSmartLockoutConcurrentGuesses: a card thief who sends its guesses
// all at once, from as many sources, gets no more counted than the
// unfamiliar budget: the lock decision and the count of one user's
// verifies are not interleaved, so guesses in flight when the budget is
// spent do not each count past it.
func TestSmartLockoutConcurrentGuesses(t *testing.T) {
	const guesses = 20
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Lockout = smartPolicy
	cfg.CoAPWorkers = 2 * guesses
	cfg.LockoutStore = &barrierStore{Memory: lockout.NewMemory(0), want: guesses, open: make(chan struct{})}
	tg := startGateway(t, cfg)
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	addr := tg.g.CoAPPublic()
	m2s := make([][]byte, guesses)
	for i := range m2s {
		m2s[i] = tg.m2For(badE(alice), cred, nil)
	}
	var wg sync.WaitGroup
	for i, m2 := range m2s {
		wg.Go(func() { postFrom(t, addr, m2, outsider(i)) })
	}
	wg.Wait()
	m := tg.scrape(tg.token)
	m.want(t, "tagauth_gateway_verify_total", map[string]string{"reason": protocol.ReasonBadE.Name()}, float64(smartPolicy.UnfamiliarFailures))
}

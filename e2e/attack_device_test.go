package e2e

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
)

// Attacks on the device side, each bounded in time and traffic, loopback
// only: go test ./e2e -run Attack. The attacker's sources are other
// loopback addresses (127.0.0.2 and up: Linux routes all of 127/8 to lo);
// the user logs in from 127.0.0.1.

// forgedM1 is a hardened m1 that anyone who knows a user's ID can make
// (spec section 7): ID_i, key version 1, random n_i, E_i and theta_i, the
// current T1.
func forgedM1(user string) []byte {
	b := append([]byte{0x02, 0x01, byte(len(user))}, user...)
	b = append(b, 1)
	r := make([]byte, 16+32+32)
	rand.Read(r)
	b = append(b, r...)
	return binary.BigEndian.AppendUint64(b, uint64(time.Now().UnixMilli()))
}

// attacker is a CoAP client sending from 127.0.0.n. It answers Echo
// challenges, as a real attacker who owns the address can.
func attacker(n int) *coap.Client {
	return &coap.Client{ACKTimeout: 200 * time.Millisecond, MaxRetransmit: 2,
		LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(n))}}
}

// flood sends count forged m1s for user from each of the sources to each
// device, the pairs in parallel; it returns how many were answered.
func flood(t *testing.T, user string, devices []string, sources []int, count int, stop <-chan struct{}) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	for _, src := range sources {
		c := attacker(src)
		for _, dev := range devices {
			wg.Go(func() {
				for range count {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, _, err := c.Post(ctx, dev, "/tagauth/login", forgedM1(user))
					cancel()
					if err == nil {
						mu.Lock()
						answered++
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	return answered
}

// TestAttackForgedLoginsDoNotLockOutUser is issue 10 item 1: an outsider
// who knows alice's ID sends forged m1s at a high rate through every
// device of her group, from addresses of its own; alice, who logged in
// from 127.0.0.1 before, still logs in to each device with her password.
// It needs the gateway to count failures per (user, verified source).
func TestAttackForgedLoginsDoNotLockOutUser(t *testing.T) {
	w := newWorld(t, "hardened")
	must(t, nil, "gateway", "provision", "--data", w.gw.data, "--id", "sensor-8", "--group", "plant-a", "--out", filepath.Join(w.dir, "sensor-8.json"))
	// Agents of their own, with metrics, to count what they relayed.
	type agent struct{ at, did, metrics string }
	var agents []agent
	for _, did := range []string{"sensor-7", "sensor-8"} {
		p := start(t, nil, "device", "--cred", filepath.Join(w.dir, did+".json"), "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0")
		agents = append(agents, agent{p.waitLine(`serving CoAP on (\S+),`)[1], did, p.waitLine(`metrics at (http://\S+)`)[1]})
	}
	devices := []string{agents[0].at, agents[1].at}
	login := func(at, did string) (int, string) {
		code, _, errs := run(t, w.userPW, "user", "login", "--card", w.card, "--device", at, "--did", did, "--ack-timeout", "200ms", "--timeout", "10s")
		return code, errs
	}
	if code, errs := login(agents[0].at, "sensor-7"); code != 0 {
		t.Fatalf("alice's first login: %s", errs)
	}

	sources := []int{2, 3, 4, 5, 6, 7, 8, 9}
	if n := flood(t, "alice", devices, sources, 40, nil); n == 0 {
		t.Fatal("no forged m1 was answered: the flood did not reach the devices")
	}
	// The forgeries reached the gateway and were refused there (else
	// this test would prove nothing): the agents relayed them and got
	// the gateway's refusal back, more than a lockout takes.
	refused := 0.0
	for _, a := range agents {
		refused += deviceMetric(t, a.metrics, `tagauth_device_logins_total{outcome="refused",reason="gateway rejected",step="m3"}`)
	}
	if refused < 5 {
		t.Fatalf("only %.0f forged logins were refused by the gateway, fewer than a lockout takes", refused)
	}
	// The forgeries reached the gateway as failed proofs (else this test
	// would prove nothing), charged to the attacker's addresses. The
	// audit log keeps samples of refusals: the metrics count every one.
	if n := verifyReasons(t, w.gw)["E_i does not verify"]; n < 5 {
		t.Fatalf("only %v forged logins reached the gateway as failed proofs, fewer than a lockout takes", n)
	}
	// And while the flood goes on.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { flood(t, "alice", devices, sources, 200, stop); close(done) }()
	defer func() { close(stop); <-done }()
	for _, d := range agents {
		if code, errs := login(d.at, d.did); code != 0 {
			t.Errorf("alice's login to %s during a flood of forged m1s: %s", d.did, errs)
		}
	}
}

// TestAttackMistypedDIDStopsBeforeLogin is issue 10 item 13: a user who
// types another device's DID is told so before any m1 is sent, so typos
// never count as failed logins; the right DID still works after more
// typos than the lockout allows.
func TestAttackMistypedDIDStopsBeforeLogin(t *testing.T) {
	w := newWorld(t, "hardened")
	// 12: more than the gateway counts from a user's unfamiliar sources
	// (10) and from one source (5) before it locks.
	for i := range 12 {
		code, _, errs := w.user(nil, "login", "--did", fmt.Sprintf("sensor-%d", 70+i))
		want := fmt.Sprintf(`serves DID "sensor-7", not "sensor-%d"`, 70+i)
		if code == 0 || !strings.Contains(errs, want) {
			t.Fatalf("typo %d: exit %d, stderr %q; want %q", i, code, errs, want)
		}
	}
	if code, _, errs := w.user(nil, "login"); code != 0 {
		t.Fatalf("the right DID after 12 typos: %s", errs)
	}
	audit := must(t, nil, "gateway", "audit", "--data", w.gw.data, "--user", "alice", "--json")
	if strings.Contains(audit, "does not verify") {
		t.Errorf("a typo reached the gateway as a failed login:\n%s", audit)
	}
}

// TestAttackForgedFloodLogBounded is issue 10 item 8: a flood of forged
// m1s from one source does not grow the device's log with it.
func TestAttackForgedFloodLogBounded(t *testing.T) {
	w := newWorld(t, "hardened")
	before := strings.Count(w.dev.errText(), "\n")
	const sent = 1500
	if n := flood(t, "alice", []string{w.devAt}, []int{2, 3}, sent/2, nil); n < sent*9/10 {
		t.Fatalf("only %d of %d forged m1s were answered", n, sent)
	}
	lines := strings.Count(w.dev.errText(), "\n") - before
	t.Logf("%d forged m1s, %d device log lines", sent, lines)
	if lines > 30 {
		t.Errorf("%d forged m1s wrote %d log lines, want a bounded few:\n%s", sent, lines, w.dev.errText())
	}
}

// deviceMetric returns the value of the sample line that starts with series
// in the Prometheus text at url, 0 when there is none.
func deviceMetric(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

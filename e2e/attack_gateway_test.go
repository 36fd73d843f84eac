package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/coap"
	gw "github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// Attacks on the gateway through the real binaries, bounded in time and
// traffic, on loopback only: go test ./e2e -run Attack.

// TestAttackCardThiefThroughAgent: a thief who has the card's contents
// (the card file is sealed with the password, so this is the worst case:
// a client's memory, not the file) guesses passwords online through the
// genuine device agent (classic profile: no fuzzy verifier, so every
// guess reaches the gateway). The gateway counts at most the unfamiliar
// budget (10) of them per lock period, whatever source the agent reports
// (or none): then even the right password is refused, until the operator
// unlocks.
func TestAttackCardThiefThroughAgent(t *testing.T) {
	w := newWorld(t, "classic")
	sealed, err := card.Load(w.card)
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := card.Open(sealed, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	client := &coap.Client{ACKTimeout: 200 * time.Millisecond}
	const tries = 16
	for i := range tries {
		u, err := protocol.Unlock(stolen, fmt.Sprint("guess number ", i), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = userclient.Login(ctx, u, client, w.devAt, "sensor-7")
		cancel()
		u.Close()
		if !errors.Is(err, protocol.ErrRejected) {
			t.Fatalf("guess %d: %v, want rejected", i, err)
		}
	}
	if code, _, errs := w.user(nil, "login"); code == 0 || !strings.Contains(errs, "rejected") {
		t.Fatalf("the right password after %d guesses: exit %d, %q; want rejected", tries, code, errs)
	}
	// The audit log keeps samples of refusals, not one record each: the
	// metrics count every one.
	reasons := verifyReasons(t, w.gw)
	counted := int(reasons["E_i does not verify"])
	locked := int(reasons[gw.ReasonLocked] + reasons[gw.ReasonLockedUnfamiliar])
	if counted < 1 || counted > 10 || counted+locked != tries+1 {
		t.Fatalf("%d guesses counted, %d refused by a lock, of %d attempts: want at most 10 counted and the rest locked\n%v", counted, locked, tries+1, reasons)
	}
	// The audit trail accounts for the same refusals: its samples name
	// alice and carry the counts (written as each sample interval ends).
	var inAudit map[string]int
	testenv.EventuallyWithin(t, 10*time.Second, "alice's refusals in the audit samples", func() bool {
		inAudit = refusalCounts(t, w.gw.data, "alice")
		n := 0
		for _, c := range inAudit {
			n += c
		}
		return n >= tries+1
	})
	if inAudit["E_i does not verify"] != counted {
		t.Fatalf("audit samples count %d failed proofs of alice, the metrics %d: %v", inAudit["E_i does not verify"], counted, inAudit)
	}
	if out := must(t, nil, "gateway", "locks", "--data", w.gw.data); !strings.Contains(out, "alice") {
		t.Fatalf("locks:\n%s", out)
	}
	must(t, nil, "gateway", "unlock", "alice", "--data", w.gw.data)
	if code, out, errs := w.user(nil, "login"); code != 0 {
		t.Fatalf("login after unlock: exit %d %s %s", code, out, errs)
	}
}

// verifyReasons reads tagauth_gateway_verify_total from g's /metrics,
// summed by reason, with the admin token of g's data directory.
func verifyReasons(t *testing.T, g *gateway) map[string]float64 {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(g.data, adminapi.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	hc, err := adminapi.PinnedClient(g.fingerprint, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, g.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %v %v", resp.Status, err)
	}
	re := regexp.MustCompile(`(?m)^tagauth_gateway_verify_total\{[^}]*reason="([^"]*)"[^}]*\} (\S+)$`)
	out := map[string]float64{}
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("/metrics: %q", m[0])
		}
		out[m[1]] += v
	}
	if len(out) == 0 {
		t.Fatalf("/metrics has no tagauth_gateway_verify_total:\n%s", body)
	}
	return out
}

// TestAttackAdminPort: a source holding many connections to the admin
// port and guessing the token gets a bounded share: the connections over
// its limit are closed, its guesses are answered 429 after five, the log
// has a line per source per minute, not per guess; another source still
// gets /v1/info.
func TestAttackAdminPort(t *testing.T) {
	dir := t.TempDir()
	gw := startGateway(t, filepath.Join(dir, "gw"), "hardened", freeUDPPort(t))
	addr := strings.TrimPrefix(gw.admin, "https://")
	for range 200 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	client := func(local string) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // a test against its own gateway, loopback only
			DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext,
		}}
	}
	other := client("127.0.0.2")
	resp, err := other.Get(gw.admin + "/v1/info")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/info from another source while one holds 200 connections: %v %v", resp, err)
	}
	resp.Body.Close()

	guesser := client("127.0.0.3")
	codes := map[int]int{}
	for i := range 30 {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, gw.admin+"/v1/users", nil)
		req.Header.Set("Authorization", "Bearer guess-"+strings.Repeat("x", i))
		resp, err := guesser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
	}
	// Five free guesses, the sixth starts a 1 s wait, doubled after each
	// further one: more than 10 checked would take the loop over 15 s.
	if codes[http.StatusUnauthorized] > 10 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 30 {
		t.Fatalf("answers to 30 quick guesses: %v, want at most 10 checked, the rest 429", codes)
	}
	if n := strings.Count(gw.errText(), "wrong token"); n > 2 {
		t.Fatalf("%d log lines for 30 guesses from one source, want one or two:\n%s", n, gw.errText())
	}
}

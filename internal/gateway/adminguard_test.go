package gateway_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/protocol"
)

// TestTokenStrength: tokens under 128 bits, or made of few characters,
// are refused; random ones of 32 hex or 22 base64url characters pass.
func TestTokenStrength(t *testing.T) {
	for _, tok := range []string{
		"correcthorsebatt",                // a 16-character dictionary phrase
		"0123456789abcdef",                // 16 hex: 64 bits
		"0123456789abcdef0123456789abcde", // 31 hex: 124 bits
		"Q3vL9xZ_2kP-aT7mW1bR0",           // 21 base64url: 126 bits
		strings.Repeat("ab", 32),          // 64 hex digits, 2 distinct
		strings.Repeat("x", 60),           // long, but one character
		"password password password pass", // 31 lower-case and spaces
	} {
		if err := gateway.CheckTokenStrength(tok); !errors.Is(err, gateway.ErrWeakToken) {
			t.Errorf("CheckTokenStrength(%q) = %v, want ErrWeakToken", tok, err)
		}
	}
	for _, tok := range []string{
		"9f2c4e1a7b3d5f60718293a4b5c6d7e8",                                 // 32 hex
		"5f0c9e27d4b8a6130f7e2d9c4b1a8e63d05f72c9b4e8a1d6370c5f9e2b8d4a16", // generated
		"Q3vL9xZ_2kP-aT7mW1bR0s",                                           // 22 base64url
		"e2e-replicas-admin-token-0123456789abcdef",
	} {
		if err := gateway.CheckTokenStrength(tok); err != nil {
			t.Errorf("CheckTokenStrength(%q) = %v, want nil", tok, err)
		}
	}
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.AdminToken = "correcthorsebatt"
	if g, err := gateway.Open(cfg); err == nil || !strings.Contains(err.Error(), "bits of entropy") {
		if g != nil {
			g.Close()
		}
		t.Fatalf("Open with a 16-character word as admin token: %v, want a refusal", err)
	}
}

// clientFrom is tg's admin client, connecting from the loopback address
// local (127.0.0.0/8 holds many).
func clientFrom(tg *testGW, local string) *http.Client {
	tr := tg.hc.Transport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func httpStatus(t *testing.T, hc *http.Client, url, token string) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// TestAdminTokenBackoff: after five wrong tokens a source waits before its
// next token is checked (429, Retry-After), longer each time; other
// sources are not affected; the log has one line per episode, not one per
// guess; the right token after the wait clears the count.
func TestAdminTokenBackoff(t *testing.T) {
	var offset atomic.Int64
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	base := time.Now()
	cfg.Now = func() time.Time { return base.Add(time.Duration(offset.Load())) } // still unless the test moves it
	tg := startGateway(t, cfg)
	users := tg.url("/v1/users")
	guesser, other := clientFrom(tg, "127.0.0.1"), clientFrom(tg, "127.0.0.2")
	for i := range 6 {
		if code, _ := httpStatus(t, guesser, users, "guess-guess-guess-"+string(rune('a'+i))); code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i+1, code)
		}
	}
	code, h := httpStatus(t, guesser, users, tg.token)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") != "1" {
		t.Fatalf("right token right after six wrong ones: %d Retry-After %q, want 429 after 1", code, h.Get("Retry-After"))
	}
	if code, _ := httpStatus(t, other, users, tg.token); code != http.StatusOK {
		t.Fatalf("another source during the backoff: %d", code)
	}
	offset.Add(int64(2 * time.Second))
	if code, _ := httpStatus(t, guesser, users, "guess-guess-guess-z"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token after the wait: %d", code)
	}
	if code, h := httpStatus(t, guesser, "https://"+strings.TrimPrefix(tg.g.AdminURL(), "https://")+"/metrics", tg.token); code != http.StatusTooManyRequests || h.Get("Retry-After") != "2" {
		t.Fatalf("metrics after seven wrong tokens: %d Retry-After %q, want 429 after 2 (the wait doubled)", code, h.Get("Retry-After"))
	}
	offset.Add(int64(3 * time.Second))
	if code, _ := httpStatus(t, guesser, users, tg.token); code != http.StatusOK {
		t.Fatalf("right token after the wait: %d", code)
	}
	// The count is cleared: five more wrong tokens are free again.
	for range 5 {
		httpStatus(t, guesser, users, "guess-guess-guess-y")
	}
	if code, _ := httpStatus(t, guesser, users, tg.token); code != http.StatusOK {
		t.Fatalf("right token after five wrong ones: %d", code)
	}
	// Two episodes (the right token ended the first): two lines, not 12.
	if n := strings.Count(tg.logs.String(), "admin requests with a wrong token"); n != 2 {
		t.Fatalf("%d log lines for 12 wrong tokens from one source in two episodes, want 2:\n%s", n, tg.logs.String())
	}
	m := tg.scrape(tg.token)
	m.want(t, "tagauth_gateway_admin_token_failures_total", nil, 12)
	m.want(t, "tagauth_gateway_admin_token_throttled_total", nil, 2)
}

// TestAdminConnLimit: one source holding many connections gets at most
// DefaultAdminConnsPerSource of them; the rest are closed at once, and
// /v1/info still answers another source.
func TestAdminConnLimit(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	addr := strings.TrimPrefix(tg.g.AdminURL(), "https://")
	const n = 3 * gateway.DefaultAdminConnsPerSource
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	other := clientFrom(tg, "127.0.0.2")
	held := netip.MustParseAddr("127.0.0.1")
	awaitAdminConns(t, tg.g, held, "the connections over the per-source limit refused", func(open int, refused uint64) bool {
		return refused >= n-gateway.DefaultAdminConnsPerSource
	})
	if got := tg.scrapeWith(other).value(t, "tagauth_gateway_admin_conns_refused_total", nil); got != n-gateway.DefaultAdminConnsPerSource {
		t.Fatalf("%v refusals counted, want %d", got, n-gateway.DefaultAdminConnsPerSource)
	}
	if open := tg.scrapeWith(other).value(t, "tagauth_gateway_admin_conns", nil); open > gateway.DefaultAdminConnsPerSource+2 {
		t.Fatalf("%v admin connections open, want at most %d held plus the scrape's", open, gateway.DefaultAdminConnsPerSource)
	}
	if code, _ := httpStatus(t, other, tg.url("/v1/info"), ""); code != http.StatusOK {
		t.Fatalf("/v1/info from another source: %d", code)
	}
	// A new connection from the full source is closed before TLS.
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Fatal("a TLS handshake from the source at its limit succeeded")
	}
	for _, c := range conns {
		c.Close()
	}
	conns = conns[:0]
	// The gateway sees each close (the read of the next request ends),
	// releases the source's slots, and lets it in again.
	awaitAdminConns(t, tg.g, held, "the held connections released", func(open int, _ uint64) bool { return open == 0 })
	if code, _ := httpStatus(t, clientFrom(tg, "127.0.0.1"), tg.url("/v1/info"), ""); code != http.StatusOK {
		t.Fatalf("/v1/info from the source after it closed its connections: %d", code)
	}
}

// scrapeWith reads /metrics with the admin token through hc.
func (tg *testGW) scrapeWith(hc *http.Client) scraped {
	tg.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, tg.url("/metrics"), nil)
	req.Header.Set("Authorization", "Bearer "+tg.token)
	resp, err := hc.Do(req)
	if err != nil {
		tg.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tg.t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return scraped{string(b)}
}

// TestMetricsTokenKeepsBackoff: the read-only metrics token does not clear
// a source's wrong admin tokens, so whoever holds it cannot interleave
// scrapes with admin token guesses to escape the backoff.
func TestMetricsTokenKeepsBackoff(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.Now = func() time.Time { return time.Unix(1_900_000_000, 0) } // still
	cfg.MetricsToken = "metrics-token-for-prometheus"
	tg := startGateway(t, cfg)
	users, metrics := tg.url("/v1/users"), tg.url("/metrics")
	guesser := clientFrom(tg, "127.0.0.1")
	for i := range 6 {
		if code, _ := httpStatus(t, guesser, metrics, cfg.MetricsToken); code != http.StatusOK {
			t.Fatalf("scrape %d: %d", i+1, code)
		}
		if code, _ := httpStatus(t, guesser, users, "guess-guess-guess-"+string(rune('a'+i))); code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i+1, code)
		}
	}
	if code, _ := httpStatus(t, guesser, users, "guess-guess-guess-z"); code != http.StatusTooManyRequests {
		t.Fatalf("seventh wrong admin token, scrapes in between: %d, want 429", code)
	}
}

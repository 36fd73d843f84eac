package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// The admin port's defences against guessing and exhaustion: a minimum
// strength for admin and metrics tokens, a per-source backoff on wrong
// tokens (with aggregated logging), and connection limits.

// MinTokenBits is the least entropy an admin or metrics token must have.
const MinTokenBits = 128

// ErrWeakToken is returned by CheckTokenStrength.
var ErrWeakToken = errors.New("token too weak")

// CheckTokenStrength refuses a token with less than MinTokenBits of
// entropy as far as its characters tell: the length times the bits of the
// smallest alphabet that holds it (hex 4, base64url 6, otherwise by the
// character classes it uses), and a string of fewer than 10 distinct
// characters is low-entropy whatever its length. A generated token (64 hex
// digits) has 256 bits.
func CheckTokenStrength(tok string) error {
	bits := tokenBits(tok)
	distinct := map[rune]bool{}
	for _, r := range tok {
		distinct[r] = true
	}
	if bits < MinTokenBits || len(distinct) < 10 {
		return fmt.Errorf("%w: about %d bits of entropy (%d characters, %d distinct), under %d: use 32 or more random hex digits (openssl rand -hex 32) or 22 or more random base64url characters",
			ErrWeakToken, int(bits), len(tok), len(distinct), MinTokenBits)
	}
	return nil
}

func tokenBits(tok string) float64 {
	var lower, upper, digit, dash, other, hexOnly = false, false, false, false, false, true
	for _, r := range tok {
		switch {
		case r >= 'a' && r <= 'z':
			lower = true
			hexOnly = hexOnly && r <= 'f'
		case r >= 'A' && r <= 'Z':
			upper = true
			hexOnly = hexOnly && r <= 'F'
		case r >= '0' && r <= '9':
			digit = true
		case r == '-' || r == '_':
			dash, hexOnly = true, false
		default:
			other, hexOnly = true, false
		}
	}
	var alphabet float64
	switch {
	case hexOnly && !(lower && upper):
		alphabet = 16
	case !other: // base64url, or the part of it the token uses
		for _, c := range []struct {
			used bool
			n    float64
		}{{lower, 26}, {upper, 26}, {digit, 10}, {dash, 2}} {
			if c.used {
				alphabet += c.n
			}
		}
	default: // printable ASCII, less the classes it does not use
		alphabet = 95
		if !upper {
			alphabet -= 26
		}
		if !digit {
			alphabet -= 10
		}
	}
	return float64(utf8.RuneCountInString(tok)) * math.Log2(alphabet)
}

// Backoff of wrong admin tokens, per source address (an IPv6 /64).
const (
	tokenFreeFailures = 5                // wrong tokens before the backoff starts
	tokenBackoffBase  = time.Second      // the first wait; doubled per further failure
	tokenBackoffMax   = 5 * time.Minute  // the longest wait
	tokenForget       = 15 * time.Minute // a source without failures that long starts afresh
	tokenMaxSources   = 4096             // sources tracked at once
	tokenLogEvery     = time.Minute      // at most one log line per source per this
	tokenLogBudget    = 20               // log lines per tokenLogEvery over all sources
)

// tokenGuard counts wrong admin tokens per source and makes sources that
// guess wait, longer each time; it logs in aggregate, not one line each.
type tokenGuard struct {
	log *slog.Logger

	mu       sync.Mutex
	m        map[netip.Addr]*tokenSource
	logStart time.Time
	logLines int
	dropped  int // failures not logged since the budget ran out

	failures  atomic.Uint64 // wrong or missing tokens
	throttled atomic.Uint64 // requests refused by the backoff
}

type tokenSource struct {
	fails    int
	last     time.Time
	until    time.Time // refused until
	logged   time.Time
	unlogged int
}

func newTokenGuard(log *slog.Logger) *tokenGuard {
	return &tokenGuard{log: log, m: map[netip.Addr]*tokenSource{}}
}

// sourceOf is the key of a request's remote address: the IPv4 address or
// the IPv6 /64.
func sourceOf(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// wait says how long src must wait before its token is checked again
// (0: it may try now).
func (tg *tokenGuard) wait(src netip.Addr, now time.Time) time.Duration {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	s := tg.m[src]
	if s == nil || !now.Before(s.until) {
		return 0
	}
	tg.throttled.Add(1)
	return s.until.Sub(now)
}

// failed records a wrong token from src and logs in aggregate.
func (tg *tokenGuard) failed(src netip.Addr, path string, now time.Time) {
	tg.failures.Add(1)
	tg.mu.Lock()
	defer tg.mu.Unlock()
	s := tg.m[src]
	if s != nil && now.Sub(s.last) >= tokenForget {
		s.fails = 0
	}
	if s == nil {
		if len(tg.m) >= tokenMaxSources {
			tg.makeRoom(now)
		}
		s = &tokenSource{}
		tg.m[src] = s
	}
	s.fails++
	s.last = now
	if n := s.fails - tokenFreeFailures; n > 0 {
		s.until = now.Add(min(tokenBackoffBase<<min(n-1, 20), tokenBackoffMax))
	}
	s.unlogged++
	if now.Sub(tg.logStart) >= tokenLogEvery {
		if tg.dropped > 0 {
			tg.log.Warn("admin requests with a wrong token were not logged one by one", "count", tg.dropped, "within", tokenLogEvery.String())
		}
		tg.logStart, tg.logLines, tg.dropped = now, 0, 0
	}
	if now.Sub(s.logged) < tokenLogEvery {
		return
	}
	if tg.logLines >= tokenLogBudget {
		tg.dropped += s.unlogged
		s.unlogged = 0
		return
	}
	tg.logLines++
	args := []any{"source", src.String(), "failures", s.unlogged, "path", path}
	if !s.until.IsZero() && now.Before(s.until) {
		args = append(args, "refused_for", s.until.Sub(now).Round(time.Second).String())
	}
	tg.log.Warn("admin requests with a wrong token (one line per source per minute)", args...)
	s.logged, s.unlogged = now, 0
}

// succeeded forgets src's failures.
func (tg *tokenGuard) succeeded(src netip.Addr) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	delete(tg.m, src)
}

// makeRoom drops forgotten sources, then the one that failed longest ago.
func (tg *tokenGuard) makeRoom(now time.Time) {
	var oldest netip.Addr
	var at time.Time
	for a, s := range tg.m {
		if now.Sub(s.last) >= tokenForget && !now.Before(s.until) {
			delete(tg.m, a)
			continue
		}
		if at.IsZero() || s.last.Before(at) {
			oldest, at = a, s.last
		}
	}
	if len(tg.m) >= tokenMaxSources {
		delete(tg.m, oldest)
	}
}

// tooMany answers a source that must wait.
func tooMany(w http.ResponseWriter, wait time.Duration) {
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many wrong admin tokens from your address: try again in %d s", secs))
}

// Admin connection limits.
const (
	// DefaultAdminConns is the most admin connections open at once.
	DefaultAdminConns = 256
	// DefaultAdminConnsPerSource is the most from one address (an IPv6
	// /64): a browser opens about six, the CLI one per command; room is
	// left for operators behind one NAT address.
	DefaultAdminConnsPerSource = 32
)

// connLimiter is a net.Listener that closes, as soon as they are
// accepted, connections beyond a total and a per-source limit, so that
// one source cannot hold every file descriptor and starve the others.
type connLimiter struct {
	net.Listener
	total, perSource int

	mu   sync.Mutex
	open int
	by   map[netip.Addr]int // open connections per source; at most total entries

	refused atomic.Uint64
	// changed fires on every refusal and release, so that tests wait for
	// the limits' state instead of polling it (export_test.go).
	changed events
}

func limitConns(ln net.Listener, total, perSource int) *connLimiter {
	return &connLimiter{Listener: ln, total: total, perSource: perSource, by: map[netip.Addr]int{}}
}

// Accept returns the next connection within the limits.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr().String())
		l.mu.Lock()
		ok := l.open < l.total && l.by[src] < l.perSource
		if ok {
			l.open++
			l.by[src]++
		}
		l.mu.Unlock()
		if !ok {
			l.refused.Add(1)
			c.Close()
			l.changed.fire()
			continue
		}
		return &limitedConn{Conn: c, l: l, src: src}, nil
	}
}

// opened is the number of connections open now.
func (l *connLimiter) opened() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// openedFrom is the number of connections open now from addr's source.
func (l *connLimiter) openedFrom(addr netip.Addr) int {
	src := sourceOf(netip.AddrPortFrom(addr, 0).String())
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.by[src]
}

func (l *connLimiter) release(src netip.Addr) {
	l.mu.Lock()
	l.open--
	if l.by[src]--; l.by[src] <= 0 {
		delete(l.by, src)
	}
	l.mu.Unlock()
	l.changed.fire()
}

type limitedConn struct {
	net.Conn
	l    *connLimiter
	src  netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}

// limitAdmin wraps the admin listener in the connection limits.
func (gd *guard) limitAdmin(ln net.Listener) net.Listener {
	gd.conns = limitConns(ln, DefaultAdminConns, DefaultAdminConnsPerSource)
	return gd.conns
}

// Admin server timeouts. Enrolment sends a small body (the Argon2id work
// happens on the client before it connects), but a slow link may take
// its time: 64 KiB (the body limit) at 2 KB/s is 32 s.
const (
	adminReadHeaderTimeout = 10 * time.Second
	adminReadTimeout       = time.Minute
	adminWriteTimeout      = time.Minute
	adminIdleTimeout       = 30 * time.Second // idle keep-alives hold a connection slot
)

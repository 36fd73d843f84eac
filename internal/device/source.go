package device

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/tagauth/tagauth/internal/coap"
)

// Verified sources.
//
// The gateway counts failed logins per (user, source) so that an outsider
// who knows a user's ID cannot lock the user out by sending forged m1s: it
// charges them to the outsider's own address, while the addresses the user
// logged in from keep working. That works only if the source the device
// reports is the m1's real sender, so the device proves return routability
// first, with CoAP's Echo option (RFC 9175 section 2.4): an m1 from an
// address it has not verified lately is answered 4.01 with an Echo value,
// which only a sender that receives at that address can send back. The
// device then relays m2 with the Source option (coap.OptionSource) naming
// that address. This is a transport-binding step in front of spec section
// 11; the protocol's messages are unchanged.
//
// An Echo value is stateless: one byte of a minute counter and a truncated
// HMAC-SHA256, under a secret drawn at start, of a label, the full counter
// and the address. It is valid during its minute and the next, so a client
// has at least a minute to answer. Addresses proven this way are kept in a
// bounded table for VerifiedFor, so that a user logging in again skips the
// extra round trip.

// Defaults of source verification and per-source limits.
const (
	// DefaultVerifiedSources bounds the table of verified addresses.
	DefaultVerifiedSources = 4096
	// VerifiedFor is how long an address stays verified.
	VerifiedFor = 10 * time.Minute
	// DefaultSourceRate and DefaultSourceBurst are the token bucket of
	// logins (m1s that pass the source check) per client address: a user
	// logs in a few times a minute, a flood thousands of times a second.
	DefaultSourceRate  = 5.0
	DefaultSourceBurst = 20
	// MaxRelaysPerSource is the share of the relay slots one client
	// address may hold at once: a flood from one address leaves three
	// quarters of the slots to everyone else.
	MaxRelaysPerSource = MaxRelays / 4
	// maxSourceBuckets bounds the per-source token buckets.
	maxSourceBuckets = 4096
)

const (
	echoLabel  = "tagauth/echo-v1"
	echoBucket = time.Minute
	echoMAC    = 8 // bytes of HMAC: 2^-64 odds for a blind guess
	echoLen    = 1 + echoMAC
)

// echoer mints and checks Echo values.
type echoer struct {
	secret [32]byte
}

func newEchoer() (*echoer, error) {
	e := new(echoer)
	// Drawn from the system's generator, not Config.Rand: the secret
	// must be unpredictable even when tests script the protocol's
	// randomness.
	if _, err := rand.Read(e.secret[:]); err != nil {
		return nil, fmt.Errorf("device: drawing the Echo secret: %w", err)
	}
	return e, nil
}

func (e *echoer) mac(dst []byte, minute uint64, addr netip.Addr) []byte {
	h := hmac.New(sha256.New, e.secret[:])
	var b [len(echoLabel) + 8 + 16]byte
	n := copy(b[:], echoLabel)
	binary.BigEndian.PutUint64(b[n:], minute)
	a16 := addr.As16()
	copy(b[n+8:], a16[:])
	h.Write(b[:])
	var sum [sha256.Size]byte
	return append(dst, h.Sum(sum[:0])[:echoMAC]...)
}

func minuteOf(now time.Time) uint64 { return uint64(now.Unix()) / uint64(echoBucket/time.Second) }

// mint returns a fresh Echo value for addr.
func (e *echoer) mint(addr netip.Addr, now time.Time) []byte {
	m := minuteOf(now)
	return e.mac(append(make([]byte, 0, echoLen), byte(m)), m, addr)
}

// valid reports whether v is an Echo value minted for addr during this
// minute or the previous one. The MAC covers the full counter, so a value
// does not come back to life when its byte wraps.
func (e *echoer) valid(v []byte, addr netip.Addr, now time.Time) bool {
	if len(v) != echoLen {
		return false
	}
	cur := minuteOf(now)
	var buf [echoLen]byte
	for _, m := range [2]uint64{cur, cur - 1} {
		if byte(m) != v[0] {
			continue
		}
		if hmac.Equal(e.mac(append(buf[:0], byte(m)), m, addr), v) {
			return true
		}
	}
	return false
}

// verifiedTable remembers the addresses that proved return routability,
// each for ttl, at most len(ring): the oldest verification is forgotten
// first. A forgotten address costs its user one more round trip, nothing
// else.
type verifiedTable struct {
	mu   sync.Mutex
	ttl  time.Duration
	at   map[netip.Addr]time.Time
	ring []netip.Addr // insertion order
	head int
}

func newVerifiedTable(size int, ttl time.Duration) *verifiedTable {
	return &verifiedTable{ttl: ttl, at: make(map[netip.Addr]time.Time, size), ring: make([]netip.Addr, 0, size)}
}

// has reports whether addr was verified less than ttl ago.
func (v *verifiedTable) has(addr netip.Addr, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	at, ok := v.at[addr]
	return ok && now.Sub(at) < v.ttl
}

// add records that addr proved return routability now.
func (v *verifiedTable) add(addr netip.Addr, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.at[addr]; ok {
		// Renewed in its slot: the ring still bounds the table.
		v.at[addr] = now
		return
	}
	if len(v.ring) < cap(v.ring) {
		v.ring = append(v.ring, addr)
	} else {
		delete(v.at, v.ring[v.head])
		v.ring[v.head] = addr
		v.head = (v.head + 1) % len(v.ring)
	}
	v.at[addr] = now
}

func (v *verifiedTable) len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.at)
}

// sourceLimits is the per-source token bucket of logins and the count of
// relays each source holds, for at most maxSourceBuckets sources. A
// source is an IPv4 address or an IPv6 /64 (limitKey).
type sourceLimits struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
	relays int
}

// Why sourceLimits refused a login (metric reasons).
const (
	reasonSourceRate  = "source rate limit"
	reasonSourceShare = "source relay share"
)

func newSourceLimits(rate float64, burst int) *sourceLimits {
	return &sourceLimits{rate: rate, burst: float64(burst), buckets: make(map[netip.Addr]*bucket)}
}

func (l *sourceLimits) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
	}
	b.at = now
}

// acquire takes a token and a relay share for addr. It returns "" on
// success, else the reason (reasonSourceRate or reasonSourceShare); a
// success must be followed by release.
func (l *sourceLimits) acquire(addr netip.Addr, now time.Time) string {
	addr = limitKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[addr]
	if b == nil {
		if len(l.buckets) >= maxSourceBuckets {
			l.evictLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[addr] = b
	}
	l.refill(b, now)
	switch {
	case b.relays >= MaxRelaysPerSource:
		return reasonSourceShare
	case b.tokens < 1:
		return reasonSourceRate
	}
	b.tokens--
	b.relays++
	return ""
}

// release gives back addr's relay share.
func (l *sourceLimits) release(addr netip.Addr) {
	addr = limitKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[addr]; b != nil && b.relays > 0 {
		b.relays--
	}
}

// limitKey is the key of addr's bucket: the address itself for IPv4, its
// /64 for IPv6, as the gateway counts sources (internal/lockout). One
// subscriber usually holds a whole /64, and a client proves only that it
// receives at the address it sends from, so per-address buckets would give
// a flooder 2^64 fresh bursts and every relay slot.
func limitKey(addr netip.Addr) netip.Addr {
	addr = addr.Unmap()
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return addr
}

// evictLocked makes room. Buckets that hold no relay and have a token
// again are dropped first: forgetting them costs at most a burst. If that
// frees nothing (every bucket is an address being limited right now),
// an eighth of the idle ones go, in map order, so that a stream of new
// addresses costs amortised constant time, not a scan each. At most
// MaxRelays buckets hold a relay, far fewer than the table's size.
func (l *sourceLimits) evictLocked(now time.Time) {
	for a, b := range l.buckets {
		if b.relays > 0 {
			continue
		}
		if l.refill(b, now); b.tokens >= 1 {
			delete(l.buckets, a)
		}
	}
	for a, b := range l.buckets {
		if len(l.buckets) < maxSourceBuckets*7/8 {
			return
		}
		if b.relays == 0 {
			delete(l.buckets, a)
		}
	}
}

func (l *sourceLimits) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sourceOption is the Source option naming addr: 4 bytes for IPv4, 16
// for IPv6.
func sourceOption(addr netip.Addr) []message.Option {
	var v []byte
	if addr.Is4() {
		a := addr.As4()
		v = a[:]
	} else {
		a := addr.As16()
		v = a[:]
	}
	return []message.Option{{ID: coap.OptionSource, Value: v}}
}

// logSampler bounds the log lines of refusals, which anyone can cause: at
// most limit lines per interval, the rest counted and reported in one
// summary line. Every refusal is still counted in the metrics.
type logSampler struct {
	mu         sync.Mutex
	limit      int
	interval   time.Duration
	start      time.Time
	logged     int
	suppressed uint64
}

// allow reports whether a line may be written now. When a new interval
// begins it also returns the number of lines the last one suppressed, for
// the caller to report.
func (s *logSampler) allow(now time.Time) (ok bool, suppressed uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	suppressed = s.rollLocked(now)
	if s.logged < s.limit {
		s.logged++
		return true, suppressed
	}
	s.suppressed++
	return false, suppressed
}

// flush starts a new interval if the current one is over and returns the
// lines the last one suppressed.
func (s *logSampler) flush(now time.Time) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rollLocked(now)
}

func (s *logSampler) rollLocked(now time.Time) uint64 {
	if now.Sub(s.start) < s.interval && !now.Before(s.start) {
		return 0
	}
	n := s.suppressed
	s.start, s.logged, s.suppressed = now, 0, 0
	return n
}

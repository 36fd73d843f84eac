package device

import (
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
// Echo values and the table of verified addresses are package echo's,
// shared with the MQTT binding, keyed here by the client's address.

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

// addrKey is an address as the Echo values of package echo key it: its
// 16-byte form, so that an IPv4 address and its IPv4-mapped IPv6
// spelling are one key.
func addrKey(a netip.Addr) []byte {
	b := a.As16()
	return b[:]
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

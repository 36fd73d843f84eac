package lockout

import (
	"encoding/hex"
	"net/netip"
)

// MaxSourceName is the longest opaque source name (coap.OptionSource).
const MaxSourceName = 64

// Source is where a login came from, as the lockout counts it: an IPv4
// address, an IPv6 /64 (one subscriber usually holds a whole /64, so
// counting single addresses would give an attacker 2^64 counters), an
// opaque name (a broker's authenticated client), or Unverified. It is a
// comparable value that allocates nothing.
type Source struct {
	n   uint8                   // bytes of key in use; 0: the zero Source, Unverified
	key [2 + MaxSourceName]byte // kind byte, then the bytes of the source
}

// Kind bytes of a source's key.
const (
	kindUnverified = 'u'
	kindIPv4       = '4'
	kindIPv6       = '6'
	kindName       = 'n'
)

// Unverified is the source of a login whose device said nothing of the
// client's address: it is never familiar, so its failures always count
// against the user's unfamiliar budget.
var Unverified = Source{n: 1, key: [2 + MaxSourceName]byte{kindUnverified}}

// SourceOf reads the value of a verify request's Source option
// (coap.OptionSource): 4 bytes are an IPv4 address, 16 an IPv6 address
// (aggregated to its /64; an IPv4-mapped one is the IPv4 address), 1 to
// 64 other bytes an opaque name; nothing (or anything longer) is
// Unverified.
func SourceOf(opt []byte) Source {
	var s Source
	switch {
	case len(opt) == 4:
		s.key[0] = kindIPv4
		s.n = 1 + uint8(copy(s.key[1:], opt))
	case len(opt) == 16:
		a := netip.AddrFrom16([16]byte(opt))
		if a.Is4In6() {
			b := a.Unmap().As4()
			return SourceOf(b[:])
		}
		s.key[0] = kindIPv6
		s.n = 1 + uint8(copy(s.key[1:], opt[:8]))
	case len(opt) >= 1 && len(opt) <= MaxSourceName:
		s.key[0] = kindName
		s.n = 1 + uint8(copy(s.key[1:], opt))
	default:
		return Unverified
	}
	return s
}

// SourceOfAddr is the source of an IP address.
func SourceOfAddr(a netip.Addr) Source {
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		return SourceOf(b[:])
	}
	if a.Is6() {
		b := a.As16()
		return SourceOf(b[:])
	}
	return Unverified
}

// Verified tells whether the source is known (not Unverified).
func (s Source) Verified() bool { return s.n > 1 || (s.n == 1 && s.key[0] != kindUnverified) }

// AppendKey appends the source's key: a kind byte and its bytes. Keys
// of different sources differ and never equal the unfamiliar budget's.
func (s *Source) AppendKey(dst []byte) []byte {
	if s.n == 0 {
		return append(dst, kindUnverified)
	}
	return append(dst, s.key[:s.n]...)
}

// Key is AppendKey as a string.
func (s Source) Key() string { return string(s.AppendKey(nil)) }

// sourceFromKey is the inverse of Key.
func sourceFromKey(k string) (Source, bool) {
	if len(k) == 0 || len(k) > len(Source{}.key) {
		return Source{}, false
	}
	var s Source
	s.n = uint8(copy(s.key[:], k))
	switch k[0] {
	case kindUnverified:
		return Unverified, len(k) == 1
	case kindIPv4:
		return s, len(k) == 5
	case kindIPv6:
		return s, len(k) == 9
	case kindName:
		return s, len(k) >= 2
	}
	return Source{}, false
}

// String is the source for logs, audit records and operators: an address,
// a /64, "name:" and the name in hex (a name is attacker-chosen bytes), or
// "unverified".
func (s Source) String() string {
	if !s.Verified() {
		return "unverified"
	}
	b := s.key[1:s.n]
	switch s.key[0] {
	case kindIPv4:
		return netip.AddrFrom4([4]byte(b)).String()
	case kindIPv6:
		var a [16]byte
		copy(a[:], b)
		return netip.PrefixFrom(netip.AddrFrom16(a), 64).String()
	}
	return "name:" + hex.EncodeToString(b)
}

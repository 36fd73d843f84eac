package protocol_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// twoProfiles lists the profiles every msgCodec test runs under.
var twoProfiles = [...]protocol.Profile{protocol.Classic, protocol.Hardened}

// msgCodec reduces one message type's parser to "parse, then re-encode", so
// that prefix, trailing-byte and random-input tests treat every type alike.
type msgCodec struct {
	name     string
	typ      protocol.MsgType
	reencode func([]byte) ([]byte, error)
}

var msgCodecs = []msgCodec{
	{"m1", protocol.TypeM1, func(b []byte) ([]byte, error) {
		m, err := protocol.ParseM1(b)
		if err != nil {
			return nil, err
		}
		return m.Append(nil), nil
	}},
	{"m2", protocol.TypeM2, func(b []byte) ([]byte, error) {
		m, err := protocol.ParseM2(b)
		if err != nil {
			return nil, err
		}
		return m.Append(nil), nil
	}},
	{"m3", protocol.TypeM3, func(b []byte) ([]byte, error) {
		m, err := protocol.ParseM3(b)
		if err != nil {
			return nil, err
		}
		return m.Append(nil), nil
	}},
	{"m4", protocol.TypeM4, func(b []byte) ([]byte, error) {
		m, err := protocol.ParseM4(b)
		if err != nil {
			return nil, err
		}
		return m.Append(nil), nil
	}},
	{"m5", protocol.TypeM5, func(b []byte) ([]byte, error) {
		m, err := protocol.ParseM5(b)
		if err != nil {
			return nil, err
		}
		return m.Append(nil), nil
	}},
	{"error", protocol.TypeError, func(b []byte) ([]byte, error) {
		p, c, err := protocol.ParseError(b)
		if err != nil {
			return nil, err
		}
		return protocol.AppendError(nil, p, c), nil
	}},
}

func msgCodecFor(t protocol.MsgType) msgCodec {
	for _, c := range msgCodecs {
		if c.typ == t {
			return c
		}
	}
	panic(fmt.Sprintf("no msgCodec for type 0x%02x", uint8(t)))
}

// msgGen draws random but well-formed messages from a seeded source, so a
// failure reproduces.
type msgGen struct{ r *rand.Rand }

func newMsgGen(seed uint64) msgGen {
	return msgGen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g msgGen) b32() (b [protocol.Size]byte) {
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

func (g msgGen) nonce() (b [protocol.NonceSize]byte) {
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

// msgIDRunes mixes one-, two-, three- and four-byte UTF-8 encodings.
var msgIDRunes = []rune("abcXYZ019-_.@éßЖ日本🙂")

// id returns a valid identity of 1 to 64 bytes.
func (g msgGen) id() []byte {
	want := 1 + g.r.IntN(protocol.MaxIDLen)
	var b []byte
	for {
		r := msgIDRunes[g.r.IntN(len(msgIDRunes))]
		n := len(string(r))
		if len(b)+n > want {
			if len(b) == 0 {
				continue
			}
			return b
		}
		b = append(b, string(r)...)
	}
}

func (g msgGen) kv() uint8 { return uint8(1 + g.r.IntN(255)) }

func (g msgGen) m1(p protocol.Profile) protocol.M1 {
	m := protocol.M1{Profile: p, ID: g.id(), E: g.b32(), Theta: g.b32(), T1: g.r.Uint64()}
	if p == protocol.Hardened {
		m.KV, m.Nonce = g.kv(), g.nonce()
	}
	return m
}

func (g msgGen) m2(p protocol.Profile) protocol.M2 {
	m := protocol.M2{Profile: p, ID: g.id(), E: g.b32(), DID: g.id(), I: g.b32(), T1: g.r.Uint64(), T2: g.r.Uint64()}
	if p == protocol.Hardened {
		m.KV, m.Nonce, m.KVDev = g.kv(), g.nonce(), g.kv()
	}
	return m
}

func (g msgGen) m3(p protocol.Profile) protocol.M3 {
	return protocol.M3{Profile: p, F: g.b32(), Gamma: g.b32(), T3: g.r.Uint64()}
}

func (g msgGen) m4(p protocol.Profile) protocol.M4 {
	m := protocol.M4{Profile: p, X: g.b32(), Gamma: g.b32(), T4: g.r.Uint64()}
	if p == protocol.Hardened {
		m.T3, m.Tau = g.r.Uint64(), g.b32()
	}
	return m
}

// msgValidSet returns encodings of every message type of both profiles
// (no classic m5: it does not exist), plus every error message.
func msgValidSet(seed uint64) map[string][]byte {
	g := newMsgGen(seed)
	out := map[string][]byte{}
	for _, p := range twoProfiles {
		m1, m2, m3, m4 := g.m1(p), g.m2(p), g.m3(p), g.m4(p)
		out[p.String()+"/m1"] = m1.Append(nil)
		out[p.String()+"/m2"] = m2.Append(nil)
		out[p.String()+"/m3"] = m3.Append(nil)
		out[p.String()+"/m4"] = m4.Append(nil)
	}
	out["hardened/m5"] = (&protocol.M5{Profile: protocol.Hardened, Tau: g.b32()}).Append(nil)
	for _, p := range []protocol.Profile{0, protocol.Classic, protocol.Hardened} {
		for c := protocol.ErrMalformed; c <= protocol.ErrInternal; c++ {
			out[fmt.Sprintf("error/%v/%v", p, c)] = protocol.AppendError(nil, p, c)
		}
	}
	return out
}

func TestMessageRoundTrip(t *testing.T) {
	g := newMsgGen(1)
	for _, p := range twoProfiles {
		t.Run(p.String(), func(t *testing.T) {
			for range 300 {
				m1 := g.m1(p)
				b := m1.Append(nil)
				got, err := protocol.ParseM1(b)
				if err != nil || !reflect.DeepEqual(got, m1) {
					t.Fatalf("m1 %x: got %+v, %v; want %+v", b, got, err, m1)
				}
				if again := got.Append(nil); !bytes.Equal(again, b) {
					t.Fatalf("m1 re-encodes differently")
				}

				m2 := g.m2(p)
				b = m2.Append(nil)
				got2, err := protocol.ParseM2(b)
				if err != nil || !reflect.DeepEqual(got2, m2) {
					t.Fatalf("m2 %x: got %+v, %v; want %+v", b, got2, err, m2)
				}

				m3 := g.m3(p)
				b = m3.Append(nil)
				got3, err := protocol.ParseM3(b)
				if err != nil || got3 != m3 {
					t.Fatalf("m3 %x: got %+v, %v; want %+v", b, got3, err, m3)
				}

				m4 := g.m4(p)
				b = m4.Append(nil)
				got4, err := protocol.ParseM4(b)
				if err != nil || got4 != m4 {
					t.Fatalf("m4 %x: got %+v, %v; want %+v", b, got4, err, m4)
				}

				if p == protocol.Hardened {
					m5 := protocol.M5{Profile: p, Tau: g.b32()}
					b = m5.Append(nil)
					got5, err := protocol.ParseM5(b)
					if err != nil || got5 != m5 {
						t.Fatalf("m5 %x: got %+v, %v; want %+v", b, got5, err, m5)
					}
				}
			}
		})
	}
}

// TestMessageSizes pins the wire layout of spec section 7, field by field:
// a parser and an encoder that agree with each other but not with the spec
// would pass the round trip.
func TestMessageSizes(t *testing.T) {
	id := []byte("alice")
	did := []byte("sensor-7")
	cases := []struct {
		name string
		b    []byte
		want int
	}{
		{"classic m1", (&protocol.M1{Profile: protocol.Classic, ID: id}).Append(nil), 2 + 6 + 32 + 32 + 8},
		{"hardened m1", (&protocol.M1{Profile: protocol.Hardened, ID: id, KV: 1}).Append(nil), 2 + 6 + 1 + 16 + 32 + 32 + 8},
		{"classic m2", (&protocol.M2{Profile: protocol.Classic, ID: id, DID: did}).Append(nil), 2 + 6 + 32 + 9 + 32 + 8 + 8},
		{"hardened m2", (&protocol.M2{Profile: protocol.Hardened, ID: id, KV: 1, DID: did, KVDev: 1}).Append(nil), 2 + 6 + 1 + 16 + 32 + 9 + 1 + 32 + 8 + 8},
		{"m3", (&protocol.M3{Profile: protocol.Classic}).Append(nil), 2 + 32 + 32 + 8},
		{"classic m4", (&protocol.M4{Profile: protocol.Classic}).Append(nil), 2 + 32 + 32 + 8},
		{"hardened m4", (&protocol.M4{Profile: protocol.Hardened}).Append(nil), 2 + 32 + 32 + 8 + 8 + 32},
		{"hardened m5", (&protocol.M5{Profile: protocol.Hardened}).Append(nil), 2 + 32},
		{"error", protocol.AppendError(nil, protocol.Hardened, protocol.ErrRejected), 3},
	}
	for _, c := range cases {
		if len(c.b) != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, len(c.b), c.want)
		}
	}
	// Timestamps are big-endian: the last byte of m3 is the low byte of T3.
	b := (&protocol.M3{Profile: protocol.Hardened, T3: 0x0102030405060708}).Append(nil)
	if !bytes.Equal(b[len(b)-8:], []byte{1, 2, 3, 4, 5, 6, 7, 8}) || b[0] != 0x02 || b[1] != 0x03 {
		t.Errorf("m3 header or T3 encoding: %x", b)
	}
}

func TestWireCodes(t *testing.T) {
	// Spec section 7: the byte values and names are the contract.
	want := []struct {
		c    protocol.Code
		b    byte
		name string
	}{
		{protocol.ErrMalformed, 0x01, "malformed"},
		{protocol.ErrUnsupportedProfile, 0x02, "unsupported_profile"},
		{protocol.ErrStaleTimestamp, 0x03, "stale_timestamp"},
		{protocol.ErrReplayed, 0x04, "replayed"},
		{protocol.ErrRejected, 0x05, "rejected"},
		{protocol.ErrBusy, 0x06, "busy"},
		{protocol.ErrInternal, 0x07, "internal"},
	}
	for _, w := range want {
		if byte(w.c) != w.b || w.c.String() != w.name || !w.c.Valid() {
			t.Errorf("code %v: byte 0x%02x valid %v, want 0x%02x %s", w.c, byte(w.c), w.c.Valid(), w.b, w.name)
		}
	}
	for _, c := range []protocol.Code{0x00, 0x08, 0x7f, 0xff} {
		if c.Valid() {
			t.Errorf("code 0x%02x reported valid", byte(c))
		}
	}
	if got := protocol.CodeOf(fmt.Errorf("wrapped: %w", protocol.ReasonBadE)); got != protocol.ErrRejected {
		t.Errorf("CodeOf(wrapped ReasonBadE) = %v", got)
	}
	if got := protocol.CodeOf(errors.New("disk on fire")); got != protocol.ErrInternal {
		t.Errorf("CodeOf(foreign error) = %v", got)
	}
}

func TestParseErrorMessage(t *testing.T) {
	// Profile 0x00 is how a party answers a message whose profile byte it
	// could not read; it must parse, with every defined code.
	for _, p := range []protocol.Profile{0, protocol.Classic, protocol.Hardened} {
		for c := protocol.ErrMalformed; c <= protocol.ErrInternal; c++ {
			b := protocol.AppendError(nil, p, c)
			if !bytes.Equal(b, []byte{byte(p), 0x7f, byte(c)}) {
				t.Fatalf("AppendError(%v, %v) = %x", p, c, b)
			}
			gp, gc, err := protocol.ParseError(b)
			if err != nil || gp != p || gc != c {
				t.Errorf("ParseError(%x) = %v, %v, %v", b, gp, gc, err)
			}
		}
	}
	bad := [][]byte{
		nil,
		{0x02},
		{0x02, 0x7f},
		{0x02, 0x7f, 0x00},       // code 0 undefined
		{0x02, 0x7f, 0x08},       // first undefined code
		{0x02, 0x7f, 0xff},       // undefined
		{0x03, 0x7f, 0x05},       // unknown profile
		{0xff, 0x7f, 0x05},       // unknown profile
		{0x02, 0x7e, 0x05},       // wrong type
		{0x02, 0x05, 0x05},       // an m5 type byte
		{0x02, 0x7f, 0x05, 0x00}, // trailing byte
	}
	for _, b := range bad {
		if p, c, err := protocol.ParseError(b); !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("ParseError(%x) = %v, %v, %v; want malformed", b, p, c, err)
		}
	}
}

func TestHeader(t *testing.T) {
	for _, b := range [][]byte{nil, {0x02}} {
		if _, _, err := protocol.Header(b); !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("Header(%x) err = %v", b, err)
		}
	}
	p, typ, err := protocol.Header([]byte{0x09, 0x42, 0x00})
	if err != nil || p != 0x09 || typ != 0x42 {
		t.Errorf("Header reads %v %v %v", p, typ, err)
	}
}

func TestParseRejectsWrongType(t *testing.T) {
	for name, b := range msgValidSet(2) {
		if b[0] == 0 {
			continue // a 0x00 profile exists only on error messages
		}
		for _, c := range msgCodecs {
			for typ := range 256 {
				if protocol.MsgType(typ) == c.typ {
					continue
				}
				mod := bytes.Clone(b)
				mod[1] = byte(typ)
				if _, err := c.reencode(mod); !errors.Is(err, protocol.ErrMalformed) {
					t.Fatalf("%s with type 0x%02x into Parse%s: err %v, want malformed", name, typ, c.name, err)
				}
			}
		}
	}
}

func TestParseRejectsUnknownProfile(t *testing.T) {
	for name, b := range msgValidSet(3) {
		c := msgCodecFor(protocol.MsgType(b[1]))
		for _, pb := range []byte{0x00, 0x03, 0x10, 0x7f, 0x80, 0xff} {
			mod := bytes.Clone(b)
			mod[0] = pb
			_, err := c.reencode(mod)
			if c.typ == protocol.TypeError {
				if pb == 0x00 {
					if err != nil {
						t.Errorf("%s with profile 0x00 refused: %v", name, err)
					}
				} else if !errors.Is(err, protocol.ErrMalformed) {
					t.Errorf("%s with profile 0x%02x: err %v, want malformed", name, pb, err)
				}
				continue
			}
			if !errors.Is(err, protocol.ErrUnsupportedProfile) || !errors.Is(err, protocol.ReasonWrongProfile) {
				t.Errorf("%s with profile 0x%02x: err %v, want unsupported_profile", name, pb, err)
			}
		}
	}
	// The profile byte is judged before anything else, even alone.
	if _, err := protocol.ParseM1([]byte{0x03}); !errors.Is(err, protocol.ErrUnsupportedProfile) {
		t.Errorf("lone unknown profile byte: %v", err)
	}
}

func TestParseRejectsTrailingAndTruncated(t *testing.T) {
	for name, b := range msgValidSet(4) {
		c := msgCodecFor(protocol.MsgType(b[1]))
		for _, tail := range [][]byte{{0x00}, {0xff}, make([]byte, 32)} {
			if _, err := c.reencode(append(bytes.Clone(b), tail...)); !errors.Is(err, protocol.ErrMalformed) {
				t.Errorf("%s plus %d trailing bytes: err %v, want malformed", name, len(tail), err)
			}
		}
		if _, err := c.reencode(b[:len(b)-1]); !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("%s truncated by one byte: err %v, want malformed", name, err)
		}
	}
}

// TestNoProperPrefixParses: a parser that stops early would let a prefix
// stand for the whole, and a transport that splits a datagram would go
// unnoticed.
func TestNoProperPrefixParses(t *testing.T) {
	for name, b := range msgValidSet(5) {
		c := msgCodecFor(protocol.MsgType(b[1]))
		if out, err := c.reencode(b); err != nil || !bytes.Equal(out, b) {
			t.Fatalf("%s does not parse: %v", name, err)
		}
		for n := range len(b) {
			if _, err := c.reencode(b[:n]); !errors.Is(err, protocol.ErrMalformed) {
				t.Errorf("%s: prefix of %d/%d bytes: err %v, want malformed", name, n, len(b), err)
			}
		}
	}
}

func TestParseRejectsBadIdentity(t *testing.T) {
	bad := map[string][]byte{
		"length 0":          {},
		"length 65":         []byte(strings.Repeat("a", 65)),
		"length 255":        []byte(strings.Repeat("a", 255)),
		"invalid byte":      []byte("al\xffce"),
		"truncated rune":    []byte("alic\xc3"),
		"overlong NUL":      []byte("a\xc0\x80"),
		"surrogate":         []byte("\xed\xa0\x80"),
		"NUL":               []byte("al\x00ce"),
		"only NUL":          {0},
		"64 bytes plus NUL": append([]byte(strings.Repeat("a", 63)), 0),
	}
	good := map[string][]byte{
		"length 1":       []byte("a"),
		"length 64":      []byte(strings.Repeat("z", 64)),
		"multibyte 64":   []byte(strings.Repeat("日", 21) + "a"),
		"four-byte rune": []byte("🙂"),
	}
	g := newMsgGen(6)
	for _, p := range twoProfiles {
		encs := []struct {
			where string
			enc   func(id []byte) []byte
			typ   protocol.MsgType
		}{
			{"m1 ID", func(id []byte) []byte { m := g.m1(p); m.ID = id; return m.Append(nil) }, protocol.TypeM1},
			{"m2 ID", func(id []byte) []byte { m := g.m2(p); m.ID = id; return m.Append(nil) }, protocol.TypeM2},
			{"m2 DID", func(id []byte) []byte { m := g.m2(p); m.DID = id; return m.Append(nil) }, protocol.TypeM2},
		}
		for _, e := range encs {
			c := msgCodecFor(e.typ)
			for name, id := range bad {
				if len(id) > 255 {
					continue
				}
				if _, err := c.reencode(e.enc(id)); !errors.Is(err, protocol.ErrMalformed) {
					t.Errorf("%v %s %s: err %v, want malformed", p, e.where, name, err)
				}
			}
			for name, id := range good {
				b := e.enc(id)
				if out, err := c.reencode(b); err != nil || !bytes.Equal(out, b) {
					t.Errorf("%v %s %s refused: %v", p, e.where, name, err)
				}
			}
		}
	}
}

func TestParseRejectsKeyVersionZero(t *testing.T) {
	g := newMsgGen(7)
	m1 := g.m1(protocol.Hardened)
	m1.KV = 0
	if _, err := protocol.ParseM1(m1.Append(nil)); !errors.Is(err, protocol.ErrMalformed) {
		t.Errorf("m1 kv_i 0: %v", err)
	}
	m2 := g.m2(protocol.Hardened)
	m2.KV = 0
	if _, err := protocol.ParseM2(m2.Append(nil)); !errors.Is(err, protocol.ErrMalformed) {
		t.Errorf("m2 kv_i 0: %v", err)
	}
	m2 = g.m2(protocol.Hardened)
	m2.KVDev = 0
	if _, err := protocol.ParseM2(m2.Append(nil)); !errors.Is(err, protocol.ErrMalformed) {
		t.Errorf("m2 kv_j 0: %v", err)
	}
	m2 = g.m2(protocol.Hardened)
	m2.KV, m2.KVDev = 255, 255
	if _, err := protocol.ParseM2(m2.Append(nil)); err != nil {
		t.Errorf("m2 key versions 255 refused: %v", err)
	}
}

func TestParseRejectsProfileLayoutMix(t *testing.T) {
	g := newMsgGen(8)
	// Classic has no m5, in any length.
	for _, b := range [][]byte{
		(&protocol.M5{Profile: protocol.Classic, Tau: g.b32()}).Append(nil),
		{0x01, 0x05},
	} {
		if _, err := protocol.ParseM5(b); !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("classic m5 %x: err %v, want malformed", b, err)
		}
	}
	// A message laid out for one profile under the other profile's byte.
	for _, p := range twoProfiles {
		other := protocol.Classic
		if p == protocol.Classic {
			other = protocol.Hardened
		}
		for name, b := range map[string][]byte{
			"m1": func() []byte { m := g.m1(p); m.KV = 1; return m.Append(nil) }(),
			"m2": func() []byte { m := g.m2(p); m.KV, m.KVDev = 1, 1; return m.Append(nil) }(),
			"m4": func() []byte { m := g.m4(p); return m.Append(nil) }(),
		} {
			mod := bytes.Clone(b)
			mod[0] = byte(other)
			if _, err := msgCodecFor(protocol.MsgType(b[1])).reencode(mod); !errors.Is(err, protocol.ErrMalformed) {
				t.Errorf("%v-layout %s under %v byte: err %v, want malformed", p, name, other, err)
			}
		}
	}
}

// TestParseRandomInput feeds random and mutated bytes to every parser: no
// panic, only malformed or unsupported_profile, and whatever parses is
// canonical (it re-encodes to the same bytes).
func TestParseRandomInput(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	types := []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x7f}
	parsed := 0
	check := func(b []byte) {
		for _, c := range msgCodecs {
			out, err := c.reencode(b)
			if err == nil {
				parsed++
				if !bytes.Equal(out, b) {
					t.Fatalf("Parse%s(%x) re-encodes as %x", c.name, b, out)
				}
				continue
			}
			if code := protocol.CodeOf(err); code != protocol.ErrMalformed && code != protocol.ErrUnsupportedProfile {
				t.Fatalf("Parse%s(%x): code %v", c.name, b, code)
			}
		}
	}
	for range 20000 {
		b := make([]byte, r.IntN(200))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if len(b) >= 2 && r.IntN(2) == 0 {
			b[0] = byte(r.IntN(3))
			b[1] = types[r.IntN(len(types))]
		}
		check(b)
	}
	for _, b := range msgValidSet(11) {
		for range 2000 {
			mod := bytes.Clone(b)
			switch r.IntN(4) {
			case 0:
				mod[r.IntN(len(mod))] = byte(r.Uint32())
			case 1:
				i := r.IntN(len(mod))
				mod = append(mod[:i], mod[i+1:]...)
			case 2:
				i := r.IntN(len(mod) + 1)
				mod = append(mod[:i], append([]byte{byte(r.Uint32())}, mod[i:]...)...)
			case 3:
				mod[r.IntN(len(mod))] ^= 1 << r.IntN(8)
			}
			check(mod)
		}
	}
	if parsed == 0 {
		t.Fatal("no mutated input parsed: the canonical-encoding check never ran")
	}
}

package echo

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

func TestEchoValues(t *testing.T) {
	e, err := NewMinter()
	if err != nil {
		t.Fatal(err)
	}
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	t0 := time.Unix(1_800_000_000, 0) // a minute boundary
	key := func(a netip.Addr) []byte { b := a.As16(); return b[:] }
	v := e.Mint(nil, key(a1), t0)
	for _, tc := range []struct {
		name string
		v    []byte
		addr netip.Addr
		at   time.Time
		want bool
	}{
		{"same minute", v, a1, t0.Add(59 * time.Second), true},
		{"next minute", v, a1, t0.Add(119 * time.Second), true},
		{"two minutes on", v, a1, t0.Add(2 * time.Minute), false},
		{"before it was minted", v, a1, t0.Add(-time.Second), false},
		{"another address", v, a2, t0, false},
		{"byte wrapped", v, a1, t0.Add(256 * time.Minute), false},
		{"truncated", v[:len(v)-1], a1, t0, false},
		{"tampered", append(bytes.Clone(v[:len(v)-1]), v[len(v)-1]^0x80), a1, t0, false},
		{"IPv6", e.Mint(nil, key(a2), t0), a2, t0, true},
	} {
		if got := e.Valid(tc.v, key(tc.addr), tc.at); got != tc.want {
			t.Errorf("%s: valid = %v, want %v", tc.name, got, tc.want)
		}
	}
	if other, _ := NewMinter(); other.Valid(v, key(a1), t0) {
		t.Error("an Echo value verified under another agent's secret")
	}
}

func TestTableBounded(t *testing.T) {
	v := NewTable[netip.Addr](3, time.Minute)
	t0 := time.Unix(1_800_000_000, 0)
	addr := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, i}) }
	for i := range byte(4) {
		v.Add(addr(i), t0)
	}
	if v.Len() != 3 || v.Has(addr(0), t0) || !v.Has(addr(1), t0) || !v.Has(addr(3), t0) {
		t.Fatalf("after 4 adds to a table of 3: len %d, want the oldest forgotten", v.Len())
	}
	if v.Has(addr(3), t0.Add(time.Minute)) {
		t.Error("an entry outlived its lifetime")
	}
	v.Add(addr(1), t0.Add(time.Minute)) // renewed in place
	if !v.Has(addr(1), t0.Add(90*time.Second)) || v.Len() != 3 {
		t.Error("a renewed entry was not renewed")
	}
}

package coapbind

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

func TestParseDeviceInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"hardened", AppendDeviceInfo(nil, protocol.Hardened, "sensor-7"), true},
		{"classic, 64 bytes", AppendDeviceInfo(nil, protocol.Classic, strings.Repeat("é", 32)), true},
		{"empty", nil, false},
		{"no identity", []byte{byte(protocol.Hardened), 0}, false},
		{"unknown profile", AppendDeviceInfo(nil, 0x09, "sensor-7"), false},
		{"trailing byte", append(AppendDeviceInfo(nil, protocol.Hardened, "sensor-7"), 0), false},
		{"truncated", AppendDeviceInfo(nil, protocol.Hardened, "sensor-7")[:5], false},
		{"NUL", AppendDeviceInfo(nil, protocol.Hardened, "a\x00b"), false},
		{"not UTF-8", AppendDeviceInfo(nil, protocol.Hardened, "a\xffb"), false},
		{"65 bytes", AppendDeviceInfo(nil, protocol.Hardened, strings.Repeat("x", 65)), false},
	} {
		p, did, err := ParseDeviceInfo(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v %q %v, want ok=%v", tc.name, p, did, err, tc.ok)
		}
	}
	if InfoRequestSize < len(AppendDeviceInfo(nil, protocol.Hardened, strings.Repeat("x", protocol.MaxIDLen))) {
		t.Error("the info request's padding is smaller than the largest answer")
	}
}

// FuzzParseDeviceInfo: the decoder of a device's untrusted info answer
// never panics, and what it accepts re-encodes to the same bytes.
func FuzzParseDeviceInfo(f *testing.F) {
	f.Add(AppendDeviceInfo(nil, protocol.Hardened, "sensor-7"))
	f.Add(AppendDeviceInfo(nil, protocol.Classic, "x"))
	f.Add([]byte{0x02, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, did, err := ParseDeviceInfo(b)
		if err != nil {
			return
		}
		if !p.Valid() || !protocol.ValidIdentity([]byte(did)) {
			t.Fatalf("accepted %v %q", p, did)
		}
		if !bytes.Equal(AppendDeviceInfo(nil, p, did), b) {
			t.Fatalf("%x accepted as %v %q, which encodes otherwise", b, p, did)
		}
	})
}

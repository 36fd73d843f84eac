package lockout_test

import (
	"net/netip"
	"testing"

	"github.com/tagauth/tagauth/internal/lockout"
)

// FuzzSourceOf: any Source option value gives a source whose key parses
// back to it, whose text is printable ASCII, and whose key never names the
// unfamiliar budget.
func FuzzSourceOf(f *testing.F) {
	for _, s := range [][]byte{nil, {192, 0, 2, 1}, netip.MustParseAddr("2001:db8::1").AsSlice(),
		netip.MustParseAddr("::ffff:192.0.2.1").AsSlice(), []byte("mqtt-client"), make([]byte, 65), {'*'}, {0}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, opt []byte) {
		src := lockout.SourceOf(opt)
		key := lockout.SourceKey("alice", src.Key())
		user, scope, back, ok := lockout.ParseKey(key)
		if !ok || user != "alice" || scope != lockout.ScopeSource || back != src {
			t.Fatalf("SourceOf(%x): key %q parses as %q %v %v %v", opt, key, user, scope, back, ok)
		}
		if key == lockout.UnfamiliarKey("alice") {
			t.Fatalf("SourceOf(%x) has the unfamiliar budget's key", opt)
		}
		for _, r := range src.String() {
			if r < 0x20 || r > 0x7e {
				t.Fatalf("SourceOf(%x).String() = %q: not printable ASCII", opt, src.String())
			}
		}
		if (len(opt) == 0 || len(opt) > lockout.MaxSourceName) == src.Verified() {
			t.Fatalf("SourceOf(%x).Verified() = %v", opt, src.Verified())
		}
	})
}

// FuzzParseKey: keys read back from a shared store never panic the
// parser.
func FuzzParseKey(f *testing.F) {
	f.Add("alice\x004\xc0\x00\x02\x01")
	f.Add("alice\x00*")
	f.Add("alice")
	f.Add("\x00")
	f.Fuzz(func(t *testing.T, key string) {
		user, scope, src, ok := lockout.ParseKey(key)
		if ok && scope == lockout.ScopeSource && lockout.SourceKey(user, src.Key()) != key {
			t.Fatalf("ParseKey(%q) = %q %v %v, which keys as %q", key, user, scope, src, lockout.SourceKey(user, src.Key()))
		}
	})
}

package protocol_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// TestStepsAppend checks the builder contract of every login step: the
// message is appended after whatever dst holds, and the part appended is a
// message of the right type; classic Finish has no m5 and returns nil even
// for a non-nil dst, so that "m5 != nil" still means "send a confirm".
func TestStepsAppend(t *testing.T) {
	prefix := []byte("prefix")
	dst := func() []byte { return append(make([]byte, 0, 256), prefix...) }
	check := func(t *testing.T, step string, got []byte, want protocol.MsgType) []byte {
		t.Helper()
		if !bytes.HasPrefix(got, prefix) {
			t.Fatalf("%s: prefix lost: % x", step, got)
		}
		msg := got[len(prefix):]
		if _, typ, err := protocol.Header(msg); err != nil || typ != want {
			t.Fatalf("%s: appended % x: type %v, %v; want %v", step, msg, typ, err, want)
		}
		return msg
	}
	for _, p := range profiles {
		t.Run(p.String(), func(t *testing.T) {
			w := newWorld(t, p)
			ctx := context.Background()
			u, err := protocol.Unlock(w.card, "correct horse", w.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			l, out, err := u.Login(dst(), "sensor-7")
			if err != nil {
				t.Fatal(err)
			}
			m1 := check(t, "Login", out, protocol.TypeM1)
			dl, out, err := w.dev.Start(ctx, dst(), m1)
			if err != nil {
				t.Fatal(err)
			}
			m2 := check(t, "Start", out, protocol.TypeM2)
			out, _, err = w.gw.Verify(ctx, dst(), m2)
			if err != nil {
				t.Fatal(err)
			}
			m3 := check(t, "Verify", out, protocol.TypeM3)
			out, _, err = dl.Respond(dst(), m3)
			if err != nil {
				t.Fatal(err)
			}
			m4 := check(t, "Respond", out, protocol.TypeM4)
			us, out, err := l.Finish(dst(), m4)
			if err != nil {
				t.Fatal(err)
			}
			defer us.Close()
			if p == protocol.Classic {
				if out != nil {
					t.Fatalf("classic Finish returned % x, want nil", out)
				}
				return
			}
			m5 := check(t, "Finish", out, protocol.TypeM5)
			ds, err := dl.Confirm(m5)
			if err != nil {
				t.Fatal(err)
			}
			defer ds.Close()
			if us.Fingerprint() != ds.Fingerprint() {
				t.Fatal("the two ends derived different keys")
			}
		})
	}
}

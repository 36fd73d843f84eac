package protocol_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/protocol/prototest"
)

// StartParsed does what Start does from m1's parsed form: the same m2
// (byte for byte, on a fixed clock and with the same replay state), the
// same replay check, and it refuses an m1 of another profile.
func TestStartParsed(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			a, b := newWorld(t, p), newWorld(t, p)
			b.card, b.devCrd, b.mk = a.card, a.devCrd, a.mk
			var err error
			b.dev, err = protocol.NewDevice(a.devCrd, &prototest.ReplayCache{}, a.cfg)
			if err != nil {
				t.Fatal(err)
			}
			u, err := protocol.Unlock(a.card, "correct horse", a.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			l, m1, err := u.Login(nil, "sensor-7")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			m, err := protocol.ParseM1(m1)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			_, want, err := a.dev.Start(ctx, nil, m1)
			if err != nil {
				t.Fatal(err)
			}
			dl, got, err := b.dev.StartParsed(ctx, nil, m)
			if err != nil {
				t.Fatal(err)
			}
			defer dl.Close()
			if !bytes.Equal(got, want) {
				t.Errorf("StartParsed's m2 %x differs from Start's %x", got, want)
			}
			if _, _, err := b.dev.StartParsed(ctx, nil, m); !errors.Is(err, protocol.ErrReplayed) {
				t.Errorf("the same m1 again: %v, want replayed", err)
			}
			m.Profile ^= protocol.Classic ^ protocol.Hardened
			if _, _, err := b.dev.StartParsed(ctx, nil, m); !errors.Is(err, protocol.ErrUnsupportedProfile) {
				t.Errorf("an m1 of the other profile: %v, want unsupported_profile", err)
			}
		})
	}
}

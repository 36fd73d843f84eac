package gateway_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// freshCache is a replay cache that has seen nothing, ever: it lets a
// benchmark verify one m2 again and again.
type freshCache struct{}

func (freshCache) Insert(context.Context, protocol.ReplayKey, uint64, uint64) (bool, error) {
	return true, nil
}

// BenchmarkVerify runs the gateway's verify endpoint (limits, verify,
// lockout, audit) on a valid m2 without a socket, at a stopped clock.
func BenchmarkVerify(b *testing.B) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		b.Run(p.String(), func(b *testing.B) {
			now := time.Now()
			clock := func() time.Time { return now }
			cfg := testConfig(b.TempDir(), p)
			cfg.Now = clock
			cfg.Replay = freshCache{}
			tg := startGateway(b, cfg)
			card := tg.enrol("alice")
			cred := tg.provision("door", "doors")
			tg.grant("alice", "doors")
			pc := protocol.Config{Now: clock, Rand: clientConfig().Rand}
			u, err := protocol.Unlock(card, password, pc)
			if err != nil {
				b.Fatal(err)
			}
			defer u.Close()
			l, m1, err := u.Login(nil, cred.ID)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			dev, err := protocol.NewDevice(cred.DeviceCredential, replay.New(64), pc)
			if err != nil {
				b.Fatal(err)
			}
			dl, m2, err := dev.Start(context.Background(), nil, m1)
			if err != nil {
				b.Fatal(err)
			}
			defer dl.Close()
			h := tg.g.VerifyHandler()
			req := &coap.Request{Path: gateway.VerifyPath, Payload: m2, From: netip.MustParseAddrPort("192.0.2.7:5683")}
			buf := make([]byte, 0, 256)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if code, _ := h.ServeCoAP(ctx, req, buf[:0]); code != coap.Changed {
					b.Fatalf("code %v", code)
				}
			}
		})
	}
}

package protocol_test

import (
	"context"
	"github.com/tagauth/tagauth/protocol"
	"testing"
)

func BenchmarkQuickVerify(b *testing.B) {
	for _, p := range []string{"classic", "hardened"} {
		b.Run(p, func(b *testing.B) {
			pr := map[string]protocol.Profile{"classic": protocol.Classic, "hardened": protocol.Hardened}[p]
			w := newWorld(&testing.T{}, pr)
			ctx := context.Background()
			u, _ := protocol.Unlock(w.card, "correct horse", w.cfg)
			_, m1, _ := u.Login("sensor-7")
			_, m2, _ := w.dev.Start(ctx, m1)
			w.gw, _ = protocol.NewGateway(pr, w.reg, nopReplay{}, w.cfg)
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				_, _, err := w.gw.Verify(ctx, buf[:0], m2)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type nopReplay struct{}

func (nopReplay) Insert(context.Context, protocol.ReplayKey, uint64, uint64) (bool, error) {
	return true, nil
}

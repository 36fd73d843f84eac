package protocol_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// Benchmarks of every role step, both profiles. The gateway's Verify is the
// hot path; its replay cache is benchmarked on its own in package replay, so
// here it is a cache that always answers fresh.

var profiles = []protocol.Profile{protocol.Classic, protocol.Hardened}

type alwaysFresh struct{}

func (alwaysFresh) Insert(context.Context, protocol.ReplayKey, uint64, uint64) (bool, error) {
	return true, nil
}

// steps holds the genuine messages and sessions of one login, the inputs
// of the per-step benchmarks.
type steps struct {
	w              *world
	user           *protocol.User
	m1, m2, m3, m4 []byte
	m5             []byte
	us, ds         *protocol.Session
}

func loginSteps(b *testing.B, p protocol.Profile) *steps { return runLogin(b, newWorld(b, p)) }

// device and gateway are roles of s's world whose replay cache always
// answers fresh, so that one message can be handled again and again.
func (s *steps) device(tb testing.TB) *protocol.Device {
	d, err := protocol.NewDevice(s.w.devCrd, alwaysFresh{}, s.w.cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func (s *steps) gateway(tb testing.TB) *protocol.Gateway {
	g, err := protocol.NewGateway(s.w.p, s.w.reg, alwaysFresh{}, s.w.cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// runLogin runs one full login in w.
func runLogin(tb testing.TB, w *world) *steps {
	tb.Helper()
	ctx := context.Background()
	u, err := protocol.Unlock(w.card, "correct horse", w.cfg)
	if err != nil {
		tb.Fatal(err)
	}
	s := &steps{w: w, user: u}
	login, m1, err := u.Login(nil, "sensor-7")
	if err != nil {
		tb.Fatal(err)
	}
	dl, m2, err := w.dev.Start(ctx, nil, m1)
	if err != nil {
		tb.Fatal(err)
	}
	m3, _, err := w.gw.Verify(ctx, nil, m2)
	if err != nil {
		tb.Fatal(err)
	}
	m4, ds, err := dl.Respond(nil, m3)
	if err != nil {
		tb.Fatal(err)
	}
	us, m5, err := login.Finish(nil, m4)
	if err != nil {
		tb.Fatal(err)
	}
	if m5 != nil {
		if ds, err = dl.Confirm(m5); err != nil {
			tb.Fatal(err)
		}
	}
	s.m1, s.m2, s.m3, s.m4, s.m5, s.us, s.ds = m1, m2, m3, m4, m5, us, ds
	return s
}

func BenchmarkGatewayVerify(b *testing.B) {
	for _, p := range profiles {
		b.Run(p.String(), func(b *testing.B) {
			s := loginSteps(b, p)
			g := s.gateway(b)
			ctx := context.Background()
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := g.Verify(ctx, buf[:0], s.m2); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGatewayVerifyParallel runs Verify on every core (-cpu sets how
// many), for the scaling figures.
func BenchmarkGatewayVerifyParallel(b *testing.B) {
	for _, p := range profiles {
		b.Run(p.String(), func(b *testing.B) {
			s := loginSteps(b, p)
			g := s.gateway(b)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				buf := make([]byte, 0, 128)
				for pb.Next() {
					if _, _, err := g.Verify(ctx, buf[:0], s.m2); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkCardUnlock(b *testing.B) {
	for _, p := range profiles {
		b.Run(p.String(), func(b *testing.B) {
			w := newWorld(b, p)
			req, err := protocol.NewRegistrationRequest(p, "bob", "pw", protocol.DefaultKDF, w.cfg)
			if err != nil {
				b.Fatal(err)
			}
			card, err := protocol.IssueCard(&req, w.mk, w.cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				u, err := protocol.Unlock(card, "pw", w.cfg)
				if err != nil {
					b.Fatal(err)
				}
				u.Close()
			}
		})
	}
}

func BenchmarkCardLogin(b *testing.B) {
	for _, p := range profiles {
		b.Run(p.String(), func(b *testing.B) {
			s := loginSteps(b, p)
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				l, _, err := s.user.Login(buf[:0], "sensor-7")
				if err != nil {
					b.Fatal(err)
				}
				l.Close()
			}
		})
	}
}

func BenchmarkDeviceStart(b *testing.B) {
	for _, p := range profiles {
		b.Run(p.String(), func(b *testing.B) {
			s := loginSteps(b, p)
			d := s.device(b)
			ctx := context.Background()
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := d.Start(ctx, buf[:0], s.m1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDeviceRespond includes Start, since each DeviceLogin answers
// one m3 only; subtract BenchmarkDeviceStart.
func BenchmarkDeviceRespond(b *testing.B) {
	for _, p := range profiles {
		b.Run(p.String(), func(b *testing.B) {
			s := loginSteps(b, p)
			d := s.device(b)
			ctx := context.Background()
			m2 := make([]byte, 0, 128)
			m4 := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				dl, _, err := d.Start(ctx, m2[:0], s.m1)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := dl.Respond(m4[:0], s.m3); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCardFinish includes Login; subtract BenchmarkCardLogin. Finish
// needs the m4 of its own login, so each iteration runs the device too
// (subtract BenchmarkDeviceRespond as well).
func BenchmarkCardFinish(b *testing.B) {
	for _, p := range profiles {
		b.Run(p.String(), func(b *testing.B) {
			s := loginSteps(b, p)
			d := s.device(b)
			g := s.gateway(b)
			ctx := context.Background()
			// One buffer per message, reused, as a client and a device
			// looping over logins would keep them.
			var bufs [5][128]byte
			b.ReportAllocs()
			for b.Loop() {
				l, m1, err := s.user.Login(bufs[0][:0], "sensor-7")
				if err != nil {
					b.Fatal(err)
				}
				dl, m2, err := d.Start(ctx, bufs[1][:0], m1)
				if err != nil {
					b.Fatal(err)
				}
				m3, _, err := g.Verify(ctx, bufs[2][:0], m2)
				if err != nil {
					b.Fatal(err)
				}
				m4, _, err := dl.Respond(bufs[3][:0], m3)
				if err != nil {
					b.Fatal(err)
				}
				us, m5, err := l.Finish(bufs[4][:0], m4)
				if err != nil {
					b.Fatal(err)
				}
				if p == protocol.Hardened {
					if _, err := dl.Confirm(m5); err != nil {
						b.Fatal(err)
					}
				}
				us.Close()
			}
		})
	}
}

func BenchmarkSessionSealOpen(b *testing.B) {
	for _, p := range profiles {
		b.Run(p.String(), func(b *testing.B) {
			w := newWorld(b, p)
			us, ds := establish(b, w)
			pt := make([]byte, 64)
			rec := make([]byte, 0, 64+protocol.RecordOverhead)
			out := make([]byte, 0, 64)
			b.SetBytes(int64(len(pt)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := us.Seal(rec[:0], pt)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ds.Open(out[:0], r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// establish runs a full login in w and returns the two ends of the session.
func establish(tb testing.TB, w *world) (user, device *protocol.Session) {
	s := runLogin(tb, w)
	return s.us, s.ds
}

// BenchmarkSHA256 is the unit the gateway's floor is counted in: one
// SHA-256 of a short input, as the classic formulas hash.
func BenchmarkSHA256(b *testing.B) {
	var in [72]byte
	rand.Read(in[:])
	var sink [32]byte
	for b.Loop() {
		sink = sha256.Sum256(in[:])
	}
	_ = sink
}

// BenchmarkHMACSHA256 is crypto/hmac computing one M(k, s, x) from scratch,
// for comparison with the gateway's per-verify cost.
func BenchmarkHMACSHA256(b *testing.B) {
	key := make([]byte, 32)
	msg := make([]byte, 48)
	b.ReportAllocs()
	for b.Loop() {
		m := hmac.New(sha256.New, key)
		m.Write(msg)
		m.Sum(nil)
	}
}

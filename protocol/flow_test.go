package protocol_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/protocol/prototest"
)

// fastKDF keeps Argon2id cheap in tests; the parameters are within range.
var fastKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// world is one gateway, one device and one enrolled user, all in memory,
// on a clock the test moves.
type world struct {
	t      testing.TB
	p      protocol.Profile
	now    time.Time
	cfg    protocol.Config
	reg    *prototest.Registry
	gw     *protocol.Gateway
	dev    *protocol.Device
	card   protocol.Card
	devCrd protocol.DeviceCredential
	mk     protocol.MasterKey
}

func newWorld(t testing.TB, p protocol.Profile) *world {
	t.Helper()
	w := &world{t: t, p: p, now: time.UnixMilli(1_760_000_000_000)}
	w.cfg = protocol.Config{Now: func() time.Time { return w.now }, Rand: rand.Reader}
	w.mk = protocol.MasterKey{Version: 1}
	rand.Read(w.mk.Key[:])
	w.reg = prototest.NewRegistry(p, true)
	w.reg.AddKey(w.mk)
	var err error
	w.gw, err = protocol.NewGateway(p, w.reg, &prototest.ReplayCache{}, w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.devCrd, err = protocol.ProvisionDevice(p, "sensor-7", w.mk)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.reg.AddDevice("sensor-7"); err != nil {
		t.Fatal(err)
	}
	w.dev, err = protocol.NewDevice(w.devCrd, &prototest.ReplayCache{}, w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := protocol.NewRegistrationRequest(p, "alice", "correct horse", fastKDF, w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.reg.AddUser("alice"); err != nil {
		t.Fatal(err)
	}
	w.card, err = protocol.IssueCard(&req, w.mk, w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestFullLogin(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			w := newWorld(t, p)
			ctx := context.Background()
			u, err := protocol.Unlock(w.card, "correct horse", w.cfg)
			if err != nil {
				t.Fatal(err)
			}
			login, m1, err := u.Login(nil, "sensor-7")
			if err != nil {
				t.Fatal(err)
			}
			dl, m2, err := w.dev.Start(ctx, nil, m1)
			if err != nil {
				t.Fatal(err)
			}
			m3, _, err := w.gw.Verify(ctx, nil, m2)
			if err != nil {
				t.Fatal(err)
			}
			m4, devSess, err := dl.Respond(nil, m3)
			if err != nil {
				t.Fatal(err)
			}
			userSess, m5, err := login.Finish(nil, m4)
			if err != nil {
				t.Fatal(err)
			}
			if p == protocol.Hardened {
				if devSess != nil {
					t.Fatal("hardened device session established before m5")
				}
				devSess, err = dl.Confirm(m5)
				if err != nil {
					t.Fatal(err)
				}
			} else if m5 != nil {
				t.Fatal("classic produced an m5")
			}
			if userSess.Fingerprint() != devSess.Fingerprint() {
				t.Fatal("keys differ")
			}
			rec, err := userSess.Seal(nil, []byte("sensor.read"))
			if err != nil {
				t.Fatal(err)
			}
			pt, err := devSess.Open(nil, rec)
			if err != nil || !bytes.Equal(pt, []byte("sensor.read")) {
				t.Fatalf("open: %q %v", pt, err)
			}
			if _, err := devSess.Open(nil, rec); err == nil {
				t.Fatal("replayed record accepted")
			}
		})
	}
}

package protocol_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/protocol/prototest"
)

// pwScene is a gateway, a device and a card issued for "old password".
type pwScene struct {
	cfg  protocol.Config
	gw   *protocol.Gateway
	dev  *protocol.Device
	card protocol.Card
}

const (
	pwOld = "old password"
	pwNew = "new pässword" // not ASCII: NFC applies to the new one too
)

func newPWScene(p protocol.Profile) (*pwScene, error) {
	// Each reading of the clock is a millisecond later than the last, so
	// that two classic logins never share T1 (the gateway refuses a second
	// (ID_i, T1) as a replay), however fast they run.
	start, ticks := time.Now(), 0
	var mu sync.Mutex
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		ticks++
		return start.Add(time.Duration(ticks) * time.Millisecond)
	}
	s := &pwScene{cfg: protocol.Config{Now: now, Rand: rand.Reader}}
	mk := protocol.MasterKey{Version: protocol.ClassicKeyVersion}
	if _, err := rand.Read(mk.Key[:]); err != nil {
		return nil, err
	}
	reg := prototest.NewRegistry(p, true)
	reg.AddKey(mk)
	var err error
	if s.gw, err = protocol.NewGateway(p, reg, &prototest.ReplayCache{}, s.cfg); err != nil {
		return nil, err
	}
	cred, err := protocol.ProvisionDevice(p, "sensor-7", mk)
	if err != nil {
		return nil, err
	}
	if err := reg.AddDevice("sensor-7"); err != nil {
		return nil, err
	}
	if s.dev, err = protocol.NewDevice(cred, &prototest.ReplayCache{}, s.cfg); err != nil {
		return nil, err
	}
	req, err := protocol.NewRegistrationRequest(p, "alice", pwOld, exampleKDF, s.cfg)
	if err != nil {
		return nil, err
	}
	defer req.Wipe()
	if err := reg.AddUser("alice"); err != nil {
		return nil, err
	}
	s.card, err = protocol.IssueCard(&req, mk, s.cfg)
	return s, err
}

// login runs one whole login with card c and password pw, and checks that
// both ends hold the same key.
func (s *pwScene) login(c protocol.Card, pw string) error {
	ctx := context.Background()
	u, err := protocol.Unlock(c, pw, s.cfg)
	if err != nil {
		return err
	}
	defer u.Close()
	l, m1, err := u.Login(nil, "sensor-7")
	if err != nil {
		return err
	}
	defer l.Close()
	dl, m2, err := s.dev.Start(ctx, nil, m1)
	if err != nil {
		return err
	}
	defer dl.Close()
	m3, _, err := s.gw.Verify(ctx, nil, m2)
	if err != nil {
		return err
	}
	m4, devSess, err := dl.Respond(nil, m3)
	if err != nil {
		return err
	}
	userSess, m5, err := l.Finish(nil, m4)
	if err != nil {
		return err
	}
	defer userSess.Close()
	if m5 != nil {
		if devSess, err = dl.Confirm(m5); err != nil {
			return err
		}
	}
	defer devSess.Close()
	if userSess.Fingerprint() != devSess.Fingerprint() {
		return errors.New("session keys differ")
	}
	return nil
}

// TestChangePassword: after the change the new password logs in, the old
// one does not, and the card's fixed fields are those of the old card.
func TestChangePassword(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			s, err := newPWScene(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.login(s.card, pwOld); err != nil {
				t.Fatalf("login before the change: %v", err)
			}
			before := s.card
			n, err := protocol.ChangePassword(s.card, pwOld, pwNew, s.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if s.card != before {
				t.Error("ChangePassword modified its argument")
			}
			if n.ID != s.card.ID || n.Profile != p || n.KV != s.card.KV || n.KDF != s.card.KDF {
				t.Errorf("fixed fields changed: %+v -> %+v", s.card, n)
			}
			if n.R == s.card.R || n.Alpha == s.card.Alpha {
				t.Error("r_i or alpha_i kept: the new card shares its salt with the old one")
			}
			if err := s.login(n, pwNew); err != nil {
				t.Fatalf("login with the new password: %v", err)
			}
			// The old password on the new card: refused by the fuzzy
			// verifier (hardened, 255 times in 256) or by the gateway.
			if err := s.login(n, pwOld); !errors.Is(err, protocol.ErrRejected) {
				t.Fatalf("login with the old password on the new card: %v, want a rejection", err)
			}
			// The NFC form of the new password is the same password.
			if err := s.login(n, "new pa\u0308ssword"); err != nil {
				t.Fatalf("login with the decomposed new password: %v", err)
			}
			// The old card still works with the old password: nothing on
			// the gateway changed, which is why the old file must go.
			if err := s.login(s.card, pwOld); err != nil {
				t.Fatalf("old card with the old password: %v", err)
			}
		})
	}
}

// TestChangePasswordWrongOld: under hardened the card's verifier refuses a
// wrong old password (unless it is one of the 1 in 256 that pass; the test
// password is fixed, and the scene's random keys make each run a new draw,
// so it tries until it finds a password the verifier refuses, which under a
// correct implementation takes 1.004 tries on average).
func TestChangePasswordWrongOld(t *testing.T) {
	s, err := newPWScene(protocol.Hardened)
	if err != nil {
		t.Fatal(err)
	}
	refused := false
	for i := range 16 {
		_, err := protocol.ChangePassword(s.card, fmt.Sprintf("wrong %d", i), pwNew, s.cfg)
		if errors.Is(err, protocol.ReasonWrongPassword) {
			refused = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !refused {
		t.Fatal("16 wrong old passwords all passed the fuzzy verifier (odds 2^-128 if it works)")
	}
}

// TestChangePasswordFailures: no randomness, a bad card.
func TestChangePasswordFailures(t *testing.T) {
	s, err := newPWScene(protocol.Hardened)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.cfg
	cfg.Rand = bytes.NewReader(nil)
	if _, err := protocol.ChangePassword(s.card, pwOld, pwNew, cfg); err == nil {
		t.Error("ChangePassword without randomness succeeded")
	}
	cfg.Rand = nil
	if _, err := protocol.ChangePassword(s.card, pwOld, pwNew, cfg); !errors.Is(err, protocol.ErrConfig) {
		t.Errorf("nil Rand: %v, want ErrConfig", err)
	}
	bad := s.card
	bad.KV = 0
	if _, err := protocol.ChangePassword(bad, pwOld, pwNew, s.cfg); err == nil {
		t.Error("ChangePassword of an invalid card succeeded")
	}
}

// A user changes the card's password without the gateway: the new card
// logs in with the new password, and the old password no longer opens it.
func ExampleChangePassword() {
	s, err := newPWScene(protocol.Hardened)
	if err != nil {
		log.Fatal(err)
	}
	newCard, err := protocol.ChangePassword(s.card, "old password", "new pässword", s.cfg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("new password:", s.login(newCard, "new pässword"))
	fmt.Println("old password refused:", errors.Is(s.login(newCard, "old password"), protocol.ErrRejected))
	// Output:
	// new password: <nil>
	// old password refused: true
}
